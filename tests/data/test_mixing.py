"""BS.1770-4 loudness and the LibriMix mixing rules (usgm.data.mixing)."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm as pyln
import pytest
from scipy.signal import lfilter

from usgm.data.mixing import (
    k_weighting_sos,
    loudness,
    match_lengths,
    mix_librimix,
    quantize_mixture,
    sample_gains,
    to_int16,
)


def _speech_like(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """Coloured noise under a syllable-rate on/off envelope, with pauses (gating matters)."""
    n = int(seconds * sr)
    x = lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], rng.standard_normal(n))
    env = np.interp(
        np.arange(n), np.linspace(0, n, int(seconds * 4)), rng.uniform(0, 1, int(seconds * 4)) ** 3
    )
    return 0.05 * x * env


def test_k_weighting_reproduces_the_bs1770_table_at_48k():
    sos = k_weighting_sos(48000)
    # ITU-R BS.1770-4, Tables 1 and 2.
    np.testing.assert_allclose(
        sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0,
                 -1.69065929318241, 0.73248077421585], atol=1e-7,
    )  # fmt: skip
    np.testing.assert_allclose(
        sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-7
    )


@pytest.mark.parametrize("sr", [8000, 16000, 48000])
def test_loudness_matches_pyloudnorm(sr):
    rng = np.random.default_rng(sr)
    for seconds in (2.0, 3.3, 5.0):
        x = _speech_like(rng, seconds, sr)
        ours, ref = loudness(x, sr), pyln.Meter(sr).integrated_loudness(x)
        assert abs(ours - ref) < 0.1, (sr, seconds, ours, ref)


def test_loudness_scales_with_gain_and_handles_edge_cases():
    sr = 8000
    x = _speech_like(np.random.default_rng(0), 3.0, sr)
    assert loudness(2 * x, sr) == pytest.approx(loudness(x, sr) + 20 * math.log10(2), abs=1e-9)
    assert loudness(np.zeros(sr), sr) == -math.inf
    assert loudness(np.zeros(0), sr) == -math.inf
    assert math.isfinite(loudness(x[:1000], sr))  # shorter than one 400 ms block
    q = to_int16(x)
    assert loudness(q, sr) == pytest.approx(loudness(q / 32768.0, sr))
    with pytest.raises(ValueError, match="mono"):
        loudness(np.zeros((2, 100)), sr)


def test_match_lengths_min_and_max():
    a, b, noise = np.ones(10), np.ones(7), np.ones(9)
    (sa, sb), sn = match_lengths([a, b], noise, "min")
    assert len(sa) == len(sb) == len(sn) == 7
    (sa, sb), sn = match_lengths([a, b], noise, "max")
    assert len(sa) == len(sb) == len(sn) == 10
    assert sb[7:].sum() == 0 and sn[9] == 0
    with pytest.raises(ValueError, match="mode"):
        match_lengths([a], None, "mid")


def test_mix_librimix_loudness_ranges_and_peak_rule():
    sr = 8000
    rng = np.random.default_rng(1)
    for _ in range(10):
        srcs = [_speech_like(rng, rng.uniform(2, 4), sr) for _ in range(3)]
        noise = _speech_like(rng, 5.0, sr)
        out, out_noise = mix_librimix(srcs, noise, sr, rng)
        n = min(len(s) for s in srcs)
        assert all(len(s) == n for s in out) and len(out_noise) == n
        assert all(s.dtype == np.float32 for s in out)
        peak = max(np.abs(sum(out) + out_noise).max(), *(np.abs(s).max() for s in out))
        assert peak <= 0.9 + 1e-6
        levels = [loudness(s, sr) for s in out]
        noise_level = loudness(out_noise, sr)
        if peak < 0.9 - 1e-4:  # not rescaled: every signal at its drawn loudness
            assert all(-33 - 1e-3 <= v <= -25 + 1e-3 for v in levels)
            assert -38 - 1e-3 <= noise_level <= -30 + 1e-3


def test_peak_rule_rescales_everything_by_one_factor():
    sr = 8000
    rng = np.random.default_rng(2)
    srcs = [_speech_like(rng, 3.0, sr) for _ in range(2)]
    noise = _speech_like(rng, 3.0, sr)
    # Targets far too loud: the peak rule must bring the highest peak to exactly 0.9 ...
    gains, noise_gain = sample_gains(srcs, noise, sr, np.random.default_rng(0), (-3, -3), (-6, -6))
    scaled = [g * s for g, s in zip(gains, srcs)] + [noise_gain * noise]
    peak = max(np.abs(sum(scaled)).max(), *(np.abs(s).max() for s in scaled))
    assert peak == pytest.approx(0.9)
    # ... and keep the drawn level differences: −3 vs −3 vs −6 LUFS.
    levels = [loudness(s, sr) for s in scaled]
    assert levels[0] - levels[1] == pytest.approx(0.0, abs=1e-6)
    assert levels[0] - levels[2] == pytest.approx(3.0, abs=1e-6)


def test_clean_mixture_and_draw_order():
    sr = 8000
    rng = np.random.default_rng(3)
    srcs = [_speech_like(rng, 3.0, sr) for _ in range(2)]
    out_a, none = mix_librimix(srcs, None, sr, np.random.default_rng(5))
    assert none is None
    out_b, _ = mix_librimix(srcs, None, sr, np.random.default_rng(5))
    np.testing.assert_array_equal(out_a[0], out_b[0])


def test_quantize_mixture_sums_are_exact():
    sr = 8000
    rng = np.random.default_rng(4)
    srcs = [_speech_like(rng, 2.0, sr) for _ in range(3)]
    out, noise = mix_librimix(srcs, _speech_like(rng, 2.0, sr), sr, rng)
    q = quantize_mixture(out, noise)
    assert q.mix_clean.dtype == np.int16
    f = [s.astype(np.float32) / 32768 for s in q.sources]
    np.testing.assert_array_equal(q.mix_clean.astype(np.float32) / 32768, f[0] + f[1] + f[2])
    np.testing.assert_array_equal(
        q.mix_both.astype(np.float32) / 32768,
        q.mix_clean.astype(np.float32) / 32768 + q.noise.astype(np.float32) / 32768,
    )
    with pytest.raises(ValueError, match="int16 range"):
        quantize_mixture([np.full(4, 0.8), np.full(4, 0.8)], None)
