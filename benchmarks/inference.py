"""Inference speed of ``usgm-separate`` beside the SpeechBrain-built peer, on one synthetic file.

For each ``--seconds`` a synthetic two-talker mixture (harmonic voices with gliding pitch and
syllable envelopes, in noise) is written to a temporary WAV file, block by block. Then, in this
one process and on that same file:

* usgm: :func:`usgm.evaluation.separate.separate_file` with :func:`model_separator` (what
  ``usgm-separate`` runs: streamed reading, windows of ``--window`` s with ``--overlap`` s,
  ``--batch-windows`` windows per call, stitching, streamed writing), for each ``--precision``,
  eager or with ``--compile`` (``usgm-separate --compile``: the forward compiled for the fixed
  (batch, window) shape);
* the peer (``sb_peer.SpeechBrainUnified``, needs the ``bench`` extra): the whole file through the
  network in one call, as SpeechBrain's ``separate_file`` does (read, forward, write); running out
  of memory is a result row (``error``), not a crash.

RTF = processing time / audio duration, from the median of ``--repeats`` timed runs (each in
``times_s``). The timed runs follow a warm-up call on each shape they will send to the network
(full batches, the short last batch, the last shorter window), so one-off costs are not in the
RTF; they are reported on their own as ``warmup_s`` (with ``--compile``: the compilation, once
per precision and batch size and shared by the file lengths, plus the eager shapes). A usgm
row's ``calls_s`` lists, per shape, ``[B, n, seconds]`` of one network call on its own (warm,
synchronized, median of ``--repeats``): what the row's time spends in the network, the rest
being reading, stitching, host copies and writing.
Peak memory is the GPU's ``max_memory_allocated`` during the timed run (weights included), None on
the CPU. A bf16 row carries the SI-SNR of its output against the fp32 output of the same
implementation (``--precision 32 bf16`` both needed; the better speaker pairing is used).

Each measurement is a JSON line appended to ``--out/inference.jsonl`` and a Markdown row to
``--out/inference.md`` (columns: date | device | impl | precision | audio | windows per call |
RTF | peak GiB | bf16 vs fp32 SI-SNR dB).

Examples:
    python benchmarks/inference.py --smoke --out results/            # tiny model, CPU, seconds
    python benchmarks/inference.py --seconds 60 3600 --precision 32 bf16 --out results/   # GPU
    python benchmarks/inference.py --no-peer --compile --seconds 60 3600 --out results/   # GPU
    python benchmarks/inference.py --no-peer --compile --compile-tail --seconds 60 --out results/
    python benchmarks/inference.py --device cpu --threads 2 --seconds 10 --out results/   # CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn

from usgm.evaluation.export import load_model
from usgm.evaluation.separate import (
    DEFAULT_OVERLAP_S,
    DEFAULT_WINDOW_S,
    compile_forward,
    compiled_batch_sizes,
    default_batch_windows,
    group_windows,
    iter_windows,
    model_separator,
    padded_batch_size,
    separate_file,
)
from usgm.models import build_model
from usgm.models.presets import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling report.py
import report

BLOCK_S = 10.0  # the synthetic file is generated and written in blocks of this length


# ----------------------------------------------------------------------------- input
def write_mixture(path: Path, seconds: float, sample_rate: int, seed: int = 0) -> None:
    """Writes a mono float WAV of ``seconds`` of two synthetic talkers in noise, block by block.

    Memory stays at one block (``BLOCK_S``) whatever the length; each talker is a sum of five
    harmonics with a slowly gliding pitch under 4 Hz syllable envelopes.
    """
    rng = np.random.default_rng(seed)
    n_total = round(seconds * sample_rate)
    block = round(BLOCK_S * sample_rate)
    f0 = (120.0, 210.0)
    phase = np.zeros(2)
    with sf.SoundFile(
        str(path), "w", samplerate=sample_rate, channels=1, format="WAV", subtype="FLOAT"
    ) as f:
        for start in range(0, n_total, block):
            n = min(block, n_total - start)
            t = (start + np.arange(n)) / sample_rate
            mix = 0.01 * rng.standard_normal(n)
            for k in range(2):
                pitch = f0[k] * (1 + 0.1 * np.sin(2 * np.pi * (0.2 + 0.1 * k) * t))
                ph = phase[k] + 2 * np.pi * np.cumsum(pitch) / sample_rate
                phase[k] = ph[-1]
                env = np.clip(np.sin(2 * np.pi * (4.0 + 0.7 * k) * t + k), 0, None) ** 2
                mix += 0.1 * env * sum(np.sin(h * ph) / h for h in range(1, 6))
            f.write(mix.astype(np.float32))


def si_snr_db(est: np.ndarray, ref: np.ndarray) -> float:
    """Mean SI-SNR (dB) of ``est`` against ``ref``, both (C, T), under the best speaker pairing.

    Computed in float64 (a 1 h file has 2.9e7 samples per speaker, too many for float32 sums).
    """
    import itertools

    def one(e: np.ndarray, r: np.ndarray) -> float:
        e, r = e - e.mean(), r - r.mean()
        s = (e @ r) / max(float(r @ r), 1e-12) * r
        return 10 * np.log10(max(float(s @ s), 1e-20) / max(float((e - s) @ (e - s)), 1e-20))

    est64, ref64 = est.astype(np.float64), ref.astype(np.float64)
    return max(
        float(np.mean([one(est64[p[c]], ref64[c]) for c in range(len(ref64))]))
        for p in itertools.permutations(range(len(ref64)))
    )


# ----------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _is_oom(err: BaseException) -> bool:
    # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError naming the failed allocation.
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "allocate" in str(err).lower()
    )


def call_shapes(
    n_samples: int, window: int, overlap: int, batch_windows: int, pad: bool
) -> list[tuple[int, int]]:
    """The distinct (B, n) shapes ``separate_file`` sends to the network for a file, in order.

    Args:
        n_samples: file length.
        window: window length, samples.
        overlap: overlap, samples.
        batch_windows: windows per call.
        pad: ``separate_file(pad_batches=...)``: short batches of full windows are padded to
            :func:`padded_batch_size`.
    """
    left = n_samples

    def read(k: int) -> torch.Tensor:
        nonlocal left
        n = min(k, left)
        left -= n
        return torch.empty(n)

    shapes: list[tuple[int, int]] = []
    for group in group_windows(iter_windows(read, window, window - overlap), batch_windows):
        n = group[0][0].shape[-1]
        b = len(group)
        shape = (padded_batch_size(b, batch_windows) if pad and n == window else b, n)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


@dataclass
class Timing:
    """One implementation's measurement of one file at one precision.

    Attributes:
        times: seconds of each timed run.
        peak_gib: peak GPU memory of the timed runs, None on the CPU.
        est: outputs (C, T) of the last run.
        warmup: seconds of the untimed warm-up (with ``--compile``: the compilation included).
        calls: usgm only: per shape the file sends to the network, ``[B, n, seconds]`` for one
            call on its own (warm, synchronized, median of the repeats), so that a row's time
            splits into the network's calls and the rest (reading, stitching, host copies,
            writing).
    """

    times: list[float]
    peak_gib: float | None
    est: np.ndarray
    warmup: float
    calls: list[list[float]] = field(default_factory=list)


def run_usgm(
    model: nn.Module,
    sample_rate: int,
    path: Path,
    out_dir: Path,
    device: torch.device,
    precision: str,
    batch_windows: int,
    window_s: float,
    overlap_s: float,
    compiled: Callable[[torch.Tensor], torch.Tensor] | None = None,
    repeats: int = 1,
    compiled_tail: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Timing:
    """Times ``separate_file`` on ``path`` (with ``compiled``: as ``usgm-separate --compile``).

    With ``compiled_tail`` as well (``--compile-tail``), the shapes that ``usgm-separate
    --compile`` runs eager (the last, shorter window) go to it instead.

    Returns:
        The timed runs (``repeats`` of them), the outputs of the last one read back from
        ``out_dir``, the warm-up (the untimed calls on every shape of the timed runs,
        compilation included) and each shape's call on its own.
    """
    window = round(window_s * sample_rate)
    overlap = round(overlap_s * sample_rate)
    pad = compiled is not None
    static = {(b, window) for b in compiled_batch_sizes(batch_windows)}
    shapes = call_shapes(sf.info(str(path)).frames, window, overlap, batch_windows, pad)
    graph, graph_shapes = compiled, static
    if compiled is not None and compiled_tail is not None:
        static_graph, tail_graph = compiled, compiled_tail

        def graph(y: torch.Tensor) -> torch.Tensor:
            # The file is at the model's rate here, so y has the shape separate_file sent.
            return (static_graph if tuple(y.shape) in static else tail_graph)(y)

        graph_shapes = static | set(shapes)  # every shape goes to a graph
    fn = model_separator(model, sample_rate, sample_rate, device, precision, graph, graph_shapes)
    # Warm-up on each shape of the timed run, so that the CUDA context, cuDNN's benchmark,
    # kernel loading, the allocator and (--compile) the compilation are not counted in the RTF.
    _sync(device)
    t0 = time.perf_counter()
    for shape in shapes:
        fn(torch.zeros(shape))
    _sync(device)
    warmup = time.perf_counter() - t0
    calls = []
    for shape in shapes:
        x = torch.zeros(shape)
        once = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            _sync(device)
            once.append(time.perf_counter() - t0)
        calls.append([*shape, float(np.median(once))])
    _reset_peak(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        written = separate_file(
            path,
            out_dir,
            fn,
            model.n_src,
            sample_rate,
            window_s,
            overlap_s,
            batch_windows=batch_windows,
            pad_batches=pad,
        )
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = _peak_gib(device)
    est = np.stack([sf.read(p, dtype="float32")[0] for p in written])
    for p in written:  # a 1 h run would otherwise leave 230 MB per precision behind
        p.unlink()
    return Timing(times, peak, est, warmup, calls)


def run_peer(
    path: Path,
    out_dir: Path,
    device: torch.device,
    precision: str,
    peer: nn.Module,
    repeats: int = 1,
) -> Timing:
    """Times the peer on the whole file at once (read, forward, write), as SpeechBrain does."""
    use_bf16 = precision == "bf16"

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
            return peer(x.to(device))[0][0].float().cpu()  # (C, T)

    t0 = time.perf_counter()
    forward(torch.zeros(1, min(sf.info(str(path)).frames, 8000)))  # warm-up, ≤ 1 s
    _sync(device)
    warmup = time.perf_counter() - t0
    _reset_peak(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mix, sr = sf.read(str(path), dtype="float32")
        est = forward(torch.from_numpy(mix)[None]).numpy()
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, chan in enumerate(est):
            sf.write(out_dir / f"peer_s{k + 1}.wav", chan, sr, subtype="FLOAT")
        _sync(device)
        times.append(time.perf_counter() - t0)
        for k in range(len(est)):
            (out_dir / f"peer_s{k + 1}.wav").unlink()
    return Timing(times, _peak_gib(device), est, warmup)


# ----------------------------------------------------------------------------- rows
def _versions() -> dict[str, str | None]:
    sb = None
    if importlib.util.find_spec("speechbrain") is not None:
        import speechbrain

        sb = speechbrain.__version__
    return {"torch": torch.__version__, "speechbrain": sb}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def markdown_row(r: dict[str, Any]) -> str:
    """One row: date | device | impl | precision | audio | windows/call | RTF | GiB | SI-SNR.

    A compiled row's precision cell says so, with the compilation + warm-up time (not in RTF).
    """
    rtf = f"{r['rtf']:.4g}" if r.get("rtf") is not None else r.get("error", "–")
    mem = f"{r['peak_mem_gib']:.2f}" if r.get("peak_mem_gib") is not None else "–"
    snr = f"{r['si_snr_vs_fp32_db']:.1f}" if r.get("si_snr_vs_fp32_db") is not None else "–"
    batch = r.get("batch_windows") or "whole file"
    precision = r["precision"]
    if r.get("compile"):
        warm = f", warm-up {r['warmup_s']:.0f} s" if r.get("warmup_s") is not None else ""
        tail = " + tail (dynamic)" if r.get("compile_tail") else ""
        precision = f"{precision} compiled{tail}{warm}"
    return (
        f"| {r['date'][:10]} | {r['device']} | {r['impl']} | {precision} | "
        f"{r['seconds']:g} s | {batch} | {rtf} | {mem} | {snr} |"
    )


def emit(row: dict[str, Any], out: Path | None) -> None:
    """Prints the JSON line and appends it (and its Markdown row) to ``out``."""
    report.emit(row, out, "inference", markdown_row(row))


def measure_file(
    seconds: float,
    model: nn.Module,
    sample_rate: int,
    device: torch.device,
    precisions: list[str],
    batch_windows: int,
    window_s: float,
    overlap_s: float,
    peer_factory: Callable[[], nn.Module] | None,
    out: Path | None,
    base: dict[str, Any],
    compiled: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    repeats: int = 1,
    compiled_tail: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> list[dict[str, Any]]:
    """All rows of one file length: usgm per precision, then the peer per precision.

    Args:
        compiled: with ``--compile``, :func:`compile_forward` of ``model`` per precision, shared
            by the file lengths (one compilation per batch size each; the first file that sends
            a batch size pays for it in its warm-up).
        repeats: timed runs per row; the row's time is their median (all in ``times_s``).
        compiled_tail: with ``--compile-tail``, ``compile_forward(..., dynamic=True)`` per
            precision, for the shapes ``compiled`` does not take.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="usgm-inference-") as tmp:
        path = Path(tmp) / "mix.wav"
        write_mixture(path, seconds, sample_rate)
        impls: list[tuple[str, Callable[[str], Timing]]] = [
            (
                "usgm",
                lambda p: run_usgm(
                    model,
                    sample_rate,
                    path,
                    Path(tmp) / "out",
                    device,
                    p,
                    batch_windows,
                    window_s,
                    overlap_s,
                    compiled[p] if compiled is not None else None,
                    repeats,
                    compiled_tail[p] if compiled_tail is not None else None,
                ),
            )
        ]
        if peer_factory is not None:
            peer = peer_factory().to(device).eval()
            impls.append(
                (
                    "speechbrain",
                    lambda p: run_peer(path, Path(tmp) / "peer", device, p, peer, repeats),
                )
            )
        for impl, run in impls:
            fp32_est = None
            for precision in precisions:
                row = {
                    **base,
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "impl": impl,
                    "precision": precision,
                    "seconds": seconds,
                    "batch_windows": batch_windows if impl == "usgm" else None,
                    "window_s": window_s if impl == "usgm" else None,
                    "overlap_s": overlap_s if impl == "usgm" else None,
                    "compile": impl == "usgm" and compiled is not None,
                    "compile_tail": impl == "usgm" and compiled_tail is not None,
                }
                try:
                    timing = run(precision)
                except Exception as err:
                    if not _is_oom(err):
                        raise
                    row["error"] = f"out of memory: {str(err).strip().splitlines()[0][:200]}"
                    row["peak_mem_gib"] = _peak_gib(device)
                    emit(row, out)
                    rows.append(row)
                    continue
                finally:
                    # Only here, after the traceback (holding the failed call's tensors) is gone,
                    # can the cache be handed back for the next row.
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                elapsed = float(np.median(timing.times))
                row.update(
                    time_s=elapsed,
                    times_s=timing.times,
                    rtf=elapsed / seconds,
                    peak_mem_gib=timing.peak_gib,
                    warmup_s=timing.warmup,
                )
                if timing.calls:
                    row["calls_s"] = timing.calls
                est = timing.est
                del timing
                if precision == "32":
                    fp32_est = est
                elif fp32_est is not None:
                    row["si_snr_vs_fp32_db"] = si_snr_db(est, fp32_est)
                del est
                emit(row, out)
                rows.append(row)
            del fp32_est
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, nargs="+", default=[60.0, 3600.0])
    p.add_argument("--precision", nargs="+", choices=["32", "bf16"], default=["32", "bf16"])
    p.add_argument(
        "--batch-windows",
        type=int,
        default=None,
        help="default: usgm-separate's auto (CUDA: 4 windows of 30 s at 8 kHz, fewer for longer "
        "windows; CPU: 1)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="usgm rows with the forward compiled for the (batch, window) shape, as "
        "usgm-separate --compile; the compilation is reported as warmup_s, not in the RTF",
    )
    p.add_argument(
        "--compile-tail",
        action="store_true",
        help="with --compile: the last, shorter window (which usgm-separate --compile runs "
        "eager) through a second graph compiled with dynamic shapes",
    )
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW_S)
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP_S)
    p.add_argument("--size", choices=["tiny", "paper"], default="paper", help="random weights")
    p.add_argument("--model", help="a usgm checkpoint/export instead of random --size weights")
    p.add_argument("--sample-rate", type=int, default=8000, help="with --size (a --model has one)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-peer", action="store_true", help="skip the SpeechBrain peer")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs per row (after the warm-up); the RTF is from their median",
    )
    p.add_argument("--out", type=Path, help="folder for inference.jsonl and inference.md")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model on the CPU, 2 s file, 0.5 s windows, batches of 2; the peer on 0.25 s "
        "(if installed)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.compile_tail and not args.compile:
        p.error("--compile-tail needs --compile")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.device, args.size, args.model = "cpu", "tiny", None
        args.seconds, args.window, args.overlap, args.batch_windows = [2.0], 0.5, 0.1, 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    if args.model:
        model, meta = load_model(args.model, device=device)
        sample_rate, what = int(meta["sample_rate"]), str(args.model)
    else:
        cfg = tiny_config(n_src=2) if args.size == "tiny" else {"n_src": 2}
        model, sample_rate, what = build_model(cfg).to(device).eval(), args.sample_rate, args.size
    batch_windows = args.batch_windows or default_batch_windows(device, args.window, sample_rate)
    # One compiled forward per precision for all file lengths (they share the window shape).
    compiled = {q: compile_forward(model, q) for q in args.precision} if args.compile else None
    compiled_tail = None
    if args.compile_tail:
        compiled_tail = {q: compile_forward(model, q, dynamic=True) for q in args.precision}
    peer_factory = None
    if not args.no_peer and importlib.util.find_spec("speechbrain") is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from sb_peer import SpeechBrainUnified

        def peer_factory() -> nn.Module:
            torch.manual_seed(0)
            return SpeechBrainUnified(n_src=2)

    elif not args.no_peer:
        print(
            "note: speechbrain not installed (pip install 'usgm[bench]'): no peer rows",
            file=sys.stderr,
        )
    base = {
        "device": _device_name(device),
        **_versions(),
        "model": what,
        "n_params": sum(q.numel() for q in model.parameters()),
        "sample_rate": sample_rate,
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    for seconds in args.seconds:
        measure_file(
            seconds,
            model,
            sample_rate,
            device,
            args.precision,
            batch_windows,
            args.window,
            args.overlap,
            None if args.smoke else peer_factory,  # smoke: the peer gets its own 1 s file
            args.out,
            base,
            compiled,
            args.repeats,
            compiled_tail,
        )
    if args.smoke and peer_factory is not None:
        # The paper-size peer takes ~10 s per audio second on 2 CPU cores: 0.25 s shows it runs.
        measure_file(0.25, model, sample_rate, device, ["32"], batch_windows, 0.1, 0.02,
                     peer_factory, args.out, base)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
