"""W&B (offline without a key), TensorBoard and CSV loggers get metrics, GM telemetry, audio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_many_loggers_offline(tiny_2mix: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(USGM_ROOT=str(tmp_path), NETRC=str(tmp_path / "no-netrc"))
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=libri2mix_gm",
            "debug=smoke",
            "logger=many_loggers",
            f"data.root={tiny_2mix}",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logging offline" in proc.stdout

    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    media = offline[0] / "files" / "media"
    assert list(media.glob("audio/val_examples/**/*.wav"))
    assert list(media.glob("images/val_examples/**/*.png"))

    tags: dict[str, list[str]] = {"scalars": [], "audio": [], "images": []}
    for f in (run / "tensorboard").glob("events.*"):
        acc = EventAccumulator(str(f), size_guidance={"audio": 0, "images": 0})
        acc.Reload()
        for kind in tags:
            tags[kind] += acc.Tags()[kind]
    for key in ("train/loss_ss", "train/loss_se", "train/si_snr", "train/lr", "val/si_snri"):
        assert key in tags["scalars"]
    for key in (
        "gm/encoder_conflict_frac",
        "gm/encoder_cosine",
        "gm/se_conflict_frac",
        "gm/se_cosine",
    ):
        assert key in tags["scalars"]
    assert "val_examples/0/mixture" in tags["audio"] and "val_examples/0/est2" in tags["audio"]
    assert "val_examples/0/spectrogram" in tags["images"]
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_ss", "val/si_snri", "gm/se_conflict_frac"} <= set(header)
