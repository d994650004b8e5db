"""train.py and the Hydra config tree: composition, smoke runs, sweeps, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from usgm.training.factory import register_resolvers
from usgm.training.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(
    p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("_")
)


def _compose(overrides: list[str]):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def _smoke_cfg(experiment: str, root: Path, out: Path):
    cfg = _compose([f"experiment={experiment}", "debug=smoke", f"data.root={root}", "logger=csv"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        # The tiny corpora are already generated; the `default*` experiments' own `generate`
        # settings would rebuild them in place at full size (minutes, and gigabytes in /tmp).
        cfg.data.generate = None
    return cfg


def _n_rows(root: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in root.rglob("*.csv"))


def test_expected_experiments_exist() -> None:
    names = set(EXPERIMENTS)
    for n in (2, 3):
        for m in ("ss_only", "mtl", "gm", "gm_released", "dprnn_gm"):
            assert f"libri{n}mix_{m}" in names
    assert "default" in names


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment: str) -> None:
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.model.method in ("ss_only", "mtl", "gm", "gm_released")
    assert cfg.data.n_src in (2, 3)
    if experiment.startswith("libri3mix"):
        assert cfg.data.n_src == 3 and cfg.data.root.endswith("Libri3Mix")
    if "dprnn" in experiment:
        assert cfg.model.net.backbone == "dprnn"
    if experiment.endswith(("_mtl", "_gm_released", "_ss_only")):
        assert cfg.model.method == experiment.split("mix_", 1)[1]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_smoke_run(experiment: str, tiny_2mix, tiny_3mix, tmp_path) -> None:
    n_src = int(_compose([f"experiment={experiment}"]).data.n_src)
    root = tiny_3mix if n_src == 3 else tiny_2mix
    cfg = _smoke_cfg(experiment, root, tmp_path)
    rows = _n_rows(root)
    metrics = train(cfg)
    assert _n_rows(root) == rows, "the shared tiny corpus was rebuilt"
    assert "test/si_snri" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["method"] == cfg.model.method
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["method"] == cfg.model.method
    assert ckpt["hyper_parameters"]["model"]["n_src"] == n_src


def test_resume_from_last_checkpoint(tiny_2mix, tmp_path) -> None:
    first = _smoke_cfg("libri2mix_gm", tiny_2mix, tmp_path / "a")
    train(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == 2 and state["optimizer_states"] and state["lr_schedulers"]

    for ckpt in (tmp_path / "a" / "checkpoints").glob("epoch*.ckpt"):
        ckpt.unlink()  # as top-k pruning would: the restored best path must not break testing
    second = _smoke_cfg("libri2mix_gm", tiny_2mix, tmp_path / "b")
    with open_dict(second):
        second.ckpt_path = str(last)
        second.trainer.max_steps = 4
        second.trainer.max_epochs = 3
    metrics = train(second)
    assert "test/si_snri" in metrics
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4
    assert resumed["epoch"] > state["epoch"]


def _run(args: list[str], cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "USGM_ROOT": str(cwd), "WANDB_MODE": "offline", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_single_run_prints_results(tiny_2mix, tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = _run(
        [
            "experiment=libri2mix_gm",
            "debug=smoke",
            f"data.root={tiny_2mix}",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/si_snri" in proc.stdout and str(run_dir) in proc.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_cli_multirun_sweep_separate_dirs(tiny_2mix, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = _run(
        [
            "-m",
            "experiment=libri2mix_ss_only,libri2mix_gm",
            "seed=1,2",
            "debug=smoke",
            f"data.root={tiny_2mix}",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(sweep.glob("*/results.json"))
    assert len(results) == 4
    methods = sorted(json.loads(r.read_text())["method"] for r in results)
    assert methods == ["gm", "gm", "ss_only", "ss_only"]


def test_ablation_search_config_composes() -> None:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=ablation"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params.experiment.split(",")) == {
        "libri2mix_ss_only",
        "libri2mix_mtl",
        "libri2mix_gm",
        "libri2mix_gm_released",
    }
    assert params.seed == "1,2,3"


def test_missing_data_root_is_a_clear_error(tmp_path) -> None:
    cfg = _smoke_cfg("libri2mix_gm", tmp_path / "nowhere" / "Libri2Mix", tmp_path / "out")
    with pytest.raises(ValueError, match="nowhere"):
        train(cfg)


def test_runs_started_together_get_distinct_dirs(tmp_path) -> None:
    """Two runs started in the same second never share a run directory."""
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "--cfg",
        "all",
        "--resolve",
        "-p",
        "hydra.run.dir",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(d.startswith("./logs/default/runs/") for d in dirs)
    assert dirs[0] != dirs[1]


def test_cli_bad_config_value_is_one_clear_line(tiny_2mix, tmp_path) -> None:
    proc = _run(
        ["experiment=libri2mix_gm", "debug=smoke", f"data.root={tiny_2mix}", "model.method=nope"],
        tmp_path,
    )
    assert proc.returncode == 1
    assert "usgm: error: model.method='nope'" in proc.stderr and "Traceback" not in proc.stderr
