"""Separation of recordings of any length, rate and channel count (``usgm-separate``).

Long inputs are cut into overlapping windows. Each window is separated on its own; its outputs are
put in the speaker order of the previous window by the permutation that best matches the two over
the shared overlap (least squares, i.e. the largest summed inner product), then cross-faded with a
raised-cosine ramp. Input is read and output written block by block with soundfile, so memory is
bounded by the window length whatever the file length.

Batching and precision: ``--batch-windows N`` runs N consecutive windows of equal length through
the model in one call (memory then grows to N windows, still independent of the file length);
the stitching is unchanged, so for fp32 the output equals the one-window-at-a-time output up to
float rounding. ``--precision bf16`` runs the network under ``torch.autocast`` in bfloat16
(resampling, stitching and the outputs stay float32). It is allowed on the CPU as well, where
PyTorch's autocast supports bfloat16: it gives the same numbers as on a GPU up to rounding, which
is what the CPU tests check, but it is usually slower than fp32 there unless the CPU has native
bfloat16 (AMX/AVX512-BF16); it is meant for CUDA.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import Tensor, nn

from usgm.data.librimix import FLOAT_SUBTYPES, sample_problem, scan_samples
from usgm.evaluation.export import ModelFileError, create_temp, load_model

DEFAULT_WINDOW_S = 30.0
DEFAULT_OVERLAP_S = 3.0
#: Windows per model call when ``--batch-windows`` is not given. A GPU gains from filling its
#: cores with several windows (one 30 s window of the paper-size model used 0.95 GiB on an H200;
#: the value 8 is provisional until benchmarks/inference.py has measured speed and memory there);
#: a CPU is already busy with one window, so batching would only add memory.
DEFAULT_BATCH_WINDOWS = {"cuda": 8, "cpu": 1}
PRECISIONS = ("32", "bf16")
# Largest (input rate / g) × (model rate / g), g = gcd, that resampling accepts: torchaudio builds
# a polyphase kernel of about that many taps, so 8001 → 8000 Hz (64 M) takes seconds per window
# and 96001 Hz gigabytes, while 44056 → 8000 Hz (5.5 M) takes a fraction of a second.
MAX_RESAMPLE_PHASES = 10_000_000


class AudioInputError(ValueError):
    """An input recording that cannot be separated; the message names the file."""


class SeparationError(RuntimeError):
    """The model produced NaN/Inf for a (finite) input; the message names the file and time."""


# ----------------------------------------------------------------------------- stitching
def best_permutation(prev: Tensor, cur: Tensor) -> Tensor:
    """Speaker order of ``cur`` that best continues ``prev`` over a shared region.

    Args:
        prev: previous window's outputs over the overlap, (C, n).
        cur: current window's outputs over the same samples, (C, n).

    Returns:
        ``perm`` (C,) long such that ``cur[perm]`` is in ``prev``'s order (minimum ‖prev − cur[perm]‖²).
    """
    n_src = prev.shape[0]
    prev64, cur64 = prev.to(torch.float64), cur.to(torch.float64)
    inner = prev64 @ cur64.T  # (C_prev, C_cur)
    best, best_score = None, -math.inf
    for p in itertools.permutations(range(n_src)):
        score = float(sum(inner[c, p[c]] for c in range(n_src)))
        if score > best_score:
            best, best_score = p, score
    return torch.tensor(best, dtype=torch.long)


def _fade_in(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / n
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(dtype)  # 0 → 1; fade_out = 1 − fade_in


class OverlapStitcher:
    """Joins window outputs that overlap by ``overlap`` samples into one continuous stream.

    Feed each window's separated outputs (C, n) in order with :meth:`push`; it returns the samples
    that are final (everything but the overlap kept for the next window).

    Args:
        overlap: samples shared by consecutive windows (> 0).
    """

    def __init__(self, overlap: int) -> None:
        if overlap <= 0:
            raise ValueError(f"overlap must be > 0 samples, got {overlap}")
        self.overlap = overlap
        self._tail: Tensor | None = None

    def push(self, est: Tensor, final: bool) -> Tensor:
        """Aligns, cross-fades and returns the finished part of ``est`` (C, n) → (C, m)."""
        if self._tail is not None:
            ov = self._tail.shape[-1]
            est = est[best_permutation(self._tail, est[:, :ov])].clone()
            w = _fade_in(ov, est.dtype, est.device)
            est[:, :ov] = self._tail * (1 - w) + est[:, :ov] * w
        if final:
            self._tail = None
            return est
        if est.shape[-1] <= self.overlap:
            raise ValueError("a non-final window must be longer than the overlap")
        self._tail = est[:, -self.overlap :]
        return est[:, : -self.overlap]


def iter_windows(
    read: Callable[[int], Tensor], window: int, hop: int
) -> Iterator[tuple[Tensor, bool]]:
    """Yields overlapping windows (n,) from a block reader, each with a ``final`` flag.

    Consecutive windows share ``window − hop`` samples; a new window is only started after a full
    one, so every window after the first is at least as long as the overlap.

    Args:
        read: ``read(k)`` returns the next ≤ k samples (fewer only at the end), shape (≤k,).
        window: window length in samples.
        hop: window step in samples (< window).
    """
    buf = read(window)
    while True:
        more = read(hop) if buf.shape[-1] == window else buf[:0]
        final = more.shape[-1] == 0
        yield buf, final
        if final:
            return
        buf = torch.cat([buf[hop:], more])


def group_windows(
    windows: Iterator[tuple[Tensor, bool]], size: int
) -> Iterator[list[tuple[Tensor, bool]]]:
    """Groups consecutive windows into lists of at most ``size`` windows of one length.

    A window of another length (the last, shorter one) starts a new group, so every group can be
    stacked into one (B, n) tensor without padding (padding would change a non-causal model's
    output). Only ``size`` windows are held at a time.

    Args:
        windows: ``(window (n,), final)`` pairs, e.g. from :func:`iter_windows`.
        size: most windows per group (≥ 1).
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    group: list[tuple[Tensor, bool]] = []
    for item in windows:
        if group and (len(group) == size or group[0][0].shape[-1] != item[0].shape[-1]):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def separate_in_windows(
    separate: Callable[[Tensor], Tensor], mix: Tensor, window: int, overlap: int
) -> Tensor:
    """In-memory windowed separation (e.g. evaluation of utterances too long for one pass).

    Args:
        separate: window (n,) → estimates (C, n).
        mix: mixture (T,).
        window: window length in samples; ``mix`` no longer than it is separated in one call.
        overlap: overlap in samples (< window).

    Returns:
        Estimates (C, T), speaker order consistent along the whole signal.
    """
    if mix.shape[-1] <= window:
        return separate(mix)
    pos = 0

    def read(k: int) -> Tensor:
        nonlocal pos
        out = mix[pos : pos + k]
        pos += out.shape[-1]
        return out

    stitcher = OverlapStitcher(overlap)
    parts = [
        stitcher.push(separate(w), final)
        for w, final in iter_windows(read, window, window - overlap)
    ]
    return torch.cat(parts, dim=-1)


# ----------------------------------------------------------------------------- model wrapper
def model_separator(
    model: nn.Module,
    model_rate: int,
    input_rate: int,
    device: torch.device | str = "cpu",
    precision: str = "32",
) -> Callable[[Tensor], Tensor]:
    """Wraps a separator as ``fn(x) -> estimates`` at the input rate.

    ``fn`` takes one window (n,) and returns (C, n), or a batch of windows (B, n) and returns
    (B, C, n). Resamples to the model's rate and back with ``torchaudio.functional.resample``
    (in float32, outside autocast, so bf16 only touches the network).

    Args:
        model: separator, (B, T) → output with ``.est`` (B, C, T).
        model_rate: the model's sample rate.
        input_rate: the windows' sample rate.
        device: where the model is.
        precision: ``"32"`` or ``"bf16"`` (autocast of the network to bfloat16).

    Raises:
        ValueError: an unknown precision.
    """
    import torchaudio.functional as AF

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    use_bf16 = precision == "bf16"

    @torch.inference_mode()
    def fn(x: Tensor) -> Tensor:
        n = x.shape[-1]
        single = x.dim() == 1
        y = x.to(device, torch.float32)
        if single:
            y = y[None]
        if input_rate != model_rate:
            y = AF.resample(y, input_rate, model_rate)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            est = model(y).est
        est = est.float()  # (B, C, T')
        if input_rate != model_rate:
            est = AF.resample(est, model_rate, input_rate)
        if est.shape[-1] >= n:
            est = est[..., :n]
        else:
            est = torch.nn.functional.pad(est, (0, n - est.shape[-1]))
        return est[0].cpu() if single else est.cpu()

    return fn


# ----------------------------------------------------------------------------- files
def _audio_suffixes() -> set[str]:
    sufs = {"." + f.lower() for f in sf.available_formats()}
    return sufs | {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".caf"}


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files and folders (their audio files, not recursive, sorted) → list of files.

    Raises:
        AudioInputError: a path does not exist, a folder holds no audio, or two inputs would
            write the same output names.
    """
    files: list[Path] = []
    sufs = _audio_suffixes()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in sufs)
            if not found:
                raise AudioInputError(f"{p}: folder contains no audio files")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise AudioInputError(f"{p}: no such file or folder")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems and stems[f.stem].resolve() != f.resolve():
            raise AudioInputError(f"{f} and {stems[f.stem]} would write the same output names")
        stems[f.stem] = f
    return list(dict.fromkeys(files))


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def check_audio(path: Path) -> Any:
    """Opens the header of ``path`` and, for float audio, checks every sample.

    Float files (subtype FLOAT/DOUBLE) can hold NaN/Inf, which the network would turn into
    all-NaN outputs: they are read in full here, before any separation starts, so a bad input
    stops the run before anything is written (:func:`usgm.data.librimix.sample_problem`).

    Raises:
        AudioInputError: unreadable/unknown format, no samples, or a NaN/Inf/out-of-range sample.
    """
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioInputError(f"{path}: cannot read audio ({_first_line(err)})") from err
    if info.frames <= 0:
        raise AudioInputError(f"{path}: empty audio file (0 samples)")
    if info.subtype in FLOAT_SUBTYPES:
        try:
            problem = scan_samples(path, info.channels)
        except Exception as err:  # a header that lies about the data that follows
            raise AudioInputError(f"{path}: cannot read audio ({_first_line(err)})") from err
        if problem:
            raise AudioInputError(f"{path}: {problem}")
    return info


def check_rate(path: Path, rate: int, model_rate: int) -> None:
    """Refuses an input rate whose resampling to the model's rate would be impractically costly.

    Raises:
        AudioInputError: naming the rate and a common rate to convert to.
    """
    g = math.gcd(rate, model_rate)
    if (rate // g) * (model_rate // g) > MAX_RESAMPLE_PHASES:
        raise AudioInputError(
            f"{path}: sample rate {rate} Hz has no practical resampling to the model's "
            f"{model_rate} Hz (ratio {rate // g}/{model_rate // g}); convert the file to a "
            f"common rate such as {model_rate} or 48000 Hz first"
        )


def separate_file(
    path: Path,
    out_dir: Path,
    separate: Callable[[Tensor], Tensor],
    n_src: int,
    sample_rate: int,
    window_s: float = DEFAULT_WINDOW_S,
    overlap_s: float = DEFAULT_OVERLAP_S,
    subtype: str = "FLOAT",
    batch_windows: int = 1,
) -> list[Path]:
    """Streams ``path`` through ``separate`` and writes ``out_dir/<stem>_s{k}.wav``.

    Outputs are written to temporary names in ``out_dir`` and renamed when complete; on any error
    they are deleted, so no half-written file is left behind.

    Args:
        path: input audio (any soundfile format, rate and channel count).
        out_dir: output folder (created).
        separate: window (n,) at the file's rate → (C, n), e.g. :func:`model_separator`; with
            ``batch_windows`` > 1 it is called with a batch (B, n) instead and must return
            (B, C, n), as :func:`model_separator`'s function does.
        n_src: number of outputs C.
        sample_rate: the file's rate (outputs keep it).
        window_s: window length in seconds.
        overlap_s: overlap of consecutive windows in seconds.
        subtype: soundfile subtype of the outputs (FLOAT keeps any level without clipping).
        batch_windows: windows per call of ``separate`` (≥ 1); memory holds this many windows.

    Returns:
        The written files, s1 … sC.
    """
    if batch_windows < 1:
        raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
    window = max(1, round(window_s * sample_rate))
    overlap = max(1, round(overlap_s * sample_rate))
    if overlap >= window:
        # With 0 < overlap_s < window_s (checked by main) only a very low rate gets here.
        raise AudioInputError(
            f"{path}: at {sample_rate} Hz, --window {window_s} s and --overlap {overlap_s} s are "
            f"{window} and {overlap} samples: the overlap must be the shorter; use a longer "
            "--window"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    finals = [out_dir / f"{path.stem}_s{k + 1}.wav" for k in range(n_src)]
    temps: list[Path] = []
    writers: list[sf.SoundFile] = []
    try:
        for f in finals:
            # Not mkstemp: its mode 0600 would end up on the outputs; these follow the umask.
            temps.append(create_temp(out_dir, prefix=f".{f.stem}.", suffix=".partial.wav"))
            writers.append(
                sf.SoundFile(
                    str(temps[-1]),
                    "w",
                    samplerate=sample_rate,
                    channels=1,
                    format="WAV",
                    subtype=subtype,
                )
            )
        with sf.SoundFile(str(path)) as src:
            pos = 0
            src_is_float = src.subtype in FLOAT_SUBTYPES

            def read(k: int) -> Tensor:
                nonlocal pos
                block = src.read(k, dtype="float32", always_2d=True)
                # check_audio scans float files up front; this also covers callers that skip it.
                # Integer PCM cannot hold NaN/Inf or out-of-range values: nothing to scan.
                problem = sample_problem(block, pos) if src_is_float else None
                if problem:
                    raise AudioInputError(f"{path}: {problem}")
                pos += len(block)
                return torch.from_numpy(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0])

            stitcher = OverlapStitcher(overlap)
            hop = window - overlap
            i = 0  # index of the next window, for the error message
            for group in group_windows(iter_windows(read, window, hop), batch_windows):
                if batch_windows == 1:
                    ests = separate(group[0][0])[None]  # keeps the (n,) → (C, n) contract
                else:
                    ests = separate(torch.stack([win for win, _ in group]))  # (B, C, n)
                for est, (_, final) in zip(ests, group, strict=True):
                    if not bool(torch.isfinite(est).all()):
                        raise SeparationError(
                            f"{path}: the model's output is NaN/Inf for the window starting at "
                            f"{i * hop / sample_rate:.2f} s (the input is finite); nothing was "
                            "written"
                        )
                    i += 1
                    done = stitcher.push(est, final).numpy()
                    for w, chan in zip(writers, done):
                        w.write(np.ascontiguousarray(chan, dtype=np.float32))
        for w in writers:
            w.close()
        for tmp, f in zip(temps, finals):
            os.replace(tmp, f)
    except BaseException:
        for w in writers:
            if not w.closed:
                w.close()
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return finals


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_batch_windows(device: str | torch.device) -> int:
    """Windows per model call when ``--batch-windows`` is ``auto``: 8 on CUDA, 1 elsewhere."""
    return DEFAULT_BATCH_WINDOWS.get(torch.device(device).type, 1)


def _batch_arg(text: str) -> int | None:
    """``--batch-windows``: a positive integer, or ``auto`` (None)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``usgm-separate MODEL INPUT [INPUT ...] --out DIR [--device D] [--batch-windows N]
    [--precision 32|bf16]``."""
    parser = argparse.ArgumentParser(
        prog="usgm-separate",
        description="Separate speakers in recordings of any length, rate and channel count. "
        "Writes DIR/<name>_s1.wav … _sN.wav at each input's sample rate.",
    )
    parser.add_argument(
        "model", metavar="MODEL", help="training checkpoint (.ckpt) or usgm-export model file"
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="audio file or folder of audio files"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_S,
        help="window length, s (default %(default)s)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=DEFAULT_OVERLAP_S,
        help="window overlap, s (default %(default)s)",
    )
    parser.add_argument(
        "--subtype",
        default="FLOAT",
        help="output WAV subtype, e.g. FLOAT or PCM_16 (default %(default)s)",
    )
    parser.add_argument(
        "--batch-windows",
        type=_batch_arg,
        default=None,
        metavar="N",
        help="windows per model call; memory grows with N, never with the file length "
        "(default auto: 8 on CUDA, 1 on CPU)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="network precision: 32 (float32) or bf16 (bfloat16 autocast; meant for CUDA, "
        "allowed but usually slower on a CPU) (default %(default)s)",
    )
    args = parser.parse_args(argv)
    prog = "usgm-separate"
    if not args.window > 0 or not 0 < args.overlap < args.window:
        print(
            f"{prog}: error: need 0 < --overlap < --window (got {args.overlap}, {args.window})",
            file=sys.stderr,
        )
        return 2
    if not sf.check_format("WAV", args.subtype.upper()):
        print(f"{prog}: error: --subtype {args.subtype!r} is not a WAV subtype", file=sys.stderr)
        return 2
    device = args.device or _default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"{prog}: error: --device {device} requested but CUDA is not available", file=sys.stderr
        )
        return 2
    try:
        files = collect_inputs(args.inputs)
        infos = {f: check_audio(f) for f in files}  # every input is checked before any work
        model, meta = load_model(args.model, device=device)
        for f in files:
            check_rate(f, infos[f].samplerate, int(meta["sample_rate"]))
    except (AudioInputError, ModelFileError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    n_batch = args.batch_windows or default_batch_windows(device)
    failed = 0
    for f in files:
        info = infos[f]
        if info.channels > 1:
            print(f"{prog}: note: {f}: {info.channels} channels downmixed to mono", file=sys.stderr)
        fn = model_separator(model, meta["sample_rate"], info.samplerate, device, args.precision)
        try:
            written = separate_file(
                f,
                out_dir,
                fn,
                meta["n_src"],
                info.samplerate,
                args.window,
                args.overlap,
                args.subtype.upper(),
                n_batch,
            )
        except (AudioInputError, SeparationError) as err:  # these name the file themselves
            print(f"{prog}: error: {_first_line(err)}", file=sys.stderr)
            failed += 1
            continue
        except (RuntimeError, ValueError, OSError) as err:
            print(f"{prog}: error: {f}: {_first_line(err)}", file=sys.stderr)
            failed += 1
            continue
        print(f"{f} -> {', '.join(str(w) for w in written)}")
    return 1 if failed else 0
