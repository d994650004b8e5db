"""``usgm-make-data`` command line: one-line errors and non-zero exits on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usgm.data.synth import COMPLETE_MARKER, is_complete, make_dataset
from usgm.data.synth.cli import main


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("usgm-make-data: error: ")
    return err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--n-src", "4"], "--n-src"),
        (["--n-src", "two"], "--n-src"),
        (["--n-train", "-5"], "--n-train"),
        (["--n-dev", "1.5"], "--n-dev"),
        (["--sample-rate", "44100"], "--sample-rate"),
        (["--num-workers", "0"], "--num-workers"),
        (["--seed", "-1"], "--seed"),
        (["--n-train", "0", "--n-dev", "0", "--n-test", "0"], "nothing to generate"),
    ],
)
def test_bad_arguments(argv, needle, tmp_path: Path, capsys):
    assert main(["--out", str(tmp_path / "ds"), *argv]) != 0
    assert needle in _error_line(capsys)
    assert not (tmp_path / "ds").exists()


def test_missing_out(capsys):
    assert main([]) == 2
    assert "--out" in _error_line(capsys)


def test_out_not_writable(tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["--out", str(blocker / "ds"), "--n-train", "1"]) == 1
    assert "not writable" in _error_line(capsys)
    assert main(["--out", str(blocker), "--n-train", "1"]) == 1
    assert "not a directory" in _error_line(capsys)


def test_existing_dataset_needs_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "ds"
    (out / "wav8k").mkdir(parents=True)
    (out / COMPLETE_MARKER).write_text(json.dumps({"format": "usgm-synth"}))
    assert main(["--out", str(out)]) == 1
    err = _error_line(capsys)
    assert "already holds a dataset" in err and "--overwrite" in err
    # A folder with other content is never deleted, even with --overwrite.
    (out / "my_thesis.tex").write_text("precious")
    assert main(["--out", str(out), "--overwrite"]) == 1
    assert "not a usgm dataset" in _error_line(capsys)
    assert (out / "my_thesis.tex").read_text() == "precious"


def test_overwrite_replaces_a_dataset(tmp_path: Path, capsys):
    out = tmp_path / "ds"
    (out / "wav8k" / "min" / "dev").mkdir(parents=True)
    (out / "wav8k" / "min" / "dev" / "stale.wav").write_bytes(b"")
    crashed = tmp_path / "ds.partial-999999999"  # left by a dead build: removed
    crashed.mkdir()
    argv = ["--out", str(out), "--n-train", "0", "--n-dev", "1", "--n-test", "0", "--quiet"]
    assert main([*argv, "--overwrite", "--num-workers", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert is_complete(out) and not (out / "wav8k" / "min" / "dev" / "stale.wav").exists()
    assert not list(tmp_path.glob("ds.*"))  # no partial/old folders left


def test_api_rejects_bad_options(tmp_path: Path):
    from usgm.data.errors import DataError

    with pytest.raises(DataError, match="unknown synth option"):
        make_dataset(tmp_path / "x", n_train=1, colour="blue")
    with pytest.raises(DataError, match="n_src"):
        make_dataset(tmp_path / "x", n_src=1)
    with pytest.raises(DataError, match="mode"):
        make_dataset(tmp_path / "x", mode="mid")
    with pytest.raises(DataError, match="seed"):
        make_dataset(tmp_path / "x", seed=-3)
    with pytest.raises(DataError, match="speaker pool"):
        make_dataset(tmp_path / "x", n_src=3, speakers=(2, 40, 40, 60))
    assert not (tmp_path / "x").exists()


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "--n-src" in capsys.readouterr().out


def test_recorded_options_on_the_command_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "no-such-folder"
    args = ["--out", str(tmp_path / "ds"), "--n-train", "2", "--n-dev", "1", "--n-test", "1"]
    assert main([*args, "--recorded-dir", str(bad)]) == 1
    assert str(bad) in _error_line(capsys)
    assert not (tmp_path / "ds").exists()
    assert main([*args, "--recorded-fraction", "0", "--quiet"]) == 0
    info = json.loads((tmp_path / "ds" / COMPLETE_MARKER).read_text())
    assert info["options"]["recorded_fraction"] == 0.0 and info["recorded_speakers"] == {}
