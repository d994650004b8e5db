"""Every benchmark script runs in its --smoke mode (numbers are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_train_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "train_throughput.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "train_throughput.jsonl").read_text().splitlines()[-1])
    assert row["audio_s_per_s"] > 0 and row["method"] == "gm" and row["n_params"] > 0
    md = (out / "train_throughput.md").read_text().splitlines()[-1]
    assert md.startswith("| ") and "| usgm | gm | eager |" in md
