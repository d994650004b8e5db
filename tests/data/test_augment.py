"""Speed perturbation and dynamic mixing: consistency of the re-summed mixtures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from usgm.data.augment import DynamicMixer, SpeedPerturb, remix, speed_ratio
from usgm.data.datamodule import LibriMixDataset
from usgm.data.errors import DataError
from usgm.data.librimix import load_split, read_wav

SR = 8000


def test_speed_ratio() -> None:
    assert speed_ratio(0.95) == (19, 20)
    assert speed_ratio(1.05) == (21, 20)
    assert speed_ratio(1.0) == (1, 1)
    assert speed_ratio(0.9) == (9, 10)


def test_speed_perturb_length_pitch_and_method() -> None:
    sp = SpeedPerturb((0.95, 1.0, 1.05))
    t = torch.arange(SR) / SR
    x = torch.sin(2 * math.pi * 400 * t)
    assert sp.apply(x, 1.0) is x
    for f in (0.95, 1.05):
        y = sp.apply(x, f)
        p, q = speed_ratio(f)
        assert y.shape[-1] == math.ceil(SR * q / p)
        # Documented method: torchaudio sinc resampling by the reduced ratio p -> q.
        ref = torchaudio.functional.resample(x, p, q)
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
        # Played at the original rate, the tone moves to 400·f Hz.
        spec = torch.fft.rfft(y * torch.hann_window(y.shape[-1]), n=8 * SR).abs()
        peak_hz = spec.argmax().item() * SR / (8 * SR)
        assert abs(peak_hz - 400 * f) < 2
    assert set(sp._resamplers) == {(19, 20), (21, 20)}  # kernels cached per factor
    rng = np.random.default_rng(0)
    draws = sp.draw(300, rng)
    assert set(draws) == {0.95, 1.0, 1.05}


def test_bad_speed_factors() -> None:
    with pytest.raises(DataError, match="speed_factors"):
        SpeedPerturb([])
    with pytest.raises(DataError, match="speed_factors"):
        SpeedPerturb([0.0, 1.0])


def test_remix_min_mode() -> None:
    s = [torch.randn(100), torch.randn(90)]
    n = torch.randn(95)
    src, clean, mix = remix(s, n)
    assert src.shape == (2, 90)
    torch.testing.assert_close(clean, s[0][:90] + s[1][:90])
    torch.testing.assert_close(mix, clean + n[:90])
    src, clean, mix = remix(s, None, length=50)
    assert src.shape == (2, 50) and torch.equal(mix, clean)


def _noise_of(root: Path, split: str, uid: str) -> np.ndarray:
    return read_wav(root / "wav8k" / "min" / split / "noise" / f"{uid}.wav", SR)


@pytest.mark.parametrize("segment", [None, 0.4])
def test_speed_perturbed_items_are_consistent(libri2mix: Path, segment: float | None) -> None:
    ds = LibriMixDataset(
        libri2mix, "train-360", train=True, segment=segment, speed_perturb=True, seed=3
    )
    seen_lengths = set()
    for i in range(len(ds)):
        for _ in range(3):
            it = ds[i]
            src, mix, clean = it["sources"], it["mix"], it["mix_clean"]
            assert src.shape[0] == 2 and mix.shape == clean.shape == src.shape[1:]
            torch.testing.assert_close(clean, src.sum(0), atol=1e-6, rtol=0)
            # The noise is not perturbed: mix - mix_clean is a window of the noise file.
            noise = _noise_of(libri2mix, "train-360", it["id"])
            diff = (mix - clean).numpy()
            if segment is None:
                np.testing.assert_allclose(diff, noise[: len(diff)], atol=1e-6)
            else:
                assert len(diff) <= round(segment * SR)
                win = np.lib.stride_tricks.sliding_window_view(noise, len(diff))
                assert np.abs(win - diff).max(axis=1).min() < 1e-6
            seen_lengths.add(mix.shape[-1])
    utt_lengths = {u.length for u in ds.utterances}
    if segment is None:
        # Some item got a 105 % source, hence shorter than its utterance.
        assert seen_lengths - utt_lengths
    else:
        assert max(seen_lengths) == round(segment * SR)


def test_speed_perturbed_source_matches_resampled_file(libri2mix: Path) -> None:
    ds = LibriMixDataset(
        libri2mix, "dev", train=True, segment=None, speed_perturb=True, speed_factors=[1.05]
    )
    it = ds[0]
    utt = ds.utterances[0]
    s1 = torch.from_numpy(read_wav(utt.sources[0], SR))
    ref = torchaudio.functional.resample(s1, 21, 20)
    n = it["sources"].shape[-1]
    assert n == math.ceil(utt.length * 20 / 21)
    torch.testing.assert_close(it["sources"][0], ref[:n], atol=1e-5, rtol=0)


def test_sep_clean_speed_perturb(libri2mix: Path) -> None:
    ds = LibriMixDataset(
        libri2mix, "train-360", task="sep_clean", train=True, segment=0.5, speed_perturb=True
    )
    it = ds[1]
    assert torch.equal(it["mix"], it["mix_clean"])
    torch.testing.assert_close(it["mix_clean"], it["sources"].sum(0), atol=1e-6, rtol=0)


def test_dynamic_mixer_draws_new_combinations(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "train-360")
    mixer = DynamicMixer(utts, n_src=2, sample_rate=SR)
    assert len(mixer.sources) == 12 and len(mixer.noises) == 6
    rng = np.random.default_rng(0)
    original = {frozenset(u.sources) for u in utts}
    combos = set()
    for _ in range(30):
        picked, noise = mixer.draw(rng)
        assert noise is not None and len({p.speaker for p in picked}) == 2
        combos.add(frozenset(p.path for p in picked))
    assert len(combos - original) >= 10
    with pytest.raises(DataError, match="at least 3 source files"):
        DynamicMixer(utts[:1], n_src=3, sample_rate=SR)


@pytest.mark.parametrize("speed", [False, True])
def test_dynamic_mixing_items(libri2mix: Path, speed: bool) -> None:
    ds = LibriMixDataset(
        libri2mix,
        "train-360",
        train=True,
        segment=0.5,
        dynamic_mixing=True,
        speed_perturb=speed,
        seed=1,
    )
    ids = set()
    first = [ds[i] for i in range(len(ds))]
    second = [ds[i] for i in range(len(ds))]  # the next "epoch": new mixtures
    for it in first + second:
        src, mix, clean = it["sources"], it["mix"], it["mix_clean"]
        assert src.shape == (2, 4000) and mix.shape == (4000,)
        torch.testing.assert_close(clean, src.sum(0), atol=1e-6, rtol=0)
        noise = (mix - clean).abs()
        assert noise.max() > 0  # a noise file was added
        assert mix.abs().max() <= 0.9 + 1e-6 and src.abs().max() <= 0.9 + 1e-6  # LibriMix peak rule
        assert it["id"].startswith("dm:")
        ids.add(it["id"])
    assert len(ids) > len(ds)  # new combinations, not the CSV's pairs
    assert any(not torch.equal(a["mix"], b["mix"]) for a, b in zip(first, second))


def test_dynamic_mixing_gains_follow_librimix(libri2mix: Path) -> None:
    from usgm.data.mixing import loudness

    ds = LibriMixDataset(libri2mix, "train-360", train=True, segment=1.0, dynamic_mixing=True)
    levels = []
    for i in range(len(ds)):
        it = ds[i]
        if it["mix"].abs().max() < 0.9 - 1e-4:  # not rescaled by the peak rule
            levels += [loudness(s.numpy(), SR) for s in it["sources"]]
    assert levels and all(-33.5 <= lv <= -24.5 for lv in levels)
