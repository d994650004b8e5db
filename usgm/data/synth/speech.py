"""One speaker utterance: text → eSpeak → trim → warp/shimmer → resample → level, room, EQ, band
→ room tone → codec.

Every realism step is an option of :class:`~usgm.data.synth.options.SynthOptions`; a disabled
step draws nothing from the random generator, so turning options off gives the older output.
"""

from __future__ import annotations

import numpy as np

from usgm.data.synth import dsp
from usgm.data.synth.espeak import Espeak
from usgm.data.synth.options import SynthOptions
from usgm.data.synth.text import make_sentence, words_per_second
from usgm.data.synth.voices import Speaker

_FADE_S = 0.02


def render_utterance(
    tts: Espeak, spk: Speaker, rng: np.random.Generator, sr: int, options: SynthOptions
) -> np.ndarray:
    """Synthesise one utterance of ``spk`` of roughly ``options.utterance_s`` seconds.

    Per utterance the speaking rate (±7 %), eSpeak's pitch (±10 steps around the voice's own) and
    intonation range vary; text length follows the drawn duration. Utterances running more than
    15 % over the longest duration are cut with a short fade.

    Args:
        tts: the process's synthesiser.
        spk: the speaker.
        rng: random generator (the mixture's).
        sr: output sample rate.
        options: generator options.

    Returns:
        (T,) float64 at ``sr``, peak well below 1 (the mixer sets the level).
    """
    target_s = rng.uniform(*options.utterance_s)
    rate = spk.rate * rng.uniform(0.93, 1.07)
    n_words = max(2, round(target_s * words_per_second(rate)))
    text = make_sentence(rng, n_words, spk.text_language)
    raw = tts.synth(
        text,
        spk.voice_name,
        rate=round(rate),
        pitch=int(rng.integers(40, 61)),
        pitch_range=int(rng.integers(35, 80)),
        seed=int(rng.integers(2**31)),
        **({"word_gap": int(rng.integers(0, options.word_gap + 1))} if options.word_gap else {}),
    )
    x = dsp.trim_silence(raw.astype(np.float64) / 32768.0, tts.sample_rate, rng)
    if options.drift or options.jitter:
        x = dsp.time_warp(x, tts.sample_rate, rng, options.drift, options.jitter)
    x = dsp.shimmer(x, tts.sample_rate, rng, options.shimmer_db)
    x = dsp.resample(x, tts.sample_rate, sr)
    limit = int(1.15 * options.utterance_s[1] * sr)
    if len(x) > limit:
        x = x[:limit]
        fade = int(_FADE_S * sr)
        x[-fade:] *= np.linspace(1.0, 0.0, fade)
    return apply_channel(x, rng, sr, options)


def apply_channel(
    x: np.ndarray, rng: np.random.Generator, sr: int, options: SynthOptions
) -> np.ndarray:
    """Level changes, room, EQ, band limit, room tone, rumble and codec of one utterance.

    Args:
        x: (T,) speech at ``sr``.
        rng: the mixture's random generator.
        sr: sample rate, Hz.
        options: generator options (disabled steps draw nothing from ``rng``).

    Returns:
        (T,) float64.
    """
    if options.level_db > 0:
        x = x * dsp.smooth_envelope(rng, len(x), sr, rng.uniform(0, options.level_db), (0.3, 1.5))
    if options.reverb > 0 and rng.random() < options.reverb:
        rir = dsp.synthetic_rir(
            rng, sr, rt60=rng.uniform(*options.reverb_rt60), drr_db=rng.uniform(0, 15)
        )
        x = dsp.reverberate(x, rir)
    x = dsp.random_eq(x, sr, rng, options.eq_db, options.eq_highpass)
    if options.band_limit > 0 and rng.random() < options.band_limit:
        x = dsp.band_limit(x, sr, rng)
    if options.room_tone_db is not None:
        level = dsp.active_rms(x, sr) * 10 ** (rng.uniform(*options.room_tone_db) / 20)
        x = x + level * dsp.coloured_noise(rng, len(x), sr, slope_db=rng.uniform(2, 6))
    if options.rumble > 0 and rng.random() < options.rumble:
        level = dsp.active_rms(x, sr) * 10 ** (rng.uniform(*options.rumble_db) / 20)
        x = x + level * dsp.recording_rumble(rng, len(x), sr)
    if options.codec > 0 and rng.random() < options.codec:
        x = dsp.codec_round_trip(x, sr, options.codecs[int(rng.integers(len(options.codecs)))])
    return x
