"""research/realism/real_speech_transfer.py: mixture building (speakers, loudness, sums) and a smoke run."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.research.conftest import np_si_snr
from usgm.data.mixing import loudness

BENCH = Path(__file__).resolve().parents[2] / "research" / "realism" / "real_speech_transfer.py"
SR = 8000
# A tiny SepFormer+SE network: scoring logic is under test, not separation quality.
TINY_CFG = {"n_src": 2, "n_filters": 16, "kernel_size": 16, "stride": 8, "chunk_size": 10,
            "d_model": 16, "n_heads": 2, "d_ffn": 32,
            "se": {"n_blocks": 1, "n_intra": 1, "n_inter": 1},
            "ss": {"n_blocks": 1, "n_intra": 1, "n_inter": 1}}  # fmt: skip


@pytest.fixture(scope="module")
def rst():
    spec = importlib.util.spec_from_file_location("real_speech_transfer", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["real_speech_transfer"] = mod
    spec.loader.exec_module(mod)
    return mod


def _spec(rst, n_src: int, split: str = "dev"):
    return rst.BuildSpec(n_src=n_src, n_mix=6, split=split, seed=3, utterance_s=(1.0, 2.0),
                         babble=False)  # fmt: skip


def test_speaker_table_treats_allison_as_one_person(rst) -> None:
    pkgs = rst.SPEAKERS["allison"][0]
    assert "asterisk-core-sounds-en-wav" in pkgs and "asterisk-core-sounds-es-wav" in pkgs
    assert len(rst.PACKAGES) == len(set(rst.PACKAGES)) == 8
    assert "apt-get download" in rst.APT_COMMAND


@pytest.mark.parametrize("n_src", [2, 3])
def test_mixtures_have_different_people_and_librimix_levels(rst, speech_dir, tmp_path, n_src):
    speech = rst.speaker_files(speech_dir)
    assert set(speech) == {"allison", "june", "carlo", "ru"}
    folder = rst.build_set(_spec(rst, n_src), speech, tmp_path / "set", log=lambda m: None)
    items = rst.load_set(folder, _spec(rst, n_src))
    assert items is not None and len(items) == 6
    for it in items:
        assert len(set(it["speakers"])) == n_src  # different people in every mixture
        src = it["sources"].astype(np.float64) / 32768
        assert src.shape[0] == n_src and src.shape[1] == it["length"]  # min mode
        for s in src:
            assert -33.5 <= loudness(s, SR) <= -24.5  # LibriMix speech range
        mix = src.sum(0) + it["noise"] / 32768
        assert np.max(np.abs(mix)) <= 0.9 + 1e-3
    # dev and test use disjoint prompt files
    test_items = rst.load_set(
        rst.build_set(_spec(rst, n_src, "test"), speech, tmp_path / "t", log=lambda m: None)
    )
    dev_prompts = {p for it in items for ps in it["prompts"] for p in ps}
    test_prompts = {p for it in test_items for ps in it["prompts"] for p in ps}
    by_file = {rst.prompt_key(f): f for fs in speech.values() for f in fs}
    assert all(rst.split_of(by_file[p]) == "dev" for p in dev_prompts)
    assert all(rst.split_of(by_file[p]) == "test" for p in test_prompts)


def test_mixtures_are_consistent_and_reproducible(rst, speech_dir, tmp_path) -> None:
    speech = rst.speaker_files(speech_dir)
    a = rst.load_set(rst.build_set(_spec(rst, 2), speech, tmp_path / "a", log=lambda m: None))
    b = rst.load_set(rst.build_set(_spec(rst, 2), speech, tmp_path / "b", log=lambda m: None))
    for x, y in zip(a, b, strict=True):
        assert x["speakers"] == y["speakers"]
        np.testing.assert_array_equal(x["sources"], y["sources"])
        np.testing.assert_array_equal(x["noise"], y["noise"])
    for (_, mix, srcs), it in zip(rst.mixtures_from_set(a), a, strict=True):
        exact = it["sources"].astype(np.int64).sum(0) + it["noise"]
        np.testing.assert_array_equal(np.rint(mix * 32768).astype(np.int64), exact)
        assert srcs.shape == (2, len(mix))
    # a manifest built with another spec is not reused
    assert rst.load_set(tmp_path / "a", _spec(rst, 3)) is None


def test_missing_speech_says_what_to_install(rst, tmp_path, capsys) -> None:
    code = rst.main(["--build-only", "--n-src", "2", "--cache", str(tmp_path / "c"),
                     "--speech-dir", str(tmp_path / "none"), "--no-babble"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "apt-get download asterisk-core-sounds-en-wav" in err


def test_smoke_run_scores_a_model(rst, speech_dir, tmp_path) -> None:
    from usgm.evaluation.export import EXPORT_FORMAT
    from usgm.models import build_model

    torch.manual_seed(0)
    cfg = TINY_CFG
    model = build_model(cfg)
    path = tmp_path / "m.pt"
    torch.save({"format": EXPORT_FORMAT, "version": 1, "model": cfg, "sample_rate": SR,
                "state_dict": model.state_dict(), "meta": {}}, path)  # fmt: skip
    out = tmp_path / "r.json"
    code = rst.main(["--smoke", "--model", str(path), "--speech-dir", str(speech_dir),
                     "--mix-dir", str(tmp_path / "mix"), "--synthetic-root",
                     str(tmp_path / "absent"), "--out", str(out)])  # fmt: skip
    assert code == 0
    res = json.loads(out.read_text())
    assert res["real"]["2spk"]["n"] == 4 and np.isfinite(res["real"]["2spk"]["si_snri"])
    assert np.isfinite(res["real"]["2spk"]["denoise_only_si_snri"])
    assert set(res["real"]["2spk"]["by_speaker"]) <= {"allison", "june", "carlo", "ru"}
    assert sum(v["n"] for v in res["real"]["2spk"]["by_sexes"].values()) == 4
    assert res["real"]["3spk"]["skipped"]
    assert res["synthetic"] is None


def test_breakdown_groups_by_speaker_and_sexes(rst) -> None:
    items = [
        {"id": "a", "speakers": ["allison", "carlo"]},
        {"id": "b", "speakers": ["june", "allison"]},
        {"id": "c", "speakers": ["carlo", "june"]},
    ]
    out = rst.breakdown({"a": 1.0, "b": -2.0, "c": 4.0}, items)
    assert {k: v["mean"] for k, v in out["by_speaker"].items()} == {
        "allison": -0.5, "carlo": 2.5, "june": 1.0,
    }  # fmt: skip
    assert {k: (v["mean"], v["n"]) for k, v in out["by_sexes"].items()} == {
        "FF": (-2.0, 1), "FM": (2.5, 2),
    }  # fmt: skip


def test_denoise_only_reference_matches_a_direct_computation(rst) -> None:
    """The 'denoise only' column: SI-SNRi of outputting the clean mixture in every channel."""
    rng = np.random.default_rng(1)
    srcs = rng.standard_normal((2, 4000)).astype(np.float32)
    noise = 0.5 * rng.standard_normal(4000).astype(np.float32)
    mix = srcs.sum(0) + noise

    class Echo(torch.nn.Module):  # outputs the mixture twice: SI-SNRi 0 by definition
        def forward(self, m):
            return type("Out", (), {"est": m[:, None].expand(-1, 2, -1)})()

    res = rst.score(Echo(), [("m0", mix, srcs)])
    clean = srcs.sum(0)
    want = np.mean([np_si_snr(clean, s) - np_si_snr(mix, s) for s in srcs])
    assert res["si_snri"] == pytest.approx(0.0, abs=1e-4)
    assert res["denoise_only_si_snri"] == pytest.approx(want, abs=1e-3)
    assert res["per_mixture"] == {"m0": pytest.approx(0.0, abs=1e-3)}
    # Its outputs sum to twice the mixture: own denoising scores like the input, gains nothing.
    assert res["own_denoise_si_snri"] == pytest.approx(0.0, abs=1e-3)
    assert res["se_gain_db"] == pytest.approx(0.0, abs=1e-3)


def test_own_denoising_is_scored_from_the_sum_of_the_outputs(rst) -> None:
    """A model that leaves a little noise and splits wrongly: each number against numpy."""
    rng = np.random.default_rng(2)
    srcs = rng.standard_normal((2, 4000)).astype(np.float32)
    noise = 0.5 * rng.standard_normal(4000).astype(np.float32)
    mix = srcs.sum(0) + noise
    clean = srcs.sum(0)
    wrong = np.stack([0.7 * srcs[0] + 0.3 * srcs[1], 0.3 * srcs[0] + 0.7 * srcs[1]]) + 0.1 * noise
    est_sum = wrong.sum(0)  # clean mixture + 0.2 x the noise

    class Fixed(torch.nn.Module):
        def forward(self, m):
            return type("Out", (), {"est": torch.from_numpy(wrong.astype(np.float32))[None]})()

    res = rst.score(Fixed(), [("m0", mix, srcs)])
    base = np.mean([np_si_snr(mix, s) for s in srcs])
    sep = np.mean([np_si_snr(wrong[i], srcs[i]) for i in range(2)]) - base
    own = np.mean([np_si_snr(est_sum, s) for s in srcs]) - base
    assert res["si_snri"] == pytest.approx(sep, abs=1e-3)
    assert res["own_denoise_si_snri"] == pytest.approx(own, abs=1e-3)
    assert res["own_denoise_si_snri"] < res["denoise_only_si_snri"]
    assert res["se_gain_db"] == pytest.approx(
        np_si_snr(est_sum, clean) - np_si_snr(mix, clean), abs=1e-3
    )
    assert res["split_gain_db"] == pytest.approx(sep - own, abs=1e-3)

    # One output sign-flipped: SI-SNR (and so SI-SNRi) cannot tell; the own-denoising sum must
    # not be fooled either (the plain sum would cancel the sources).
    wrong[1] *= -1
    flipped = rst.score(Fixed(), [("m0", mix, srcs)])
    assert flipped["si_snri"] == pytest.approx(sep, abs=1e-3)
    assert flipped["own_denoise_si_snri"] == pytest.approx(own, abs=1e-3)
    assert flipped["se_gain_db"] == pytest.approx(res["se_gain_db"], abs=1e-3)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_downloaded_packages_unpack_into_a_fresh_cache(rst, tmp_path) -> None:
    """research/realism/README.md's recipe downloads the .debs by hand: ``pkgs/`` does not exist yet."""
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: asterisk-core-sounds-en-wav\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: t <t@example.org>\nDescription: t\n"
    )
    prompt = tree / "usr/share/asterisk/sounds/en/hello.wav"
    prompt.parent.mkdir(parents=True)
    sf.write(prompt, np.zeros(800, np.float32), SR, subtype="PCM_16")
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    deb = cache / "debs" / "asterisk-core-sounds-en-wav_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(tree), str(deb)], check=True, capture_output=True)
    pkgs = rst.unpack_packages(cache)
    got = pkgs / "asterisk-core-sounds-en-wav/usr/share/asterisk/sounds/en/hello.wav"
    assert sf.info(got).frames == 800
    assert not list(pkgs.glob("*.partial"))


def test_overlap_fraction_counts_frames_where_both_talk(rst) -> None:
    rng = np.random.default_rng(3)
    n = 100 * 160  # 100 frames of 20 ms
    s1, s2 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    s1[: 60 * 160] = rng.standard_normal(60 * 160)  # frames 0-59
    s2[40 * 160 :] = 0.01 * rng.standard_normal(60 * 160)  # frames 40-99, 40 dB quieter
    s1[60 * 160 :] = 1e-3 * rng.standard_normal(40 * 160)  # a floor 60 dB down: silent
    assert rst.overlap_fraction(np.stack([s1, s2])) == pytest.approx(0.2)
    assert rst.overlap_fraction(np.stack([s1, s1])) == pytest.approx(0.6)


def test_by_overlap_bands_and_correlation(rst) -> None:
    per = {"a": 3.0, "b": 2.0, "c": 0.0, "d": -1.0}
    ov = {"a": 0.2, "b": 0.6, "c": 0.8, "d": 1.0}
    out = rst.by_overlap(per, ov)
    assert {k: (s["mean"], s["n"]) for k, s in out["by_overlap"].items()} == {
        "0.0-0.5": (3.0, 1), "0.5-0.7": (2.0, 1), "0.7-0.9": (0.0, 1), "0.9-1.0": (-1.0, 1),
    }  # fmt: skip
    assert out["overlap_mean"] == pytest.approx(0.65)
    assert out["overlap_corr"] == pytest.approx(
        np.corrcoef([0.2, 0.6, 0.8, 1.0], [3, 2, 0, -1])[0, 1]
    )


def _probe_items(n: int = 3, seconds: float = 1.0) -> list[dict]:
    """Items as load_set gives them: int16 sources (2, T) and noise (T,)."""
    rng = np.random.default_rng(5)
    t = int(seconds * SR)
    items = []
    for k in range(n):
        src = (rng.standard_normal((2, t)) * 3000).astype(np.int16)
        noise = (rng.standard_normal(t) * 500).astype(np.int16)
        items.append({"id": f"m{k}", "sources": src, "noise": noise, "speakers": ["allison", "ru"]})
    return items


@pytest.mark.parametrize("probe", ["one_eq", "one_codec"])
def test_channel_probe_one_changes_only_the_last_source(rst, probe) -> None:
    items = _probe_items()
    for it, (uid, mix, src) in zip(items, rst.channel_probe_mixtures(items, probe), strict=True):
        orig = it["sources"].astype(np.float64) / 32768.0
        assert uid == it["id"] and src.shape == orig.shape
        np.testing.assert_allclose(src[0], orig[0], atol=1e-6)  # first person untouched
        assert np.abs(src[1] - orig[1]).max() > 0.01  # the other one through the chain
        np.testing.assert_allclose(
            np.sqrt((src**2).mean(-1)), np.sqrt((orig**2).mean(-1)), rtol=1e-4
        )
        np.testing.assert_allclose(mix, src.sum(0) + it["noise"] / 32768.0, atol=1e-6)


def test_channel_probe_both_applies_one_draw_to_every_source(rst) -> None:
    items = _probe_items()
    for it in items:  # second person = first person at twice the amplitude
        it["sources"][1] = it["sources"][0] * 2
    probed = rst.channel_probe_mixtures(items, "both_eq")
    one = rst.channel_probe_mixtures(items, "one_eq")
    for it, (_, _, src), (_, _, src_one) in zip(items, probed, one, strict=True):
        # A linear chain of one draw keeps the 1 : 2 relation (each source keeps its RMS) ...
        np.testing.assert_allclose(src[1], 2 * src[0], atol=1e-5)
        # ... and it is a real chain, the same draw as the last source's in "one_eq".
        assert np.abs(src[0] - it["sources"][0] / 32768.0).max() > 0.01
        np.testing.assert_allclose(src[1], src_one[1], atol=1e-5)
    # Each mixture draws its own chain.
    assert not np.allclose(
        probed[0][2][0] / probed[0][2][0].std(), probed[1][2][0] / probed[1][2][0].std()
    )


def test_channel_probe_reports_paired_change_against_the_plain_set(rst) -> None:
    from usgm.models import build_model

    torch.manual_seed(0)
    cfg = TINY_CFG
    model = build_model(cfg).eval()
    items = _probe_items(n=4, seconds=0.5)
    base = rst.score(model, rst.mixtures_from_set(items))
    res = rst.channel_probe(model, items, base)
    assert set(res) == set(rst.CHANNEL_PROBES)
    for probe, r in res.items():
        direct = rst.score(model, rst.channel_probe_mixtures(items, probe))
        assert r["si_snri"] == pytest.approx(direct["si_snri"], abs=1e-6)
        # Same mixtures, so the mean paired change is the difference of the means (up to the
        # 3 decimals that per_mixture keeps).
        assert r["change"]["mean"] == pytest.approx(r["si_snri"] - base["si_snri"], abs=1e-3)
        assert r["change"]["n"] == 4
    with pytest.raises(ValueError, match="unknown channel probe"):
        rst.channel_probe_mixtures(items, "one_reverb")
