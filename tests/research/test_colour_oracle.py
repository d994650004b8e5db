"""research/realism/colour_oracle.py: the stationary Wiener filter of the sources' long-term spectra."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.research.conftest import np_si_snr

BENCH = Path(__file__).resolve().parents[2] / "research" / "realism"
SR = 8000


@pytest.fixture(scope="module")
def co():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("colour_oracle", BENCH / "colour_oracle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _band_noise(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return 0.1 * x / x.std()


def test_sources_in_disjoint_bands_are_separated_almost_perfectly(co) -> None:
    rng = np.random.default_rng(0)
    n = 3 * SR
    srcs = np.stack([_band_noise(rng, 100, 1500, n), _band_noise(rng, 2200, 3800, n)])
    mix = srcs.sum(0)
    est = co.colour_oracle(mix, srcs)
    assert est.shape == srcs.shape
    for e, s in zip(est, srcs, strict=True):
        assert np_si_snr(e, s) > 15  # the window's leakage at the band edges only
    r = co.score_set([("m", mix, srcs)])
    assert r["n"] == 1 and r["si_snri"] > 15


def test_sources_of_one_colour_gain_nothing(co) -> None:
    """Equal long-term spectra: the filter is a constant 1/2, which SI-SNR cannot see."""
    rng = np.random.default_rng(1)
    n = 4 * SR
    srcs = np.stack([_band_noise(rng, 50, 3900, n) for _ in range(2)])
    est = co.colour_oracle(srcs.sum(0), srcs)
    inner = slice(256, -256)  # away from the STFT's edge frames
    for e in est:  # the filter is 1/2 up to the spread of a finite-sample spectrum
        assert np_si_snr(e[inner], srcs.sum(0)[inner]) > 20
    r = co.score_set([("m", srcs.sum(0), srcs)])
    assert abs(r["si_snri"]) < 0.3


def test_ideal_ratio_mask_uses_when_each_source_talks(co) -> None:
    """One colour, alternating turns: the stationary filter gains nothing, the IRM a lot."""
    rng = np.random.default_rng(3)
    n = 4 * SR
    srcs = np.stack([_band_noise(rng, 50, 3900, n) for _ in range(2)])
    turns = (np.arange(n) // (SR // 2)) % 2
    srcs[0, turns == 1] *= 0.01
    srcs[1, turns == 0] *= 0.01
    r = co.score_set([("m", srcs.sum(0), srcs)])
    assert abs(r["si_snri"]) < 1 and r["irm_si_snri"] > 15


def test_noise_is_filtered_by_its_own_spectrum(co) -> None:
    """A low-band source under high-band noise: the oracle removes the noise."""
    rng = np.random.default_rng(2)
    n = 3 * SR
    s = _band_noise(rng, 100, 1200, n)
    srcs = np.stack([s, _band_noise(rng, 100, 1200, n)])
    noise = _band_noise(rng, 2500, 3900, n)
    mix = srcs.sum(0) + noise
    est = co.colour_oracle(mix, srcs)
    inner = slice(256, -256)
    assert np_si_snr(mix[inner], srcs.sum(0)[inner]) < 5
    assert np_si_snr(est.sum(0)[inner], srcs.sum(0)[inner]) > 20  # noise gone, speech kept


def test_cli_reports_real_probes_and_a_generated_test_split(
    co, speech_dir, tiny_2mix, tmp_path
) -> None:
    rst = sys.modules["real_speech_transfer"]
    spec = rst.BuildSpec(n_src=2, n_mix=4, split="dev", seed=3, utterance_s=(1.0, 2.0),
                         babble=False)  # fmt: skip
    mix_dir = tmp_path / "mix"
    rst.build_set(spec, rst.speaker_files(speech_dir), rst.set_dir(mix_dir, spec), log=print)
    out = tmp_path / "co.json"
    argv = ["--mix-dir", str(mix_dir), "--synthetic-root", str(tiny_2mix), "--out", str(out)]
    assert co.main(argv) == 0
    rep = json.loads(out.read_text())
    assert set(rep["real"]) == {"plain", "one_eq", "both_eq"}
    for r in rep["real"].values():
        assert r["n"] == 4 and np.isfinite(r["si_snri"])
    diffs = [
        rep["real"]["one_eq"]["per_mixture"][k] - v
        for k, v in rep["real"]["plain"]["per_mixture"].items()
    ]
    assert rep["real"]["one_eq"]["change"]["mean"] == pytest.approx(np.mean(diffs), abs=1e-3)
    assert rep["synthetic"][str(tiny_2mix)]["n"] == 2
    argv += ["--split", "train-360", "--limit", "3"]
    assert co.main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["split"] == "train-360" and rep["synthetic"][str(tiny_2mix)]["n"] == 3
    bad = tmp_path / "no_corpus"
    assert co.main(["--mix-dir", str(mix_dir), "--synthetic-root", str(bad)]) == 2


def test_cli_names_a_missing_set(co, tmp_path, capsys) -> None:
    assert co.main(["--mix-dir", str(tmp_path / "nothing")]) == 2
    assert "real2mix_dev" in capsys.readouterr().err
