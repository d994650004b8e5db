"""Realism options of the generator: DSP building blocks, option checks, noise kinds."""

from __future__ import annotations

import numpy as np
import pytest

from usgm.data.errors import DataError
from usgm.data.synth import SynthOptions, dsp
from usgm.data.synth.noise import cafe_noise, mixture_noise
from usgm.data.synth.voices import estimate_f0

SR = 8000


def _tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))


def test_time_warp_moves_pitch_and_keeps_length_close() -> None:
    x = _tone(150.0, 2.0)
    rng = np.random.default_rng(0)
    y = dsp.time_warp(x, SR, rng, drift=0.08, jitter=0.02)
    assert abs(len(y) - len(x)) < 0.1 * len(x) and np.all(np.isfinite(y))
    assert not np.allclose(y[: len(x) // 2], x[: len(x) // 2])
    assert 120 < estimate_f0(y, SR) < 180
    assert dsp.time_warp(x, SR, rng, 0.0, 0.0) is x


def test_shimmer_and_band_limit() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SR)
    y = dsp.shimmer(x, SR, rng, 2.0)
    ratio = np.abs(y / x)
    assert ratio.min() >= 10 ** (-2.01 / 20) and ratio.max() <= 10 ** (2.01 / 20)
    assert dsp.shimmer(x, SR, rng, 0.0) is x
    z = dsp.band_limit(x, SR, rng)
    spec_x, spec_z = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(z))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    hi = f > 3950
    assert spec_z[hi].mean() < 0.5 * spec_x[hi].mean()


@pytest.mark.parametrize("make", [dsp.speech_shaped_noise, dsp.machinery_noise, dsp.traffic_noise])
def test_noise_kinds_have_unit_rms(make) -> None:
    y = make(np.random.default_rng(2), 3 * SR, SR)
    assert y.shape == (3 * SR,) and np.all(np.isfinite(y))
    assert np.sqrt(np.mean(y**2)) == pytest.approx(1.0, rel=1e-3)
    assert make(np.random.default_rng(2), 0, SR).shape == (0,)


def test_mixture_noise_draws_its_kind() -> None:
    bank = [np.random.default_rng(k).standard_normal(2 * SR) for k in range(3)]
    only_cafe = SynthOptions(noise_kinds=("cafe",))
    a = mixture_noise(np.random.default_rng(5), SR, SR, bank, only_cafe)
    b = cafe_noise(np.random.default_rng(5), SR, SR, bank, only_cafe)
    np.testing.assert_array_equal(a, b)  # one kind: no extra draw, the plain café noise
    opts = SynthOptions(noise_kinds=("machinery", "traffic"))
    for seed in range(4):
        y = mixture_noise(np.random.default_rng(seed), SR, SR, bank, opts)
        assert y.shape == (SR,) and np.all(np.isfinite(y)) and np.abs(y).max() > 0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"noise_kinds": ("rain",)}, "noise_kinds"),
        ({"noise_kinds": ()}, "noise_kinds"),
        ({"drift": 0.7}, "drift"),
        ({"jitter": -0.1}, "jitter"),
        ({"level_db": 30}, "level_db"),
        ({"reverb": 1.5}, "reverb"),
        ({"reverb_rt60": (0.5, 0.2)}, "reverb_rt60"),
        ({"word_gap": -1}, "word_gap"),
        ({"breath_fraction": 2}, "breath_fraction"),
        ({"codec": 1.5}, "codec"),
        ({"codecs": ("gsm", "amr")}, "codecs"),
        ({"codecs": ()}, "codecs"),
        ({"rumble": 1.2}, "rumble"),
        ({"rumble_db": (-5.0, -20.0)}, "rumble_db"),
        ({"eq_highpass": -0.5}, "eq_highpass"),
    ],
)
def test_bad_realism_options_name_the_key(kwargs, key) -> None:
    with pytest.raises(DataError, match=key):
        SynthOptions.from_kwargs(**kwargs)


def test_options_round_trip_through_json_lists() -> None:
    opts = SynthOptions()
    again = SynthOptions.from_kwargs(**{k: list(v) if isinstance(v, tuple) else v
                                        for k, v in opts.to_dict().items()})  # fmt: skip
    assert again == opts


def _speechlike(sr: int, seconds: float = 1.0) -> np.ndarray:
    """A vowel-like tone: harmonics of 140 Hz shaped by two formants, with a low noise floor."""
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros_like(t)
    for h in range(1, int(3800 / 140)):
        f = 140 * h
        gain = sum(1 / (1 + ((f - fc) / bw) ** 2) for fc, bw in ((700, 150), (1200, 200)))
        x += (gain + 0.02) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    x += 0.01 * np.std(x) * rng.standard_normal(len(t))
    return 0.3 * x / np.max(np.abs(x)) * np.sin(np.pi * 3 * t) ** 2


@pytest.mark.parametrize("codec", sorted(dsp.CODECS))
def test_codec_round_trip_keeps_length_level_and_content(codec: str) -> None:
    x = _speechlike(8000)
    y = dsp.codec_round_trip(x, 8000, codec)
    assert y.shape == x.shape
    lag = int(np.argmax([np.dot(x[: len(x) - k], y[k:]) for k in range(400)]))
    # Same signal (allowing codec delay), about the same level, but not bit-exact: artifacts.
    corr = np.corrcoef(x[: len(x) - lag], y[lag:])[0, 1]
    assert corr > 0.9
    assert 0.7 < np.std(y) / np.std(x) < 1.3
    err = y[lag:] - x[: len(x) - lag] * np.dot(x[: len(x) - lag], y[lag:]) / np.dot(x, x)
    assert np.std(err) > 1e-4


def test_codec_at_16k_goes_through_the_8k_telephone_band() -> None:
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal(16000)
    y = dsp.codec_round_trip(x, 16000, "ulaw")
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[f > 4500].sum() < 1e-3 * spec[f < 3500].sum()
    assert np.all(dsp.codec_round_trip(np.zeros(100), 8000, "gsm") == 0)


def test_channel_codec_option_changes_only_when_enabled() -> None:
    from usgm.data.synth.speech import apply_channel

    x = _speechlike(8000)
    plain = SynthOptions(codec=0.0)
    coded = SynthOptions(codec=1.0, codecs=("gsm",))
    a = apply_channel(x, np.random.default_rng(1), 8000, plain)
    b = apply_channel(x, np.random.default_rng(1), 8000, coded)
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-4)
    # The codec comes last in the chain: the rest draws the same random numbers.
    assert np.corrcoef(a, b)[0, 1] > 0.9


def _low_share(x: np.ndarray, below_hz: float) -> float:
    spec = np.abs(np.fft.rfft(x - x.mean())) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[f < below_hz].sum() / spec.sum())


def test_recording_rumble_is_low_frequency_with_unit_rms() -> None:
    shares, hum = [], 0
    for seed in range(20):
        y = dsp.recording_rumble(np.random.default_rng(seed), 4 * SR, SR)
        assert y.shape == (4 * SR,) and np.sqrt(np.mean(y**2)) == pytest.approx(1.0, rel=1e-6)
        shares.append(_low_share(y, 250))
        spec = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(len(y), 1 / SR)
        mains = sum(spec[np.abs(f - m) < 1.5].sum() for m in (50, 60, 100, 120))
        hum += mains > 0.2 * spec.sum()
    assert min(shares) > 0.97  # everything under 250 Hz: harmonics of the hum included
    assert 2 <= hum <= 16  # hum on some takes only
    assert dsp.recording_rumble(np.random.default_rng(0), 0, SR).shape == (0,)


def test_eq_highpass_probability_keeps_the_lowest_frequencies() -> None:
    x = np.random.default_rng(4).standard_normal(4 * SR)
    # Shelves and peak at ±0.01 dB: what is left is the high-pass or its absence.
    lows = [_low_share(dsp.random_eq(x, SR, np.random.default_rng(s), 0.01, 0.0), 30)
            for s in range(8)]  # fmt: skip
    cut = [_low_share(dsp.random_eq(x, SR, np.random.default_rng(s), 0.01), 30) for s in range(8)]
    assert min(lows) > 0.9 * _low_share(x, 30) and min(lows) > 4 * max(cut)
    # Probability 1 (the default) draws exactly what the EQ drew before the option existed.
    a = dsp.random_eq(x, SR, np.random.default_rng(9), 6.0)
    b = dsp.random_eq(x, SR, np.random.default_rng(9), 6.0, 1.0)
    np.testing.assert_array_equal(a, b)


def test_channel_rumble_adds_low_frequency_content_at_its_level() -> None:
    from usgm.data.synth.speech import apply_channel

    x = _speechlike(SR, 3.0)
    quiet = dict(level_db=0.0, reverb=0.0, eq_db=0.0, band_limit=0.0, room_tone_db=None, codec=0.0)
    plain = apply_channel(x, np.random.default_rng(2), SR, SynthOptions(**quiet, rumble=0.0))
    np.testing.assert_array_equal(plain, x)
    opts = SynthOptions(**quiet, rumble=1.0, rumble_db=(-6.0, -6.0))
    y = apply_channel(x, np.random.default_rng(2), SR, opts)
    added = y - x
    ratio_db = 20 * np.log10(np.sqrt(np.mean(added**2)) / dsp.active_rms(x, SR))
    assert ratio_db == pytest.approx(-6.0, abs=0.01)
    assert _low_share(added, 250) > 0.97 and _low_share(x, 100) < 0.01


def test_colour_distance_is_level_blind_and_sees_colour() -> None:
    from usgm.data.synth.dsp import colour_distance, long_term_spectrum_db, lowpass

    rng = np.random.default_rng(0)
    white = rng.standard_normal(8000)
    other = rng.standard_normal(8000)
    dull = lowpass(rng.standard_normal(8000), 8000, 800.0)
    spec = long_term_spectrum_db(white)
    assert spec.shape == (129,) and abs(spec.mean()) < 1e-9
    assert colour_distance(white, 0.01 * white) < 1e-6  # level does not count
    assert colour_distance(white, other) < 1.5  # one colour: estimation spread only
    assert colour_distance(white, dull) > 10
    assert colour_distance(white, dull) == pytest.approx(colour_distance(dull, white))
