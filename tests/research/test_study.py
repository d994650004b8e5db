"""research/study/run_study.sh: the whole study chain dry-run on the CPU (tiny grid, model and
corpus; stand-in real speech): train → results.json, eval/<set>/final_metrics.json on the
real-speech set and the test split, usgm-compare's table; a rerun skips the finished runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "research" / "study" / "run_study.sh"


def _run(env: dict[str, str]) -> str:
    r = subprocess.run(
        ["bash", str(SCRIPT), "all"], env=env, capture_output=True, text=True, timeout=400
    )
    assert r.returncode == 0, f"run_study.sh failed:\n{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="bash script for the Linux device machine")
def test_study_chain_and_rerun_skips_finished_runs(tmp_path: Path, speech_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    out = tmp_path / "out"
    env = {
        **os.environ,
        "STUDY_TINY": "1",
        "STUDY_NO_INSTALL": "1",
        "PYTHON": sys.executable,
        "USGM_STUDY_DIR": str(sweep),
        "STUDY_DATA": str(tmp_path / "data"),
        "MIX_DIR": str(tmp_path / "mix"),
        "REAL_SMOKE_SPEECH": str(speech_dir),
        "OUT": str(out),
        "USGM_CACHE": str(tmp_path / "cache"),
        "REC_DIR": str(tmp_path / "no_rec"),
        "METHODS": "ss_only gm",
        "SEEDS": "1",
        "PARALLEL": "2",
        # eSpeak voices only: no recorded-speech bank on a CI machine
        "STUDY_OVERRIDES": "data.generate.recorded_fraction=0",
    }
    log = _run(env)
    assert "2 of 2 runs finished" in log
    runs = [sweep / "ss_only_s1", sweep / "gm_s1"]
    for run in runs:
        assert (run / "results.json").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        for s in ("real2mix_dev", "test"):
            assert (run / "eval" / s / "final_metrics.json").is_file(), (run, s)
    for name in ("summary.md", "summary.csv", "runs.csv", "study_files.tgz"):
        assert (out / name).is_file(), name
    table = (out / "summary.md").read_text()
    assert "real2mix_dev" in table and "gm" in table and "ss_only" in table
    trained = {r: (r / "driver.out").read_text().count("=== ") for r in runs}
    assert set(trained.values()) == {1}

    # Rerun (the next device call): nothing is trained or evaluated again.
    stamps = {r: (r / "results.json").stat().st_mtime_ns for r in runs}
    log = _run(env)
    assert "ss_only seed 1: done, skipped" in log and "gm seed 1: done, skipped" in log
    assert "evaluating" not in log
    for r in runs:
        assert (r / "driver.out").read_text().count("=== ") == 1
        assert (r / "results.json").stat().st_mtime_ns == stamps[r]


@pytest.mark.skipif(sys.platform != "linux", reason="bash script for the Linux device machine")
def test_run_stopped_at_the_deadline_resumes_from_its_last_checkpoint(
    tmp_path: Path, speech_dir: Path
) -> None:
    run = tmp_path / "sweep" / "gm_s1"
    env = {
        **os.environ,
        "STUDY_TINY": "1",
        "STUDY_NO_INSTALL": "1",
        "PYTHON": sys.executable,
        "USGM_STUDY_DIR": str(tmp_path / "sweep"),
        "STUDY_DATA": str(tmp_path / "data"),
        "OUT": str(tmp_path / "out"),
        "USGM_CACHE": str(tmp_path / "cache"),
        "REC_DIR": str(tmp_path / "no_rec"),
        "METHODS": "gm",
        "SEEDS": "1",
        "MIN_START_S": "1",
        "EVAL_TEST": "0",
        "MIX_DIR": str(tmp_path / "mix"),
        "REAL_SMOKE_SPEECH": str(speech_dir),
    }
    # Call 1: far more steps than the deadline allows → SIGTERM, last.ckpt, no results.json.
    r = subprocess.run(
        ["bash", str(SCRIPT), "train"],
        env={
            **env,
            "DEADLINE_S": "25",
            "STUDY_OVERRIDES": "data.generate.recorded_fraction=0 trainer.max_steps=100000",
        },
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "gm seed 1: stopped at the deadline" in r.stdout
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "results.json").exists()
    # Call 2 (a budget the checkpoint already passed, so it ends at once): resumes from its own
    # last.ckpt, finishes, and is evaluated.
    r = subprocess.run(
        ["bash", str(SCRIPT), "all"],
        env={**env, "STUDY_OVERRIDES": "data.generate.recorded_fraction=0 trainer.max_steps=1"},
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = (run / "driver.out").read_text()
    assert "ckpt_path=last: resuming from" in out and str(run / "checkpoints" / "last.ckpt") in out
    assert (run / "results.json").is_file()
    assert (run / "eval" / "real2mix_dev" / "final_metrics.json").is_file()
