"""Synthetic café-like noise: distant babble, coloured background, slow level changes, transients.

No WHAM!-like recording is available offline, so the noise is built from parts:

- **babble**: a bank of distant synthetic talkers (their own speaker pool), each reverberant
  (synthetic room response, low direct-to-reverberant ratio) and low-passed; one noise sums 3–7
  of them at random offsets and levels;
- **background**: coloured Gaussian noise (white … brown) for ventilation/traffic rumble;
- **level changes**: a slow random gain envelope on the babble;
- **transients**: short decaying clinks and knocks (cutlery, cups, doors).

The bank is synthesised once per shard (:func:`make_babble_bank`) and reused by its mixtures.
"""

from __future__ import annotations

import numpy as np

from usgm.data.synth import dsp
from usgm.data.synth.espeak import Espeak
from usgm.data.synth.options import SynthOptions
from usgm.data.synth.text import make_sentence, words_per_second
from usgm.data.synth.voices import Speaker


def make_babble_bank(
    tts: Espeak,
    talkers: list[Speaker],
    rng: np.random.Generator,
    sr: int,
    options: SynthOptions,
) -> list[np.ndarray]:
    """Synthesise ``options.babble_bank`` distant-talker recordings of 6–10 s.

    Args:
        tts: the process's synthesiser.
        talkers: the babble speakers for this split.
        rng: random generator (the shard's).
        sr: output sample rate.
        options: generator options.

    Returns:
        List of (T_k,) float64 arrays at ``sr``, each with unit RMS.
    """
    bank = []
    for _ in range(options.babble_bank):
        spk = talkers[rng.integers(len(talkers))]
        n_words = max(3, round(rng.uniform(6.0, 10.0) * words_per_second(spk.rate)))
        text = make_sentence(rng, n_words, spk.text_language)
        raw = tts.synth(text, spk.voice_name, rate=spk.rate, seed=int(rng.integers(2**31)))
        x = dsp.resample(raw.astype(np.float64) / 32768.0, tts.sample_rate, sr)
        rir = dsp.synthetic_rir(rng, sr, rt60=rng.uniform(0.5, 1.2), drr_db=rng.uniform(-9, 0))
        x = dsp.reverberate(x, rir)
        x = dsp.lowpass(x, sr, rng.uniform(1200, 3000), order=2)
        rms = np.sqrt(np.mean(x**2))
        if rms > 0:
            bank.append(x / rms)
    if not bank:
        raise RuntimeError("eSpeak produced no audio for the babble bank")
    return bank


def babble(
    rng: np.random.Generator, n: int, bank: list[np.ndarray], talkers: tuple[int, int]
) -> np.ndarray:
    """Sum of ``talkers`` (min, max) bank entries, each looped and shifted at random; unit RMS."""
    k = int(rng.integers(talkers[0], talkers[1] + 1))
    out = np.zeros(n)
    for idx in rng.choice(len(bank), size=min(k, len(bank)), replace=False):
        x = bank[idx]
        reps = int(np.ceil((n + len(x)) / len(x)))
        start = int(rng.integers(len(x)))
        out += np.tile(x, reps)[start : start + n] * 10 ** (rng.uniform(-4, 4) / 20)
    rms = np.sqrt(np.mean(out**2)) if n else 0.0
    return out / rms if rms > 0 else out


def transients(rng: np.random.Generator, n: int, sr: int, per_second: float) -> np.ndarray:
    """Clinks (decaying resonances) and knocks (short low bursts) at random times; peak ≈ 1."""
    out = np.zeros(n)
    count = rng.poisson(per_second * n / sr)
    for _ in range(count):
        dur = int(rng.uniform(0.03, 0.25) * sr)
        t = np.arange(dur) / sr
        if rng.random() < 0.6:  # clink: one or two inharmonic partials
            f = rng.uniform(900, 0.45 * sr)
            ev = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * f * rng.uniform(1.3, 2.7) * t)
            ev *= np.exp(-t / rng.uniform(0.01, 0.06))
        else:  # knock: a low-passed noise burst
            ev = dsp.lowpass(rng.standard_normal(dur), sr, rng.uniform(300, 1200), order=2)
            ev *= np.exp(-t / rng.uniform(0.005, 0.03))
        peak = np.max(np.abs(ev))
        if peak == 0:
            continue
        start = int(rng.integers(max(n - 1, 1)))
        seg = ev[: n - start] / peak * rng.uniform(0.3, 1.0)
        out[start : start + len(seg)] += seg
    return out


def mixture_noise(
    rng: np.random.Generator,
    n: int,
    sr: int,
    bank: list[np.ndarray],
    options: SynthOptions,
) -> np.ndarray:
    """The noise of one mixture: a kind drawn from ``options.noise_kinds``.

    With the single kind ``cafe`` (the default) this is exactly :func:`cafe_noise` (no extra
    draw). Other kinds: ``speech_shaped`` (long-term speech spectrum), ``machinery`` (hum and
    fans), ``traffic`` (rumble with swells); each gets some café babble and transients on top at
    a random lower level, as real places are rarely one pure sound.
    """
    kinds = options.noise_kinds
    kind = kinds[0] if len(kinds) == 1 else kinds[int(rng.integers(len(kinds)))]
    if kind == "cafe":
        return cafe_noise(rng, n, sr, bank, options)
    make = {
        "speech_shaped": dsp.speech_shaped_noise,
        "machinery": dsp.machinery_noise,
        "traffic": dsp.traffic_noise,
    }[kind]
    x = make(rng, n, sr)
    x += babble(rng, n, bank, options.babble_talkers) * 10 ** (rng.uniform(-25, -3) / 20)
    x += transients(rng, n, sr, per_second=rng.uniform(0, 0.4)) * rng.uniform(0.5, 2.0)
    return x


def cafe_noise(
    rng: np.random.Generator,
    n: int,
    sr: int,
    bank: list[np.ndarray],
    options: SynthOptions,
) -> np.ndarray:
    """One café-like noise of ``n`` samples (overall level arbitrary; the mixer sets it).

    Args:
        rng: random generator (the mixture's).
        n: samples.
        sr: sample rate.
        bank: distant talkers from :func:`make_babble_bank`.
        options: generator options.

    Returns:
        (n,) float64.
    """
    x = babble(rng, n, bank, options.babble_talkers)
    x *= dsp.smooth_envelope(rng, n, sr, depth_db=rng.uniform(0, 6), period_s=(0.6, 2.0))
    # Background relative to the babble: from barely there to dominant (a noisy street café).
    bg = dsp.coloured_noise(rng, n, sr, slope_db=rng.uniform(0, 6))
    x += bg * 10 ** (rng.uniform(-20, 3) / 20)
    x += transients(rng, n, sr, per_second=rng.uniform(0, 0.8)) * rng.uniform(1.0, 4.0)
    return x
