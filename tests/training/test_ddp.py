"""GM under DDP (2 CPU processes, gloo) equals GM on one process over the concatenated batch."""

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


@pytest.mark.parametrize("method", ["gm", "mtl"])
def test_ddp_step_equals_single_process_step(method: str, tmp_path: Path) -> None:
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    p1 = _run("--mode", "single", "--method", method, "--out", str(single), cwd=tmp_path)
    assert p1.returncode == 0, p1.stderr[-3000:]
    p2 = _run(
        "--mode", "ddp", "--devices", "2", "--method", method, "--out", str(ddp), cwd=tmp_path
    )
    assert p2.returncode == 0, p2.stderr[-3000:]
    p3 = _run("--compare", str(single), str(ddp), cwd=tmp_path)
    result = json.loads(p3.stdout.strip().splitlines()[-1])
    assert p3.returncode == 0 and result["equal_within_tolerance"], result


def test_naive_per_rank_projection_differs(tmp_path: Path) -> None:
    """Negative control: without the g_SE all-reduce the DDP step is not the global GM step."""
    single, naive = tmp_path / "single.pt", tmp_path / "naive.pt"
    assert _run("--mode", "single", "--out", str(single), cwd=tmp_path).returncode == 0
    p = _run("--mode", "ddp", "--devices", "2", "--naive", "--out", str(naive), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    p3 = _run("--compare", str(single), str(naive), cwd=tmp_path)
    assert (
        p3.returncode == 1
        and not json.loads(p3.stdout.strip().splitlines()[-1])["equal_within_tolerance"]
    )
