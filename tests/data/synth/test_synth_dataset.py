"""The generated default corpus: layout, exact identities, mixing rules, pools, reproducibility.

Uses the session fixtures ``tiny_2mix`` / ``tiny_3mix`` of tests/conftest.py (built once, shared
with the DataModule tests) plus two small rebuilds for reproducibility.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usgm.data.errors import DataError
from usgm.data.mixing import loudness
from usgm.data.synth import COMPLETE_MARKER, is_complete, make_dataset, read_info

SPLITS = ("train-360", "dev", "test")


def _rows(root: Path, split: str, kind: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(root / "wav8k" / "min" / "metadata" / f"mixture_{split}_{kind}.csv") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _read(path: str | Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == 8000 and x.ndim == 1
    return x


@pytest.mark.parametrize("n_src", [2, 3])
def test_layout_and_csv_columns(n_src, request):
    root = request.getfixturevalue(f"tiny_{n_src}mix")
    info = read_info(root)
    assert is_complete(root) and info["n_src"] == n_src and info["mode"] == "min"
    assert not list(root.parent.glob(f"{root.name}.partial-*"))
    src_cols = [f"source_{j + 1}_path" for j in range(n_src)]
    kinds = {"mix_both", "mix_clean", "noise", *(f"s{j + 1}" for j in range(n_src))}
    # eSpeak speakers have 5-digit IDs, recorded people short lowercase ones (fcsm, hwpirate …).
    spk = r"(\d{5}|[a-z]+)-\d{6}"
    id_re = re.compile(f"^{spk}" + f"_{spk}" * (n_src - 1) + "$")
    for split in SPLITS:
        assert {p.name for p in (root / "wav8k" / "min" / split).iterdir()} == kinds
        cols, both = _rows(root, split, "mix_both")
        assert cols == ["mixture_ID", "mixture_path", *src_cols, "noise_path", "length"]
        cols, clean = _rows(root, split, "mix_clean")
        assert cols == ["mixture_ID", "mixture_path", *src_cols, "length"]
        assert len(both) == len(clean) == info["counts"][split]
        ids = [r["mixture_ID"] for r in both]
        assert len(set(ids)) == len(ids) and all(id_re.match(i) for i in ids)
        for row in both:
            for col in ("mixture_path", *src_cols, "noise_path"):
                path = Path(row[col])
                assert path.is_absolute() and path.is_file()
                assert path.parent.parent == root / "wav8k" / "min" / split
                assert path.name == row["mixture_ID"] + ".wav"
                meta = sf.info(path)
                assert meta.subtype == "PCM_16" and meta.channels == 1
                assert meta.samplerate == 8000 and meta.frames == int(row["length"])


@pytest.mark.parametrize("n_src", [2, 3])
def test_mixtures_are_exact_sums_on_disk(n_src, request):
    root = request.getfixturevalue(f"tiny_{n_src}mix")
    for split in SPLITS:
        for row in _rows(root, split, "mix_both")[1]:
            sources = [_read(row[f"source_{j + 1}_path"]) for j in range(n_src)]
            noise = _read(row["noise_path"])
            clean = _read(row["mixture_path"].replace("/mix_both/", "/mix_clean/"))
            both = _read(row["mixture_path"])
            np.testing.assert_array_equal(clean, np.sum(sources, axis=0, dtype=np.float32))
            np.testing.assert_array_equal(both, clean + noise)
            assert np.abs(noise).max() > 0 and all(np.abs(s).max() > 0 for s in sources)


@pytest.mark.parametrize("n_src", [2, 3])
def test_loudness_and_peak_rules_on_disk(n_src, request):
    root = request.getfixturevalue(f"tiny_{n_src}mix")
    tol = 0.05  # int16 quantisation of the written files
    for split in SPLITS:
        for row in _rows(root, split, "mix_both")[1]:
            srcs = [_read(row[f"source_{j + 1}_path"]) for j in range(n_src)]
            noise = _read(row["noise_path"])
            peak = max(np.abs(x).max() for x in [*srcs, noise, _read(row["mixture_path"])])
            assert peak <= 0.9 + 1e-4
            lows = [-33.0] * n_src + [-38.0]
            highs = [-25.0] * n_src + [-30.0]
            levels = [loudness(x, 8000) for x in [*srcs, noise]]
            if peak < 0.9 - 1e-3:  # not rescaled: each at its drawn loudness
                assert all(lo - tol <= v <= hi + tol for v, lo, hi in zip(levels, lows, highs))
            else:  # rescaled by one common factor g <= 1: some shift d = -20 log10 g >= 0 fits
                need = max(lo - v for v, lo in zip(levels, lows))
                room = min(hi - v for v, hi in zip(levels, highs))
                assert max(need, 0.0) <= room + tol, (levels, peak)


def test_speaker_pools_are_disjoint(tiny_2mix: Path):
    speakers = {}
    for split in SPLITS:
        ids = [r["mixture_ID"] for r in _rows(tiny_2mix, split, "mix_both")[1]]
        speakers[split] = {part.split("-")[0] for mid in ids for part in mid.split("_")}
        for mid in ids:  # never the same speaker twice in one mixture
            spk = [part.split("-")[0] for part in mid.split("_")]
            assert len(set(spk)) == len(spk)
    assert not speakers["train-360"] & speakers["dev"]
    assert not speakers["train-360"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    with open(tiny_2mix / "speakers.csv") as fh:
        pools: dict[str, set[str]] = {}
        for row in csv.DictReader(fh):
            pools.setdefault(row["pool"], set()).add(row["speaker_ID"])
    assert speakers["train-360"] <= pools["train"] and speakers["test"] <= pools["test"]
    assert not pools["babble"] & (pools["train"] | pools["dev"] | pools["test"])


def _files(root: Path, splits: tuple[str, ...]) -> dict[str, bytes]:
    base = root / "wav8k" / "min"
    return {
        str(p.relative_to(base)): p.read_bytes()
        for split in splits
        for p in sorted((base / split).rglob("*.wav"))
    }


def test_dev_and_test_are_reproducible(tiny_2mix: Path, tmp_path: Path):
    info = read_info(tiny_2mix)
    reference = _files(tiny_2mix, ("dev", "test"))
    # Same seed, other worker count and no train split: byte-identical dev/test files.
    again = make_dataset(
        tmp_path / "again", n_src=2, n_train=0, n_dev=info["counts"]["dev"],
        n_test=info["counts"]["test"], seed=info["seed"], num_workers=2,
    )  # fmt: skip
    assert _files(again, ("dev", "test")) == reference
    for split in ("dev", "test"):
        rows_a = [r["mixture_ID"] for r in _rows(tiny_2mix, split, "mix_both")[1]]
        rows_b = [r["mixture_ID"] for r in _rows(again, split, "mix_both")[1]]
        assert rows_a == rows_b
    # Another seed: other files.
    other = make_dataset(
        tmp_path / "other", n_src=2, n_train=0, n_dev=info["counts"]["dev"], n_test=0,
        seed=info["seed"] + 1, num_workers=1,
    )  # fmt: skip
    assert set(_files(other, ("dev",)).values()).isdisjoint(reference.values())
    # An existing dataset is never overwritten silently.
    with pytest.raises(DataError, match="overwrite"):
        make_dataset(other, n_train=0, n_dev=1, n_test=0)
    assert (other / COMPLETE_MARKER).is_file()


def test_incomplete_root_is_not_complete(tmp_path: Path):
    (tmp_path / "wav8k" / "min").mkdir(parents=True)
    assert not is_complete(tmp_path)
    (tmp_path / COMPLETE_MARKER).write_text("not json")
    assert not is_complete(tmp_path)
    assert read_info(tmp_path / "missing") is None


def test_failed_wav_write_names_the_file_and_free_space(tmp_path: Path) -> None:
    from usgm.data.synth.worker import _write_wav

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # writing "inside" a file fails as a full disk does: at the OS
    target = blocker / "s1.wav"
    with pytest.raises(OSError, match=r"not_a_dir/s1\.wav.*MiB free"):
        _write_wav(target, np.zeros(80, dtype=np.int16), 8000)
