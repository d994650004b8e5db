"""SIGTERM, `ckpt_path=last` and resuming the same data stream, through real `train.py` runs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 6  # 6 training mixtures, batch 1

# Sends this process a real SIGTERM after a given optimizer step: the stop then lands at a known,
# mid-epoch step, through Lightning's own signal handler, as a scheduler's SIGTERM would.
SIGTERM_HELPER = """
import os
import signal

import lightning.pytorch as pl


class SigtermAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
"""


def _cmd(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=libri2mix_gm",
        "debug=smoke",
        f"data.root={root}",
        "data.batch_size=1",
        "data.max_train=6",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=1",
        "trainer.max_epochs=1000",
        "trainer.enable_progress_bar=false",
        "callbacks.last_checkpoint.every_n_train_steps=0",  # only the SIGTERM and epoch-end saves
        "logger.csv.flush_logs_every_n_steps=1",
        "test=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "USGM_ROOT": str(tmp_path), "PYTHONPATH": path}


def _run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )


def _losses(run_dir: Path) -> dict[int, str]:
    """Per-step training loss as logged (strings: compared exactly)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return {int(r["step"]): r["train/loss_ss"] for r in csv.DictReader(f) if r["train/loss_ss"]}


def test_sigterm_saves_and_resume_continues_the_same_stream(tiny_2mix: Path, tmp_path: Path):
    (tmp_path / "sigterm_helper.py").write_text(SIGTERM_HELPER)
    run = tmp_path / "run"
    stop = STEPS_PER_EPOCH + 2  # mid-way through the second epoch
    killed = _run(
        _cmd(
            tiny_2mix,
            run,
            "trainer.max_steps=1000",
            "+callbacks.sigterm._target_=sigterm_helper.SigtermAt",
            f"+callbacks.sigterm.step={stop}",
        ),
        tmp_path,
    )
    last = run / "checkpoints" / "last.ckpt"
    assert killed.returncode == 143, killed.stderr[-3000:]
    assert f"usgm: stopped by SIGTERM at step {stop}; saved {last}" in killed.stderr
    assert "Traceback" not in killed.stderr
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == stop
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 2}
    ]
    before = _losses(run)
    assert sorted(before) == list(range(stop))

    # The uninterrupted reference, and the resume in the same run directory.
    total = stop + STEPS_PER_EPOCH  # past the next epoch boundary too
    ref = _run(_cmd(tiny_2mix, tmp_path / "ref", f"trainer.max_steps={total}"), tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    resumed = _run(_cmd(tiny_2mix, run, f"trainer.max_steps={total}", "ckpt_path=last"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr

    expected = _losses(tmp_path / "ref")
    assert sorted(expected) == list(range(total))
    after = _losses(run)
    assert {k: after[k] for k in before} == before, "rows logged before the SIGTERM were lost"
    assert after == expected  # same batches, same crops, same weights: the same losses


@pytest.mark.parametrize("whole_group", [False, True], ids=["main-process", "process-group"])
def test_external_sigterm_mid_training(tiny_2mix: Path, tmp_path: Path, whole_group: bool) -> None:
    """A SIGTERM from outside (as a scheduler sends) at an arbitrary moment.

    ``process-group``: with DataLoader workers, the signal goes to every process of the group,
    as SLURM (all processes of a job step) and coreutils ``timeout`` send it. A worker killed by
    it must not turn the stop into a crash before the checkpoint is saved.
    """
    run = tmp_path / "run"
    extra = ["data.num_workers=2"] if whole_group else []
    proc = subprocess.Popen(
        _cmd(tiny_2mix, run, "trainer.max_steps=100000", *extra),
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=whole_group,  # its own process group, which the test then signals
    )
    metrics = run / "csv" / "metrics.csv"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) > 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        if whole_group:
            time.sleep(0.5)  # the workers are up by now (rows were logged)
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    step = state["global_step"]
    assert step >= 3 and f"stopped by SIGTERM at step {step};" in err
