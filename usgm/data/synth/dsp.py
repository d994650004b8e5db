"""Small signal-processing helpers of the generator (numpy/scipy, float64 internally).

Resampling uses scipy's polyphase resampler rather than torchaudio so the worker processes never
import torch (about 1–2 s per process here); both are windowed-sinc designs.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.fft import next_fast_len
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling of a (T,) signal from ``sr_in`` to ``sr_out`` Hz."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float64)
    ratio = Fraction(sr_out, sr_in)
    return resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator)


def biquad(kind: str, f0: float, sr: int, q: float = 0.707, gain_db: float = 0.0) -> np.ndarray:
    """One RBJ-cookbook biquad as a (1, 6) sos row.

    Args:
        kind: ``lowshelf``, ``highshelf``, ``peak``, ``highpass`` or ``lowpass``.
        f0: corner/centre frequency in Hz (clamped below Nyquist).
        sr: sample rate.
        q: quality factor (shelf slope for shelves).
        gain_db: gain of shelves and peaks.
    """
    f0 = min(f0, 0.45 * sr)
    w0 = 2 * math.pi * f0 / sr
    cw, sw = math.cos(w0), math.sin(w0)
    alpha = sw / (2 * q)
    a = 10 ** (gain_db / 40)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    elif kind in ("lowshelf", "highshelf"):
        s = 2 * math.sqrt(a) * alpha
        sign = 1 if kind == "lowshelf" else -1
        b = [
            a * ((a + 1) - sign * (a - 1) * cw + s),
            sign * 2 * a * ((a - 1) - sign * (a + 1) * cw),
            a * ((a + 1) - sign * (a - 1) * cw - s),
        ]
        den = [
            (a + 1) + sign * (a - 1) * cw + s,
            -sign * 2 * ((a - 1) + sign * (a + 1) * cw),
            (a + 1) + sign * (a - 1) * cw - s,
        ]
    elif kind == "highpass":
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        den = [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "lowpass":
        b = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2]
        den = [1 + alpha, -2 * cw, 1 - alpha]
    else:
        raise ValueError(f"unknown biquad kind {kind!r}")
    return np.array([[*(v / den[0] for v in b), 1.0, den[1] / den[0], den[2] / den[0]]])


def random_eq(
    x: np.ndarray, sr: int, rng: np.random.Generator, max_db: float, highpass: float = 1.0
) -> np.ndarray:
    """Mild random colouring: a gentle high-pass, low/high shelves and one peak within ±max_db.

    Stands in for different microphones and rooms. ``max_db == 0`` returns ``x`` unchanged.
    ``highpass`` is the probability of the high-pass (drawn only when below 1, so that the
    default draws stay as they were): without it the utterance keeps its lowest frequencies.
    """
    if max_db <= 0:
        return x
    keep_low = highpass < 1 and rng.random() >= highpass
    hp = biquad("highpass", rng.uniform(40, 130), sr, q=0.6)  # drawn either way: same later draws
    sos = np.concatenate(
        [
            *([] if keep_low else [hp]),
            biquad("lowshelf", rng.uniform(150, 500), sr, gain_db=rng.uniform(-max_db, max_db)),
            biquad("highshelf", rng.uniform(1800, 3400), sr, gain_db=rng.uniform(-max_db, max_db)),
            biquad("peak", rng.uniform(400, 2500), sr, q=rng.uniform(0.7, 2.0),
                   gain_db=rng.uniform(-max_db, max_db)),
        ]
    )  # fmt: skip
    return sosfilt(sos, x)


def lowpass(x: np.ndarray, sr: int, cutoff: float, order: int = 4) -> np.ndarray:
    """Butterworth low-pass (cutoff clamped below Nyquist)."""
    sos = butter(order, min(cutoff, 0.45 * sr), btype="low", fs=sr, output="sos")
    return sosfilt(sos, x)


def coloured_noise(rng: np.random.Generator, n: int, sr: int, slope_db: float) -> np.ndarray:
    """Gaussian noise with a power spectrum falling ``slope_db`` dB per octave, unit RMS.

    ``slope_db`` 0 is white, 3 pink, 6 brown. Frequencies below 30 Hz are removed.
    """
    if n == 0:
        return np.zeros(0)
    m = next_fast_len(n, real=True)  # odd or prime lengths make the FFT slow
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1 / sr)
    shape = np.zeros_like(f)
    keep = f >= 30
    shape[keep] = (f[keep] / 1000.0) ** (-slope_db / (20 * math.log10(2)))
    y = np.fft.irfft(spec * shape, m)[:n]
    rms = np.sqrt(np.mean(y**2))
    return y / rms if rms > 0 else y


def recording_rumble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low-frequency artifacts of one recording take, unit RMS.

    Rumble (handling, wind, ventilation: white noise low-passed at 20–100 Hz, which also covers
    slow drift), with probability 0.4 mains hum (50 or 60 Hz and three harmonics), and with
    probability 0.5 offset steps (1–4 constant DC offsets, as where prompts recorded with
    different offsets are joined). Real prompt sets and volunteer recordings carry such
    content, and in a corpus it is part of the reference source.

    Args:
        rng: random generator.
        n: length in samples.
        sr: sample rate, Hz.

    Returns:
        (n,) float64 with unit RMS (zeros for ``n == 0``).
    """
    if n == 0:
        return np.zeros(0)

    def unit(y: np.ndarray) -> np.ndarray:
        return y / (np.sqrt(np.mean(y**2)) + 1e-12)

    sos = butter(2, rng.uniform(20, 100), btype="low", fs=sr, output="sos")
    y = unit(sosfilt(sos, rng.standard_normal(n)))
    if rng.random() < 0.4:
        t = np.arange(n) / sr
        f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
        hum = sum(
            rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 5)
        )
        y = y + rng.uniform(0.5, 2.0) * unit(hum)
    if rng.random() < 0.5:
        cuts = np.sort(rng.integers(1, n, size=int(rng.integers(0, 4))))
        steps = np.repeat(rng.standard_normal(len(cuts) + 1), np.diff([0, *cuts, n]))
        y = y + rng.uniform(0.5, 3.0) * unit(steps)
    return unit(y)


def synthetic_rir(rng: np.random.Generator, sr: int, rt60: float, drr_db: float) -> np.ndarray:
    """A simple room impulse response: direct path plus exponentially decaying noise.

    Args:
        rng: random generator.
        sr: sample rate.
        rt60: reverberation time (s), the −60 dB decay time of the tail.
        drr_db: direct-to-reverberant energy ratio in dB (negative: distant talker).

    Returns:
        (L,) response with L = 1.2·rt60 seconds, direct path at index 0.
    """
    n = max(int(1.2 * rt60 * sr), 2)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) → −60 dB at rt60
    # Early reflections build up over the first few ms rather than starting at full level.
    tail *= 1.0 - np.exp(-t / 0.004)
    tail[0] = 0.0
    e_tail = np.sum(tail**2)
    tail *= math.sqrt(10 ** (-drr_db / 10) / e_tail) if e_tail > 0 else 0.0
    tail[0] = 1.0
    return tail


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room response, keeping the input length."""
    return fftconvolve(x, rir)[: len(x)]


def trim_silence(
    x: np.ndarray,
    sr: int,
    rng: np.random.Generator,
    pad_s: tuple[float, float] = (0.05, 0.25),
    threshold: float = 0.01,
) -> np.ndarray:
    """Cut leading/trailing near-silence (below ``threshold`` × peak), keeping a random margin of
    ``pad_s`` seconds each side."""
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak == 0:
        return x
    active = np.flatnonzero(np.abs(x) > threshold * peak)
    start = max(active[0] - int(rng.uniform(*pad_s) * sr), 0)
    stop = min(active[-1] + 1 + int(rng.uniform(*pad_s) * sr), len(x))
    return x[start:stop]


def active_rms(x: np.ndarray, sr: int, frame_s: float = 0.02) -> float:
    """RMS over the frames within 40 dB of the loudest frame (speech level without the pauses)."""
    frame = max(int(frame_s * sr), 1)
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    power = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    loud = power[power > power.max() * 1e-4]
    return float(np.sqrt(loud.mean())) if loud.size else 0.0


def smooth_envelope(
    rng: np.random.Generator, n: int, sr: int, depth_db: float, period_s: tuple[float, float]
) -> np.ndarray:
    """Slowly varying gain (linear) with excursions of ±``depth_db`` every ``period_s`` seconds."""
    if n == 0 or depth_db <= 0:
        return np.ones(n)
    knots = [0.0]
    while knots[-1] < n / sr:
        knots.append(knots[-1] + rng.uniform(*period_s))
    values = rng.uniform(-depth_db, depth_db, len(knots))
    t = np.arange(n) / sr
    # Raised-cosine interpolation between knots: smooth, no overshoot.
    idx = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 2)
    k0, k1 = np.asarray(knots)[idx], np.asarray(knots)[idx + 1]
    frac = (t - k0) / (k1 - k0)
    w = 0.5 - 0.5 * np.cos(math.pi * frac)
    db = values[idx] * (1 - w) + values[idx + 1] * w
    return 10 ** (db / 20)


def _random_curve(rng: np.random.Generator, n: int, sr: int, period_s: tuple[float, float]):
    """Values in [-1, 1] at random knots every ``period_s`` seconds, linearly joined; (n,)."""
    if n == 0:
        return np.zeros(0)
    knots = [0.0]
    while knots[-1] < n / sr:
        knots.append(knots[-1] + rng.uniform(*period_s))
    return np.interp(np.arange(n) / sr, knots, rng.uniform(-1, 1, len(knots)))


def time_warp(
    x: np.ndarray, sr: int, rng: np.random.Generator, drift: float, jitter: float
) -> np.ndarray:
    """Read ``x`` at a randomly varying rate: slow drift (prosody) plus fast jitter (F0 jitter).

    A rate of 1 + d shifts pitch and formants by d and shortens the signal by the same factor, as
    a varispeed tape would; over an utterance the slow part wanders like intonation/tempo and the
    fast part (knots every 4–9 ms, about one pitch period) perturbs consecutive periods.

    Args:
        x: (T,) signal.
        sr: its sample rate.
        rng: random generator.
        drift: largest relative rate deviation of the slow part (0.05 = ±5 %).
        jitter: largest relative rate deviation of the fast part.

    Returns:
        (T',) warped signal, T' ≈ T.
    """
    if (drift <= 0 and jitter <= 0) or len(x) < 2:
        return x
    n = len(x)
    rate = np.ones(n)
    if drift > 0:
        rate += drift * _random_curve(rng, n, sr, (0.25, 0.9))
    if jitter > 0:
        rate += jitter * _random_curve(rng, n, sr, (0.004, 0.009))
    pos = np.concatenate([[0.0], np.cumsum(rate)])
    pos = pos[pos <= n - 1]
    return np.interp(pos, np.arange(n), x)


def shimmer(x: np.ndarray, sr: int, rng: np.random.Generator, depth_db: float) -> np.ndarray:
    """Fast random amplitude perturbation (±``depth_db`` dB, knots every 4–9 ms)."""
    if depth_db <= 0 or len(x) == 0:
        return x
    return x * 10 ** (depth_db * _random_curve(rng, len(x), sr, (0.004, 0.009)) / 20)


def band_limit(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A random telephone/microphone band: high-pass 80–350 Hz and low-pass 2.6–3.9 kHz."""
    sos = np.concatenate(
        [
            butter(2, rng.uniform(80, 350), btype="high", fs=sr, output="sos"),
            butter(int(rng.integers(2, 7)), min(rng.uniform(2600, 3900), 0.45 * sr),
                   btype="low", fs=sr, output="sos"),
        ]
    )  # fmt: skip
    return sosfilt(sos, x)


def long_term_spectrum_db(x: np.ndarray, n_fft: int = 256) -> np.ndarray:
    """Level-free long-term power spectrum: the mean over Hann frames (hop ``n_fft // 2``) in
    dB, minus its mean over frequency, so that only the colour remains.

    Args:
        x: Signal, shape (T,).

    Returns:
        Shape (n_fft // 2 + 1,), dB around 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    hop = n_fft // 2
    idx = np.arange(n_fft)[None] + hop * np.arange((len(x) - n_fft) // hop + 1)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=-1)) ** 2
    db = 10 * np.log10(power.mean(0) + 1e-12)
    return db - db.mean()


def spectrum_distance(a_db: np.ndarray, b_db: np.ndarray) -> float:
    """RMS difference (dB) of two :func:`long_term_spectrum_db` results, shape (F,) each."""
    return float(np.sqrt(np.mean((a_db - b_db) ** 2)))


def colour_distance(a: np.ndarray, b: np.ndarray, n_fft: int = 256) -> float:
    """RMS difference of two signals' :func:`long_term_spectrum_db` (dB; level-blind)."""
    return spectrum_distance(long_term_spectrum_db(a, n_fft), long_term_spectrum_db(b, n_fft))


def speech_shaped_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Gaussian noise with a long-term speech-like spectrum (peak 300–700 Hz, −6…−12 dB/oct
    above); unit RMS."""
    if n == 0:
        return np.zeros(0)
    m = next_fast_len(n, real=True)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1 / sr)
    peak = rng.uniform(300, 700)
    slope = rng.uniform(6, 12) / (20 * math.log10(2))
    shape = np.where(f < peak, np.maximum(f, 60) / peak, (np.maximum(f, 1) / peak) ** (-slope))
    y = np.fft.irfft(spec * shape, m)[:n]
    rms = np.sqrt(np.mean(y**2))
    return y / rms if rms > 0 else y


def machinery_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Hum and whine of machines: harmonics of a 40–400 Hz fundamental with slow wobble, plus
    filtered broadband noise (fans); unit RMS."""
    if n == 0:
        return np.zeros(0)
    f0 = rng.uniform(40, 400)
    wobble = 1 + 0.01 * _random_curve(rng, n, sr, (0.5, 2.0))
    phase = 2 * np.pi * np.cumsum(f0 * wobble) / sr
    y = np.zeros(n)
    for k in range(1, int(rng.integers(3, 12))):
        if k * f0 >= 0.45 * sr:
            break
        y += (
            rng.uniform(0.1, 1.0)
            / k ** rng.uniform(0.3, 1.2)
            * np.sin(k * phase + rng.uniform(0, 6))
        )
    y /= np.sqrt(np.mean(y**2)) + 1e-12
    fan = sosfilt(biquad("peak", rng.uniform(200, 2500), sr, q=rng.uniform(0.5, 3),
                         gain_db=rng.uniform(6, 18)), coloured_noise(rng, n, sr, rng.uniform(0, 4)))  # fmt: skip
    y = y + fan * 10 ** (rng.uniform(-10, 6) / 20)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def traffic_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Road-like noise: brown/pink rumble with slow swells of passing vehicles; unit RMS."""
    if n == 0:
        return np.zeros(0)
    y = coloured_noise(rng, n, sr, slope_db=rng.uniform(3, 7))
    y = y * smooth_envelope(rng, n, sr, depth_db=rng.uniform(3, 12), period_s=(1.0, 4.0))
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


# Lossy speech codecs libsndfile can write and read back, as (container, subtype, kwargs): GSM 6.10
# (GSM full rate, also the format of some real prompt sets), G.721 ADPCM, µ-law, IMA ADPCM, and
# low-bitrate MP3 and Opus (internet audio).
CODECS = {
    "gsm": ("WAV", "GSM610", {}),
    "g721": ("WAV", "G721_32", {}),
    "ulaw": ("WAV", "ULAW", {}),
    "adpcm": ("WAV", "IMA_ADPCM", {}),
    "mp3": ("MP3", "MPEG_LAYER_III", {"compression_level": 0.9}),
    "opus": ("OGG", "OPUS", {"compression_level": 0.9}),
}
CODEC_RATE = 8000


def codec_round_trip(x: np.ndarray, sr: int, codec: str) -> np.ndarray:
    """``x`` encoded with a lossy speech codec at 8 kHz and decoded again (telephone chain).

    Args:
        x: (T,) signal at ``sr``.
        sr: sample rate, Hz (other rates go through 8 kHz and back, as in telephony).
        codec: a key of :data:`CODECS`.

    Returns:
        (T,) float64 at ``sr``; codec delay is kept (it is part of the recording), the length
        is cut or zero-padded back to T.
    """
    import io

    import soundfile as sf

    fmt, subtype, kwargs = CODECS[codec]
    y = resample(x, sr, CODEC_RATE)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak == 0.0:
        return np.zeros(len(x))
    buf = io.BytesIO()
    sf.write(buf, y * (0.9 / peak), CODEC_RATE, format=fmt, subtype=subtype, **kwargs)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float64")
    z = resample(z * (peak / 0.9), CODEC_RATE, sr)
    out = np.zeros(len(x))
    out[: min(len(x), len(z))] = z[: len(x)]
    return out
