"""LibriMix loudness and mixing rules (numpy), shared by the generator and dynamic mixing.

Loudness is ITU-R BS.1770-4 integrated loudness for one channel: K-weighting (a high-shelf "head"
filter and an RLB high-pass, both derived for any sample rate), mean square over 400 ms blocks with
75 % overlap, an absolute gate at −70 LUFS and a relative gate 10 LU below the ungated-by-relative
mean.

The mixing rules follow LibriMix (Cosentino et al., 2020, ``create_librimix_from_metadata.py``):
every speaker at a loudness drawn from U(−33, −25) LUFS, the noise from U(−38, −30) LUFS, and every
signal rescaled by one common factor when the mixture or any signal would peak above 0.9. One
deliberate difference: signals are first cut (``min``) or zero-padded (``max``) to the common
length and the loudness is measured on *that*, so the files written carry the drawn loudness.

Public API::

    loudness(x: np.ndarray, sr: int) -> float                       # LUFS, -inf for silence
    k_weighting_sos(sr: int) -> np.ndarray                          # (2, 6) second-order sections
    match_lengths(sources, noise=None, mode="min") -> tuple[list[np.ndarray], np.ndarray | None]
    sample_gains(sources, noise, sr, rng, speech_lufs=(-33, -25), noise_lufs=(-38, -30),
                 max_peak=0.9) -> tuple[list[float], float | None]
    mix_librimix(sources, noise, sr, rng, speech_lufs=(-33, -25), noise_lufs=(-38, -30),
                 max_peak=0.9, mode="min") -> tuple[list[np.ndarray], np.ndarray | None]
    quantize_mixture(sources, noise) -> QuantizedMixture           # int16, exact sums

``mix_librimix`` returns the scaled, length-matched sources (each (T,) float32) and noise ((T,) or
None); the mixtures are their sums. Random draws, in order: one target per source, then one for the
noise (when given), each ``rng.uniform(lo, hi)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.signal import sosfilt

Mode = Literal["min", "max"]

BLOCK_S = 0.4
STEP_S = 0.1  # 75 % overlap
ABS_GATE_LUFS = -70.0
REL_GATE_LU = -10.0
_LUFS_OFFSET = -0.691  # BS.1770 eq. 2


def k_weighting_sos(sr: int) -> np.ndarray:
    """K-weighting filter of BS.1770-4 as two biquads for any sample rate.

    The recommendation tabulates coefficients at 48 kHz only. They are the bilinear transforms of a
    high shelf (f0 ≈ 1681.97 Hz, gain ≈ +4 dB, Q ≈ 0.7072) and a second-order high-pass
    (f0 ≈ 38.14 Hz, Q ≈ 0.5003); evaluating the same analog prototypes at ``sr`` reproduces the
    table at 48 kHz to ~1e-8 and gives the equivalent filter elsewhere (as libebur128 does).

    Args:
        sr: sample rate in Hz.

    Returns:
        (2, 6) array of second-order sections ``[b0, b1, b2, a0, a1, a2]`` for ``scipy.signal.sosfilt``.
    """
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    # Stage 1: pre-filter (shelf modelling the head's acoustic effect).
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sr)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    ]
    # Stage 2: RLB weighting (high-pass). The tabulated numerator [1, -2, 1] gives a passband gain
    # of a0 (+0.04 dB at 48 kHz, but +0.26 dB at 8 kHz if carried over as is): scale it so every
    # rate keeps the 48 kHz passband gain.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sr)
    a0 = 1.0 + k / q + k * k
    k48 = math.tan(math.pi * f0 / 48000.0)
    g = (1.0 + k48 / q + k48 * k48) / a0
    highpass = [g, -2.0 * g, g, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def loudness(x: np.ndarray, sr: int) -> float:
    """Integrated loudness of a mono signal (ITU-R BS.1770-4), in LUFS.

    Args:
        x: (T,) samples in [-1, 1] (any float or int16 dtype; int16 is scaled by 1/32768).
        sr: sample rate in Hz.

    Returns:
        Loudness in LUFS; ``-inf`` when every block is below the absolute gate (silence). A signal
        shorter than one 400 ms block is measured as a single block (BS.1770 leaves it undefined).
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"loudness expects a mono (T,) signal, got shape {x.shape}")
    if x.dtype == np.int16:
        x = x.astype(np.float64) / 32768.0
    if x.size == 0:
        return -math.inf
    y = sosfilt(k_weighting_sos(sr), x.astype(np.float64))
    block, step = round(BLOCK_S * sr), round(STEP_S * sr)
    csum = np.concatenate(([0.0], np.cumsum(y * y)))
    if y.size < block:
        z = np.array([csum[-1] / y.size])
    else:
        starts = np.arange(0, y.size - block + 1, step)
        z = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        lj = _LUFS_OFFSET + 10.0 * np.log10(z)
    gated = z[lj > ABS_GATE_LUFS]
    if gated.size == 0:
        return -math.inf
    rel_gate = _LUFS_OFFSET + 10.0 * math.log10(gated.mean()) + REL_GATE_LU
    gated = z[(lj > ABS_GATE_LUFS) & (lj > rel_gate)]
    return float(_LUFS_OFFSET + 10.0 * math.log10(gated.mean()))


def match_lengths(
    sources: Sequence[np.ndarray], noise: np.ndarray | None = None, mode: Mode = "min"
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Cut (``min``) or zero-pad (``max``) sources and noise to one length, as LibriMix does.

    The length is the shortest (``min``) or longest (``max``) *source*; the noise is cut to it or
    zero-padded when shorter (callers should supply noise at least that long).

    Args:
        sources: C arrays of shape (T_i,).
        noise: (T_n,) or None.
        mode: ``"min"`` or ``"max"``.

    Returns:
        (sources, noise), each (T,).
    """
    if not sources:
        raise ValueError("need at least one source")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    lengths = [len(s) for s in sources]
    n = min(lengths) if mode == "min" else max(lengths)

    def fit(x: np.ndarray) -> np.ndarray:
        return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))

    return [fit(np.asarray(s)) for s in sources], None if noise is None else fit(np.asarray(noise))


def _gain_to(x: np.ndarray, sr: int, target_lufs: float) -> float:
    lufs = loudness(x, sr)
    # A silent signal cannot be normalised: leave it as it is.
    return 1.0 if math.isinf(lufs) else 10.0 ** ((target_lufs - lufs) / 20.0)


def sample_gains(
    sources: Sequence[np.ndarray],
    noise: np.ndarray | None,
    sr: int,
    rng: np.random.Generator,
    speech_lufs: tuple[float, float] = (-33.0, -25.0),
    noise_lufs: tuple[float, float] = (-38.0, -30.0),
    max_peak: float = 0.9,
) -> tuple[list[float], float | None]:
    """Draw LibriMix gains for length-matched signals (see :func:`match_lengths`).

    Each source gets a gain that brings it to a loudness drawn from ``speech_lufs``, the noise to
    one drawn from ``noise_lufs``. If the scaled mixture (Σ sources + noise) or any scaled signal
    would peak above ``max_peak``, every gain is multiplied by one factor so the highest peak is
    exactly ``max_peak`` (relative levels kept).

    Args:
        sources: C arrays (T,), all of the same length.
        noise: (T,) or None.
        sr: sample rate in Hz.
        rng: the random generator (draws: C source targets, then the noise target).
        speech_lufs: (low, high) LUFS range for each speaker.
        noise_lufs: (low, high) LUFS range for the noise.
        max_peak: largest allowed absolute sample value.

    Returns:
        (source gains, noise gain or None) as linear factors.
    """
    n = len(sources[0])
    if any(len(s) != n for s in sources) or (noise is not None and len(noise) != n):
        raise ValueError("sample_gains needs signals of one length: call match_lengths first")
    gains = [_gain_to(s, sr, rng.uniform(*speech_lufs)) for s in sources]
    noise_gain = None if noise is None else _gain_to(noise, sr, rng.uniform(*noise_lufs))
    signals = [g * np.asarray(s, dtype=np.float64) for g, s in zip(gains, sources)]
    if noise is not None:
        signals.append(noise_gain * np.asarray(noise, dtype=np.float64))
    peak = max(
        float(np.max(np.abs(np.sum(signals, axis=0)))) if n else 0.0,
        *(float(np.max(np.abs(s))) if n else 0.0 for s in signals),
    )
    if peak > max_peak:
        factor = max_peak / peak
        gains = [g * factor for g in gains]
        noise_gain = None if noise_gain is None else noise_gain * factor
    return gains, noise_gain


def mix_librimix(
    sources: Sequence[np.ndarray],
    noise: np.ndarray | None,
    sr: int,
    rng: np.random.Generator,
    speech_lufs: tuple[float, float] = (-33.0, -25.0),
    noise_lufs: tuple[float, float] = (-38.0, -30.0),
    max_peak: float = 0.9,
    mode: Mode = "min",
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Length-match and scale sources and noise by the LibriMix rules.

    Args:
        sources: C arrays (T_i,), float.
        noise: (T_n,) float or None (clean mixtures).
        sr: sample rate in Hz.
        rng: random generator (see :func:`sample_gains` for the draw order).
        speech_lufs: loudness range for each speaker (LUFS).
        noise_lufs: loudness range for the noise (LUFS).
        max_peak: peak limit applied jointly to every signal and the mixture.
        mode: ``"min"`` cuts to the shortest source, ``"max"`` zero-pads to the longest.

    Returns:
        (scaled sources, each (T,) float32; scaled noise (T,) float32 or None). The mixtures are
        ``sum(sources)`` (clean) and ``sum(sources) + noise`` (noisy).
    """
    srcs, nz = match_lengths(sources, noise, mode)
    gains, noise_gain = sample_gains(srcs, nz, sr, rng, speech_lufs, noise_lufs, max_peak)
    out = [(g * s.astype(np.float64)).astype(np.float32) for g, s in zip(gains, srcs)]
    out_noise = None if nz is None else (noise_gain * nz.astype(np.float64)).astype(np.float32)
    return out, out_noise


def to_int16(x: np.ndarray) -> np.ndarray:
    """Quantise float samples in [-1, 1) to int16 (round to nearest, clip), scale 32768."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(
        np.int16
    )


@dataclass(frozen=True)
class QuantizedMixture:
    """int16 signals whose sums are exact (what the generator writes as PCM_16).

    Attributes:
        sources: C arrays (T,) int16.
        noise: (T,) int16 or None.
        mix_clean: (T,) int16, exactly Σ sources.
        mix_both: (T,) int16, exactly mix_clean + noise (None without noise).
    """

    sources: list[np.ndarray]
    noise: np.ndarray | None
    mix_clean: np.ndarray
    mix_both: np.ndarray | None


def quantize_mixture(sources: Sequence[np.ndarray], noise: np.ndarray | None) -> QuantizedMixture:
    """Quantise scaled signals to int16 *first*, then sum in the integer domain.

    So ``mix_clean == Σ s_i`` and ``mix_both == mix_clean + noise`` hold exactly on the PCM_16 files
    (read back as int/32768 floats). The 0.9 peak rule keeps the sums inside int16.

    Args:
        sources: C arrays (T,) float.
        noise: (T,) float or None.

    Returns:
        A :class:`QuantizedMixture`.

    Raises:
        ValueError: when a sum would leave the int16 range (signals not peak-limited).
    """
    q = [to_int16(s) for s in sources]
    qn = None if noise is None else to_int16(noise)
    clean = np.sum([s.astype(np.int32) for s in q], axis=0)
    both = None if qn is None else clean + qn.astype(np.int32)
    for name, m in (("mix_clean", clean), ("mix_both", both)):
        if m is not None and m.size and (m.max() > 32767 or m.min() < -32768):
            raise ValueError(f"{name} leaves the int16 range: apply the peak rule first")
    return QuantizedMixture(
        sources=q,
        noise=qn,
        mix_clean=clean.astype(np.int16),
        mix_both=None if both is None else both.astype(np.int16),
    )
