"""A DDP run (2 CPU processes, gloo) killed mid-epoch resumes from last.ckpt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _cmd(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=libri2mix_gm",
        "debug=smoke",
        "trainer=ddp_cpu",
        "trainer.devices=2",  # debug=smoke sets 1 device; the point here is two processes
        f"data.root={root}",
        "data.batch_size=1",  # 6 mixtures / 2 ranks → 3 steps per epoch
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=1",
        "trainer.max_epochs=1000",
        "trainer.enable_progress_bar=false",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "test=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def test_killed_ddp_run_resumes_from_last(tiny_2mix: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "USGM_ROOT": str(tmp_path)}
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        _cmd(tiny_2mix, run_dir, "trainer.max_steps=100000"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert last.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else ""
        time.sleep(0.5)  # let the write finish
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown: like a node failure
        proc.wait()

    killed = torch.load(last, weights_only=True, map_location="cpu")
    step = killed["global_step"]
    assert step >= 2 and killed["optimizer_states"]

    resumed_dir = tmp_path / "resumed"
    done = subprocess.run(
        _cmd(tiny_2mix, resumed_dir, f"trainer.max_steps={step + 3}", f"ckpt_path={last}"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr  # really two processes
    final = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == step + 3


def test_sigterm_to_every_ddp_rank_saves_and_exits_143(tiny_2mix: Path, tmp_path: Path) -> None:
    """SLURM signals every task: no hang, one checkpoint at the step reached, exit 143."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "USGM_ROOT": str(tmp_path)}
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        _cmd(tiny_2mix, run_dir, "trainer.max_steps=100000"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert last.exists(), proc.stderr.read()[-3000:] if proc.poll() is not None else ""
        os.killpg(proc.pid, signal.SIGTERM)  # both ranks, as the scheduler does
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    step = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    assert step >= 2
    assert err.count(f"usgm: stopped by SIGTERM at step {step}; saved {last}") == 1  # rank 0 only
