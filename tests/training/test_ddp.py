"""DDP (2 CPU processes, gloo) equals one process over the concatenated batches, step by step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ddp_gm_equivalence.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def _single_and_ddp(tmp_path: Path, *extra: str) -> tuple[dict, dict, dict]:
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    p1 = _run("--mode", "single", *extra, "--out", str(single), cwd=tmp_path)
    assert p1.returncode == 0, p1.stderr[-3000:]
    p2 = _run("--mode", "ddp", "--devices", "2", *extra, "--out", str(ddp), cwd=tmp_path)
    assert p2.returncode == 0, p2.stderr[-3000:]
    # Several steps: float reordering between one and two processes grows a little per step.
    p3 = _run("--compare", str(single), str(ddp), "--atol", "1e-4", cwd=tmp_path)
    return _last_json(p1), _last_json(p2), {"rc": p3.returncode, **_last_json(p3)}


@pytest.mark.parametrize("method", ["gm", "mtl", "pcgrad"])
def test_ddp_steps_equal_single_process_steps(method: str, tmp_path: Path) -> None:
    single, ddp, cmp = _single_and_ddp(tmp_path, "--method", method, "--steps", "3", "--lr", "0.05")
    assert cmp["rc"] == 0 and cmp["equal_within_tolerance"], cmp
    assert single["global_step"] == ddp["global_step"] == 3
    assert single["changed_tensors"] > 0


def test_threshold_mean_is_global_under_ddp(tmp_path: Path) -> None:
    """One kept utterance of four: on one rank only. A per-rank mean would double its weight."""
    single, ddp, cmp = _single_and_ddp(
        tmp_path, "--steps", "2", "--threshold", "auto", "--lr", "0.05"
    )
    assert cmp["rc"] == 0 and cmp["equal_within_tolerance"], cmp
    assert single["changed_tensors"] > 0 and ddp["changed_tensors"] > 0


def test_step_with_no_kept_utterance_is_skipped_on_every_rank(tmp_path: Path) -> None:
    single, ddp, cmp = _single_and_ddp(tmp_path, "--steps", "2", "--threshold", "-200")
    assert cmp["rc"] == 0 and cmp["equal_within_tolerance"], cmp
    assert single["changed_tensors"] == ddp["changed_tensors"] == 0  # nothing learned, no g_SE
    assert single["global_step"] == ddp["global_step"] == 2  # skipped steps still count


def test_naive_per_rank_combination_differs(tmp_path: Path) -> None:
    """Negative control: combining per rank and then averaging is not the global GM step."""
    single, naive = tmp_path / "single.pt", tmp_path / "naive.pt"
    assert _run("--mode", "single", "--out", str(single), cwd=tmp_path).returncode == 0
    p = _run("--mode", "ddp", "--devices", "2", "--naive", "--out", str(naive), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    p3 = _run("--compare", str(single), str(naive), cwd=tmp_path)
    assert p3.returncode == 1 and not _last_json(p3)["equal_within_tolerance"]
