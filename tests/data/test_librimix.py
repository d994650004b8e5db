"""LibriMix layout: path resolution, metadata parsing and up-front/lazy validation."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usgm.data.errors import DataError, SourceCountError
from usgm.data.librimix import (
    dataset_dir,
    load_split,
    metadata_path,
    read_wav,
    resolve_path,
)


def _rewrite_csv(path: Path, edit) -> None:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows = edit(rows)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _csv(root: Path, split: str = "dev", kind: str = "mix_both") -> Path:
    return metadata_path(root / "wav8k" / "min", split, kind)


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ("/old/host/Libri2Mix/wav8k/min/dev/s1/a_b.wav", "dev/s1/a_b.wav"),
        ("/x/wav8k/min/y/Libri2Mix/wav16k/max/test/noise/c.wav", "test/noise/c.wav"),
        (
            "D:\\corpora\\Libri3Mix\\wav8k\\min\\train-360\\mix_both\\d.wav",
            "train-360/mix_both/d.wav",
        ),
        ("wav8k/min/dev/mix_clean/e.wav", "dev/mix_clean/e.wav"),
        ("/somewhere/else/dev/s2/f.wav", "dev/s2/f.wav"),
    ],
)
def test_resolve_path(tmp_path: Path, recorded: str, expected: str) -> None:
    assert resolve_path(recorded, tmp_path) == tmp_path / expected


def test_load_split_moved_dataset(libri2mix: Path) -> None:
    # The CSVs point at /nonexistent/old_machine/…: everything must resolve under the new root.
    text = _csv(libri2mix).read_text()
    assert "/nonexistent/old_machine/" in text
    utts = load_split(libri2mix, "dev", n_src=2, validate="all")
    assert len(utts) == 4
    base = libri2mix / "wav8k" / "min"
    for u in utts:
        assert u.mixture == base / "dev" / "mix_both" / f"{u.id}.wav"
        assert [p.parent.name for p in u.sources] == ["s1", "s2"]
        assert u.noise is not None and u.noise.is_file()
        assert all(p.is_file() for p in u.files)
        assert sf.info(str(u.mixture)).frames == u.length
    clean = load_split(libri2mix, "dev", n_src=2, task="sep_clean")
    assert clean[0].noise is None and clean[0].mixture.parent.name == "mix_clean"


def test_root_may_be_the_rate_mode_folder(libri2mix: Path) -> None:
    assert dataset_dir(libri2mix / "wav8k" / "min") == libri2mix / "wav8k" / "min"


def test_three_speakers(make_librimix) -> None:
    root = make_librimix("Libri3Mix", n_src=3, splits={"test": 3})
    utts = load_split(root, "test", n_src=3)
    assert len(utts) == 3 and all(len(u.sources) == 3 for u in utts)


def test_limit(libri2mix: Path) -> None:
    assert len(load_split(libri2mix, "train-360", limit=2)) == 2


# -- bad input: each raises DataError naming the file / column / key ---------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        load_split(tmp_path / "nope", "dev")
    msg = str(err.value)
    assert str(tmp_path / "nope") in msg and "usgm-make-data --out" in msg
    assert "make data" in msg and "data.root=" in msg


def test_wrong_rate_or_mode_folder(libri2mix: Path) -> None:
    with pytest.raises(DataError, match=r"no wav16k/min/ folder.*wav8k/min"):
        load_split(libri2mix, "dev", sample_rate=16000)
    with pytest.raises(DataError, match=r"data\.sample_rate"):
        load_split(libri2mix, "dev", sample_rate=8500)
    with pytest.raises(DataError, match=r"data\.mode"):
        load_split(libri2mix, "dev", mode="mid")


def test_parent_of_roots_hint(libri2mix: Path) -> None:
    with pytest.raises(DataError, match="contains Libri2Mix"):
        load_split(libri2mix.parent, "dev")


def test_missing_metadata(libri2mix: Path) -> None:
    with pytest.raises(DataError, match=r"mixture_train-100_mix_both\.csv is missing"):
        load_split(libri2mix, "train-100")


def test_missing_column(libri2mix: Path) -> None:
    path = _csv(libri2mix)
    _rewrite_csv(path, lambda rows: [[c for i, c in enumerate(r) if i != 4] for r in rows])
    with pytest.raises(DataError, match="noise_path") as err:
        load_split(libri2mix, "dev")
    assert str(path) in str(err.value)


def test_malformed_csv(libri2mix: Path) -> None:
    path = _csv(libri2mix)
    _rewrite_csv(path, lambda rows: [*rows[:2], rows[2][:3], *rows[3:]])
    with pytest.raises(DataError, match="line 3: 3 fields") as err:
        load_split(libri2mix, "dev")
    assert str(path) in str(err.value)


def test_bad_length_and_empty_csv(libri2mix: Path) -> None:
    path = _csv(libri2mix)
    _rewrite_csv(path, lambda rows: [rows[0], [*rows[1][:-1], "abc"], *rows[2:]])
    with pytest.raises(DataError, match="line 2: column 'length'"):
        load_split(libri2mix, "dev")
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_split(libri2mix, "dev")
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_split(libri2mix, "dev")


def test_n_src_mismatch(libri2mix: Path) -> None:
    with pytest.raises(SourceCountError, match=r"2 sources\) but n_src=3") as err:
        load_split(libri2mix, "dev", n_src=3)
    assert "source_3_path" in str(err.value) and "data.n_src=2" in str(err.value)
    assert (err.value.found, err.value.expected) == (2, 3)
    assert isinstance(err.value, DataError)


def test_missing_wavs(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    gone = [utts[1].sources[0], utts[2].noise]
    for p in gone:
        p.unlink()
    with pytest.raises(DataError, match="2 of 16 wav files") as err:
        load_split(libri2mix, "dev")
    assert all(str(p) in str(err.value) for p in gone)


def _corrupt(path: Path) -> None:
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")


def test_corrupt_wav(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    bad = utts[2].sources[1]
    _corrupt(bad)
    with pytest.raises(DataError, match="unreadable or corrupt") as err:
        load_split(libri2mix, "dev", validate="all")
    assert str(bad) in str(err.value)
    # Lazily, when read (validate="none" or a header sample that missed it).
    with pytest.raises(DataError, match=re.escape(f"{bad}: unreadable or corrupt")):
        read_wav(bad, 8000)


def test_wrong_sample_rate(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    bad = utts[0].mixture
    sf.write(bad, np.zeros(utts[0].length, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(DataError, match="sample rate 16000 Hz, expected 8000") as err:
        load_split(libri2mix, "dev", validate="sample", validate_samples=1)
    assert str(bad) in str(err.value)
    with pytest.raises(DataError, match=re.escape(f"{bad}: sample rate 16000")):
        read_wav(bad, 8000)


def test_stereo(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    bad = utts[3].noise
    sf.write(bad, np.zeros((utts[3].length, 2), np.float32), 8000, subtype="PCM_16")
    with pytest.raises(DataError, match="2 channels, expected mono") as err:
        load_split(libri2mix, "dev", validate="sample", validate_samples=2)  # last is in sample
    assert str(bad) in str(err.value)
    with pytest.raises(DataError, match=re.escape(f"{bad}: 2 channels")):
        read_wav(bad, 8000)


def test_length_mismatch(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    bad = utts[1].sources[1]
    sf.write(bad, np.zeros(100, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(
        DataError, match=re.escape(f"{bad}: 100 samples, but its metadata 'length'")
    ):
        load_split(libri2mix, "dev", validate="all")
    with pytest.raises(DataError, match=re.escape(f"{bad}: holds 100 samples")):
        read_wav(bad, 8000, 0, utts[1].length, utts[1].length)


def test_validate_none_skips_file_checks(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    utts[0].mixture.unlink()
    assert len(load_split(libri2mix, "dev", validate="none")) == 4
    with pytest.raises(DataError, match=re.escape(str(utts[0].mixture))):
        read_wav(utts[0].mixture, 8000)
    with pytest.raises(DataError, match=r"data\.validate"):
        load_split(libri2mix, "dev", validate="some")  # type: ignore[arg-type]


def test_root_is_a_file(tmp_path: Path) -> None:
    notes = tmp_path / "Libri2Mix.txt"
    notes.write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder") as err:
        load_split(notes, "dev")
    msg = str(err.value)
    # usgm-make-data --out <that file> would fail as well: it must not be suggested.
    assert f"--out {notes}" not in msg and "--out <folder>" in msg
    assert str(tmp_path) in msg and "data.root=" in msg


def _float_with(path: Path, n: int, index: int, value: float, subtype: str = "FLOAT") -> None:
    x = np.full(n, 0.01, np.float64)
    x[index] = value
    sf.write(path, x, 8000, subtype=subtype)


@pytest.mark.parametrize(
    ("value", "subtype", "match"),
    [
        (np.nan, "FLOAT", "is nan"),
        (np.inf, "FLOAT", "is inf"),
        (-np.inf, "DOUBLE", "is -inf"),
        (1e9, "FLOAT", "has magnitude 1e\\+09 > 65536"),
    ],
)
def test_non_finite_or_absurd_samples(libri2mix: Path, value, subtype, match) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    utt = utts[1]
    bad = utt.sources[0]
    _float_with(bad, utt.length, 123, value, subtype)
    # Up front: validate=all reads every float file in full and names the file and the sample.
    with pytest.raises(DataError, match=re.escape(f"{bad}: sample 123 ") + match):
        load_split(libri2mix, "dev", validate="all")
    # When read (the check runs on every read, whatever the up-front sample saw).
    with pytest.raises(DataError, match=re.escape(f"{bad}: sample 123 ") + match):
        read_wav(bad, 8000, 0, utt.length, utt.length)
    # The offset is the file's sample index, also for a read that starts later.
    with pytest.raises(DataError, match=re.escape(f"{bad}: sample 123 ")):
        read_wav(bad, 8000, 100, 50, utt.length)
    # A window that misses the bad sample reads fine.
    assert np.all(read_wav(bad, 8000, 200, 50, utt.length) == np.float32(0.01))


def test_float_files_within_range_load(libri2mix: Path) -> None:
    utts = load_split(libri2mix, "dev", validate="none")
    good = utts[0].sources[0]
    _float_with(good, utts[0].length, 5, -3.5)  # out of [-1, 1] but finite and plausible
    assert len(load_split(libri2mix, "dev", validate="all")) == 4
    x = read_wav(good, 8000, 0, utts[0].length, utts[0].length)
    assert x[5] == np.float32(-3.5) and x.dtype == np.float32


def test_sample_problem_reference() -> None:
    from usgm.data.librimix import MAX_ABS_SAMPLE, sample_problem

    assert sample_problem(np.zeros(0, np.float32)) is None
    assert sample_problem(np.zeros((0, 3), np.float32)) is None
    x = np.zeros((10, 2), np.float32)
    x[7, 1] = np.nan
    assert sample_problem(x, offset=1000) == (
        "sample 1007 is nan (float audio with NaN/Inf samples)"
    )
    y = np.zeros(10, np.float32)
    y[3] = MAX_ABS_SAMPLE  # the limit itself is allowed
    assert sample_problem(y) is None
    y[4] = -np.nextafter(np.float32(MAX_ABS_SAMPLE), np.float32(np.inf))
    assert sample_problem(y).startswith("sample 4 has magnitude")
