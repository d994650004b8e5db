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

On a GPU nothing waits for the device per window: windows go up through pinned memory, the
speaker alignment, cross-fade and NaN check run on the device, and each batch's finished samples
come back in one asynchronous copy that is written while the next batch is separated.
``--compile`` compiles the network for fixed (batch, window) shapes: a short batch is filled with
zero windows up to the next power of two (so a 60 s file's two windows run as two, not as a full
batch of four), one graph per batch size, compiled on first use; the last, shorter window runs
eagerly.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import math
import os
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import Tensor, nn

from usgm.data.librimix import FLOAT_SUBTYPES, sample_problem, scan_samples
from usgm.evaluation.export import ModelFileError, create_temp, load_model
from usgm.models.compile import allow_symbolic_sizes

DEFAULT_WINDOW_S = 30.0
DEFAULT_OVERLAP_S = 3.0
#: Windows per model call when ``--batch-windows`` is not given (``auto``), for the default 30 s
#: window. Measured on one H200 with the paper-size model (benchmarks/BENCHMARKS.md): more than
#: 2–4 windows per call buy no speed there, and 4 keeps a 1 h file's fp32 peak at 3.6 GiB (8:
#: 7.2 GiB); a CPU is already busy with one window, so batching would only add memory.
DEFAULT_BATCH_WINDOWS = {"cuda": 4, "cpu": 1}
#: GPU budget of ``auto``, in model-rate samples per call: 4 windows of 30 s at 8 kHz, which the
#: paper-size model ran within 3.6 GiB (fp32; peak memory grows with the samples per call). A
#: longer ``--window`` or a faster model rate gets fewer windows per call, never below one.
AUTO_BUDGET_SAMPLES = 4 * 30 * 8000
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

    Computed on the tensors' device without a host sync (the scores of all C! orders are one
    gather and the choice an ``argmax``), so stitching on a GPU does not stall the window
    pipeline. The inner products are in float64 so that near-ties are decided as before; among
    equal scores the first order of ``itertools.permutations`` wins.

    Args:
        prev: previous window's outputs over the overlap, (C, n).
        cur: current window's outputs over the same samples, (C, n).

    Returns:
        ``perm`` (C,) long, on the inputs' device, such that ``cur[perm]`` is in ``prev``'s order
        (minimum ‖prev − cur[perm]‖²).
    """
    n_src = prev.shape[0]
    inner = prev.to(torch.float64) @ cur.to(torch.float64).T  # (C_prev, C_cur)
    perms = _permutation_table(n_src, prev.device)  # (P, C)
    scores = inner[torch.arange(n_src, device=prev.device), perms].sum(dim=-1)  # (P,)
    # A (1,) index gathers on the device; a 0-d one would be read back with .item() (a sync).
    return perms[scores.argmax().view(1)][0]


@functools.lru_cache(maxsize=16)
def _permutation_table(n_src: int, device: torch.device) -> Tensor:
    """All C! speaker orders, (P, C) long, in ``itertools.permutations`` order (built once)."""
    return torch.tensor(list(itertools.permutations(range(n_src))), device=device)


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
        # The ramp is the same for every window: built once, not per window (in float64).
        self._ramps: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def _ramp(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (n, dtype, device)
        if key not in self._ramps:
            w = _fade_in(n, dtype, device)
            self._ramps[key] = (w, 1 - w)
        return self._ramps[key]

    def push(self, est: Tensor, final: bool) -> Tensor:
        """Aligns, cross-fades and returns the finished part of ``est`` (C, n) → (C, m).

        Runs on ``est``'s device without a host sync.
        """
        if self._tail is not None:
            ov = self._tail.shape[-1]
            # Indexing with a tensor copies, so ``est`` is a new tensor: the caller's is untouched.
            est = est[best_permutation(self._tail, est[:, :ov])]
            w, fade_out = self._ramp(ov, est.dtype, est.device)
            est[:, :ov] = self._tail * fade_out + est[:, :ov] * w
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
def compile_forward(
    model: nn.Module, precision: str = "32", dynamic: bool = False
) -> Callable[[Tensor], Tensor]:
    """``torch.compile`` of the network's forward for one precision: (B, T') → est (B, C, T').

    Static shapes (``dynamic=False``): :func:`separate_file` with ``pad_batches`` gives it full
    windows in batches of :func:`padded_batch_size` (the sizes :func:`compiled_batch_sizes`
    lists: a graph each, compiled on first use); :func:`model_separator` sends every other shape
    (the file's last, shorter window) to the eager model instead of recompiling.

    With ``dynamic=True`` the graph takes any (B, T') with symbolic sizes instead: a candidate
    for the file's last, shorter window, whose length differs from file to file (on the CPU, 3–20
    s of 8 kHz audio needed two graphs: one recompilation, at the first length that was not a
    multiple of 8 samples).

    Args:
        model: separator in eval mode, (B, T') → output with ``.est`` (B, C, T').
        precision: ``"32"`` or ``"bf16"`` (the autocast is part of the compiled graph).
        dynamic: compile with symbolic sizes instead of one static shape.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    use_bf16 = precision == "bf16"
    device_type = next(model.parameters()).device.type

    def forward(y: Tensor) -> Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16):
            return model(y).est

    if dynamic:
        allow_symbolic_sizes()
    return torch.compile(forward, dynamic=dynamic)


def padded_batch_size(n_real: int, batch_windows: int) -> int:
    """Batch size a batch of ``n_real`` full windows is padded to (``pad_batches``).

    The next power of two, at most ``batch_windows``: a short file's windows cost at most
    twice their own work (2 windows of a 60 s file run as 2, not as 4), and the compiled
    forward needs at most ``floor(log2(batch_windows)) + 2`` static graphs (3 for 4: 1, 2, 4).
    """
    if not 1 <= n_real <= batch_windows:
        raise ValueError(f"need 1 <= n_real <= batch_windows, got {n_real}, {batch_windows}")
    return min(batch_windows, 1 << (n_real - 1).bit_length())


def compiled_batch_sizes(batch_windows: int) -> list[int]:
    """Every batch size :func:`padded_batch_size` gives (ascending), e.g. [1, 2, 4] for 4."""
    return sorted({padded_batch_size(n, batch_windows) for n in range(1, batch_windows + 1)})


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    # cuDNN's heuristic pick for the encoder's 1→N conv and the decoder's N→1 transposed conv
    # over a window of 10⁵–10⁶ samples is not its fastest; the benchmark runs once per shape,
    # and separate_file sends one shape (B, window) for every call but the last.
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled or old
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def model_separator(
    model: nn.Module,
    model_rate: int,
    input_rate: int,
    device: torch.device | str = "cpu",
    precision: str = "32",
    compiled: Callable[[Tensor], Tensor] | None = None,
    compiled_shapes: Collection[tuple[int, int]] = (),
) -> Callable[[Tensor], Tensor]:
    """Wraps a separator as ``fn(x) -> estimates`` at the input rate.

    ``fn`` takes one window (n,) and returns (C, n), or a batch of windows (B, n) and returns
    (B, C, n), float32 on the model's ``device`` (:func:`separate_file` stitches there and copies
    each batch's finished samples to the host once). It does not wait for the device. Resamples
    to the model's rate and back (in float32, outside autocast, so bf16 only touches the
    network) with ``torchaudio.transforms.Resample``, whose filter kernel is built once here
    rather than for every window as ``torchaudio.functional.resample`` does.

    Args:
        model: separator, (B, T) → output with ``.est`` (B, C, T).
        model_rate: the model's sample rate.
        input_rate: the windows' sample rate.
        device: where the model is.
        precision: ``"32"`` or ``"bf16"`` (autocast of the network to bfloat16).
        compiled: :func:`compile_forward` of ``model`` for ``precision``, used for the inputs of
            ``compiled_shapes``; every other shape runs the eager ``model`` (no recompilation).
        compiled_shapes: (B, n) input shapes (at the input rate) that go to ``compiled``: full
            windows in each of :func:`compiled_batch_sizes`.

    Raises:
        ValueError: an unknown precision.
    """
    import torchaudio.transforms as AT

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    use_bf16 = precision == "bf16"
    on_cuda = device.type == "cuda"
    resample = input_rate != model_rate
    if resample:
        # dtype float32: the kernel AF.resample builds for float32 input, here built once.
        to_model = AT.Resample(input_rate, model_rate, dtype=torch.float32).to(device)
        to_input = AT.Resample(model_rate, input_rate, dtype=torch.float32).to(device)

    @torch.inference_mode()
    def fn(x: Tensor) -> Tensor:
        n = x.shape[-1]
        single = x.dim() == 1
        if single:
            x = x[None]
        if on_cuda and x.device.type == "cpu":
            # Staged through pinned memory so the copy is queued, not waited for.
            y = x.to(torch.float32).pin_memory().to(device, non_blocking=True)
        else:
            y = x.to(device, torch.float32)
        if resample:
            y = to_model(y)
        with _cudnn_benchmark(on_cuda):
            if compiled is not None and tuple(x.shape) in compiled_shapes:
                est = compiled(y)
            else:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    est = model(y).est
        est = est.float()  # (B, C, T')
        if resample:
            est = to_input(est)
        if est.shape[-1] >= n:
            est = est[..., :n]
        else:
            est = torch.nn.functional.pad(est, (0, n - est.shape[-1]))
        return est[0] if single else est

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


class _HostCopy:
    """One group's finished samples (C, m) and per-window finiteness (B,), on their way to the
    host: a non-blocking copy into pinned memory and an event to wait for, when on a GPU."""

    def __init__(self, done: Tensor, finite: Tensor, first_window: int) -> None:
        self.first_window = first_window
        self.event: torch.cuda.Event | None = None
        if done.device.type == "cuda":
            self.done = torch.empty(done.shape, dtype=done.dtype, pin_memory=True)
            self.finite = torch.empty(finite.shape, dtype=finite.dtype, pin_memory=True)
            self.done.copy_(done, non_blocking=True)
            self.finite.copy_(finite, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.done, self.finite = done.cpu(), finite.cpu()

    def wait(self) -> tuple[np.ndarray, np.ndarray]:
        """Blocks until the copy is complete; returns (done (C, m), finite (B,)) as arrays."""
        if self.event is not None:
            self.event.synchronize()
        return self.done.numpy(), self.finite.numpy()


def _write_group(
    copy: _HostCopy, writers: list[sf.SoundFile], path: Path, hop: int, sample_rate: int
) -> None:
    """Checks a group's windows for NaN/Inf, then writes its finished samples.

    Raises:
        SeparationError: naming the first non-finite window's start time.
    """
    done, finite = copy.wait()
    if not finite.all():
        i = copy.first_window + int(np.argmin(finite))
        raise SeparationError(
            f"{path}: the model's output is NaN/Inf for the window starting at "
            f"{i * hop / sample_rate:.2f} s (the input is finite); nothing was written"
        )
    for w, chan in zip(writers, done):
        w.write(np.ascontiguousarray(chan, dtype=np.float32))


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
    pad_batches: bool = False,
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
        pad_batches: fill a short batch of full-length windows with zero windows up to
            :func:`padded_batch_size` (the next power of two), so that every call but the one
            for the last, shorter window has one of a few fixed shapes (what a compiled forward
            needs so as not to recompile); the output is unchanged.

    Returns:
        The written files, s1 … sC.

    ``separate`` may return its outputs on a GPU without waiting for it: the stitching runs
    there, and each batch's finished samples are copied to the host while the next batch is
    being separated, so reading and writing overlap with the device's work.
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
            pending: _HostCopy | None = None
            for group in group_windows(iter_windows(read, window, hop), batch_windows):
                n_real = len(group)
                if batch_windows == 1:
                    ests = separate(group[0][0])[None]  # keeps the (n,) → (C, n) contract
                else:
                    batch = torch.stack([win for win, _ in group])  # (B, n)
                    if pad_batches and batch.shape[-1] == window:
                        # Zero windows fill the batch to a fixed shape; each window is
                        # separated on its own, so they change nothing and are dropped.
                        fill = padded_batch_size(n_real, batch_windows) - n_real
                        batch = torch.nn.functional.pad(batch, (0, 0, 0, fill))
                    ests = separate(batch)[:n_real]  # (B, C, n)
                # Per-window checks and stitching stay on the outputs' device (no host sync);
                # the group's finished samples then go to the host in one asynchronous copy.
                finite = torch.isfinite(ests).flatten(1).all(dim=1)  # (B,)
                done = torch.cat(
                    [stitcher.push(est, final) for est, (_, final) in zip(ests, group)], dim=-1
                )
                copy = _HostCopy(done, finite, i)
                i += n_real
                # The previous group is written while the device separates this one.
                if pending is not None:
                    _write_group(pending, writers, path, hop, sample_rate)
                pending = copy
            if pending is not None:
                _write_group(pending, writers, path, hop, sample_rate)
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


def default_batch_windows(
    device: str | torch.device,
    window_s: float = DEFAULT_WINDOW_S,
    model_rate: int = 8000,
) -> int:
    """Windows per model call for ``--batch-windows auto`` (the default).

    On CUDA: as many windows as fit :data:`AUTO_BUDGET_SAMPLES` at the model's rate, at most
    ``DEFAULT_BATCH_WINDOWS["cuda"]`` (4 for the default 30 s window at 8 kHz; 2 for 60 s
    windows); elsewhere 1.

    Args:
        device: where the model runs.
        window_s: window length, s.
        model_rate: the model's sample rate (the network sees windows at this rate).
    """
    kind = torch.device(device).type
    most = DEFAULT_BATCH_WINDOWS.get(kind, 1)
    if kind != "cuda":
        return most
    per_window = max(1, round(window_s * model_rate))
    return max(1, min(most, AUTO_BUDGET_SAMPLES // per_window))


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
    [--precision 32|bf16] [--compile]``."""
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
        "(default auto: on CUDA 4 windows of 30 s at 8 kHz, fewer for longer windows or a "
        "faster model rate, to stay within about 4 GiB with the paper-size model; 1 on CPU)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="network precision: 32 (float32) or bf16 (bfloat16 autocast; meant for CUDA, "
        "allowed but usually slower on a CPU) (default %(default)s)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network for fixed (windows per call, window) shapes (short "
        "batches padded to a power of two): a one-off compilation (tens of seconds per batch "
        "size) for faster windows, worth it for long inputs; the last, shorter window runs "
        "uncompiled (default off)",
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
    model_rate = int(meta["sample_rate"])
    n_batch = args.batch_windows or default_batch_windows(device, args.window, model_rate)
    # One compiled forward for all files: files of one rate share its shapes.
    compiled = compile_forward(model, args.precision) if args.compile else None
    sizes = compiled_batch_sizes(n_batch)
    failed = 0
    for f in files:
        info = infos[f]
        if info.channels > 1:
            print(f"{prog}: note: {f}: {info.channels} channels downmixed to mono", file=sys.stderr)
        window = max(1, round(args.window * info.samplerate))
        shapes = {(b, window) for b in sizes}
        fn = model_separator(
            model, model_rate, info.samplerate, device, args.precision, compiled, shapes
        )
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
                pad_batches=args.compile,
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
