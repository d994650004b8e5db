"""``ensure_corpus``: the eSpeak-only fallback where recorded voices cannot be had, and when a
fallback corpus is reused or rebuilt. (Staleness through training's wrapper:
tests/training/test_factory.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_fake_packages
from usgm.data.errors import DataError
from usgm.data.synth import SynthOptions, ensure_corpus, read_info
from usgm.data.synth import recorded as rec
from usgm.data.synth.cli import main
from usgm.data.synth.corpus import corpus_is_current
from usgm.data.synth.voicepacks import DOWNLOAD_BYTES, PACKAGES

TINY = {"n_train": 2, "n_dev": 1, "n_test": 1, "seed": 0, "num_workers": 1}


@pytest.fixture
def no_voices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty voice cache and no ``apt-get`` on PATH (as on macOS or Fedora); the cache path."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("USGM_CACHE", str(cache))
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # workers start from sys.executable's full path
    assert rec.shutil.which("apt-get") is None
    return cache


def _fallback_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "recorded voices unavailable" in line]


def _stamp(root: Path) -> int:
    return (root / "DONE").stat().st_mtime_ns


def test_without_apt_get_builds_espeak_only_once_and_rebuilds_when_voices_arrive(
    tmp_path: Path, no_voices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "default_2mix"
    assert ensure_corpus(root, 2, 8000, TINY) == root
    lines = _fallback_lines(capsys.readouterr().err)
    assert lines == [
        "[usgm] recorded voices unavailable (apt-get not found): building eSpeak-only data; "
        "expect a lower real-speech score, see docs/default-data.md"
    ]
    info = read_info(root)
    assert info["recorded_fallback"] == {"reason": "apt-get not found", "requested_fraction": 1.0}
    assert info["options"]["recorded_fraction"] == 0.0 and not info["recorded_speakers"]
    with open(next((root / "wav8k/min/metadata").glob("*train-360_mix_both.csv"))) as fh:
        assert len(fh.readlines()) == 1 + 2

    stamp = _stamp(root)
    ensure_corpus(root, 2, 8000, TINY)  # still no apt-get: the same corpus, not rebuilt
    assert _stamp(root) == stamp
    assert "eSpeak-only data" in capsys.readouterr().err

    write_fake_packages(no_voices / "recorded" / "pkgs")  # the voices are on the machine now
    ensure_corpus(root, 2, 8000, TINY)
    info = read_info(root)
    assert info["recorded_fallback"] is None and info["recorded_speakers"]
    assert info["options"]["recorded_fraction"] == 1.0


def test_after_a_failed_download_the_fallback_is_kept_without_retrying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USGM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rec.shutil, "which", lambda name: f"/usr/bin/{name}")
    calls: list[list[str]] = []

    def offline(packages: list[str], cwd: Path) -> subprocess.CompletedProcess:
        calls.append(packages)
        return subprocess.CompletedProcess([], 100, "", "E: Unable to locate package drascula")

    monkeypatch.setattr(rec, "_apt_download", offline)
    root = tmp_path / "default_2mix"
    ensure_corpus(root, 2, 8000, TINY)
    (line,) = _fallback_lines(capsys.readouterr().err)
    assert "(apt-get download failed: E: Unable to locate package drascula)" in line
    assert calls == [list(PACKAGES)]
    stamp = _stamp(root)
    ensure_corpus(root, 2, 8000, TINY)  # no download attempt on every run
    assert calls == [list(PACKAGES)] and _stamp(root) == stamp


def test_an_explicit_request_for_recorded_voices_fails(
    tmp_path: Path, no_voices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "default_2mix"
    with pytest.raises(DataError, match="apt-get download"):
        ensure_corpus(root, 2, 8000, {**TINY, "require_recorded": True})
    with pytest.raises(DataError, match="recorded_dir"):
        ensure_corpus(root, 2, 8000, {**TINY, "recorded_dir": str(tmp_path / "nowhere")})
    assert not root.exists() and not list(tmp_path.glob("default_2mix.*"))
    assert not _fallback_lines(capsys.readouterr().err)


def _fallback_info(requested: float = 1.0, reason: str = "apt-get not found") -> dict:
    """What ``DONE`` of a tiny corpus built eSpeak-only for want of recorded voices reads."""
    return {
        "n_src": 2,
        "sample_rate": 8000,
        "counts": {"train-360": 2, "dev": 1, "test": 1},
        "seed": 0,
        "options": SynthOptions(recorded_fraction=0.0).to_dict(),
        "recorded_speakers": {},
        "recorded_catalogue": None,
        "recorded_fallback": {"reason": reason, "requested_fraction": requested},
    }


def test_when_a_fallback_corpus_counts_as_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_voices: Path
) -> None:
    info = _fallback_info()
    assert corpus_is_current(info, 2, 8000, TINY)
    assert corpus_is_current(info, 2, 8000, {**TINY, "recorded_fraction": 0.0})  # asked as is
    # Recorded voices asked for explicitly, or another share of them: rebuilt (and may fail).
    assert not corpus_is_current(info, 2, 8000, {**TINY, "require_recorded": True})
    assert not corpus_is_current(info, 2, 8000, {**TINY, "recorded_dir": str(tmp_path)})
    assert not corpus_is_current(info, 2, 8000, {**TINY, "recorded_fraction": 0.5})
    assert not corpus_is_current(info, 2, 8000, {**TINY, "codec": 0.0})  # other content
    assert not corpus_is_current(info, 2, 8000, {**TINY, "n_train": 3})
    # A failed download stays a reason while the voices are not on the machine.
    failed = _fallback_info(reason="apt-get download failed: E: no network")
    assert corpus_is_current(failed, 2, 8000, TINY)
    # apt-get appeared where it was missing: worth one more try.
    monkeypatch.setattr(rec.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert not corpus_is_current(info, 2, 8000, TINY)
    assert corpus_is_current(failed, 2, 8000, TINY)
    # The .deb files put into the cache by hand: the voices are here, rebuild with them.
    debs = no_voices / "recorded" / "debs"
    debs.mkdir(parents=True)
    for package in PACKAGES:
        (debs / f"{package}_1.0_all.deb").touch()
    assert not corpus_is_current(failed, 2, 8000, TINY)


def test_usgm_make_data_falls_back_in_one_line_unless_required(
    tmp_path: Path, no_voices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--n-train", "1", "--n-dev", "1", "--n-test", "1", "--num-workers", "1", "--quiet"]
    assert main(["--out", str(tmp_path / "required"), *argv, "--require-recorded"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("usgm-make-data: error: recorded speech")
    assert not (tmp_path / "required").exists()

    assert main(["--out", str(tmp_path / "ds"), *argv]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "ds")
    assert len(err.strip().splitlines()) == 1 and len(_fallback_lines(err)) == 1
    assert read_info(tmp_path / "ds")["recorded_fallback"]["reason"] == "apt-get not found"


def test_the_download_is_announced_with_its_size_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rec.shutil, "which", lambda name: f"/usr/bin/{name}")
    said: list[str] = []

    def download(packages: list[str], cwd: Path) -> subprocess.CompletedProcess:
        assert len(said) == 1  # told before anything is fetched
        return subprocess.CompletedProcess([], 100, "", "E: offline")

    monkeypatch.setattr(rec, "_apt_download", download)
    with pytest.raises(rec.RecordedUnavailable):
        rec.fetch(tmp_path / "cache", log=said.append)
    # 377,605,100 bytes: the sum of the Size fields of `apt-cache show` (Debian 12) of the eight.
    assert "8 Debian package(s) of recorded voices, 378 MB" in said[0]
    said.clear()
    with pytest.raises(rec.RecordedUnavailable):
        rec.fetch(tmp_path / "cache", ("drascula-spanish",), log=said.append)
    assert "1 Debian package(s) of recorded voices, 13 MB (drascula-spanish)" in said[0]
    assert set(DOWNLOAD_BYTES) == set(PACKAGES)  # a new package needs its size
