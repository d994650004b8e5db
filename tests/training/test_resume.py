"""`ckpt_path`: `last` finds the right checkpoint or fails clearly; bad files are one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from usgm.training import factory
from usgm.training.pipeline import ConfigError, check_checkpoint, resolve_ckpt_path, train

ROOT = Path(__file__).resolve().parents[2]


def _cfg(experiment: str, root: Path, out: Path, *overrides: str):
    factory.register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={experiment}", "debug=smoke", f"data.root={root}", *overrides],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.log_dir = str(out.parents[2])  # out = <log_dir>/<task>/runs/<run>
        cfg.data.generate = None
    return cfg


def _touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture(autouse=True)
def _no_handoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USGM_RESOLVED_CKPT_PATH", raising=False)


def test_last_prefers_own_run_then_newest_run_of_the_experiment(tiny_2mix, tmp_path) -> None:
    runs = tmp_path / "logs" / "smoke" / "runs"
    now = time.time()
    older = _touch(runs / "a" / "checkpoints" / "last.ckpt", now - 300)
    newer = _touch(runs / "b" / "checkpoints" / "last.ckpt", now - 100)
    _touch(tmp_path / "logs" / "other" / "runs" / "c" / "checkpoints" / "last.ckpt", now)

    fresh = _cfg("libri2mix_gm", tiny_2mix, runs / "new", "ckpt_path=last")
    assert resolve_ckpt_path(fresh) == str(newer.resolve())  # not the other experiment's

    os.environ.pop("USGM_RESOLVED_CKPT_PATH")
    own = _cfg("libri2mix_gm", tiny_2mix, runs / "a", "ckpt_path=last")
    assert resolve_ckpt_path(own) == str(older.resolve())  # hydra.run.dir named run a


def test_last_hands_its_choice_to_the_ranks_it_starts(tiny_2mix, tmp_path) -> None:
    runs = tmp_path / "logs" / "smoke" / "runs"
    first = _touch(runs / "a" / "checkpoints" / "last.ckpt", time.time() - 100)
    cfg = _cfg("libri2mix_gm", tiny_2mix, runs / "new", "ckpt_path=last")
    assert resolve_ckpt_path(cfg) == str(first.resolve())
    _touch(runs / "b" / "checkpoints" / "last.ckpt", time.time())  # a concurrent run saves
    assert resolve_ckpt_path(cfg) == str(first.resolve())  # what a DDP child process sees


def test_last_with_nothing_to_resume_is_an_error(tiny_2mix, tmp_path) -> None:
    cfg = _cfg("libri2mix_gm", tiny_2mix, tmp_path / "logs" / "smoke" / "runs" / "new")
    with open_dict(cfg):
        cfg.ckpt_path = "last"
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no checkpoint .* 'smoke'"):
        train(cfg)


def test_bad_checkpoints_are_refused_clearly(tiny_2mix, tiny_3mix, tmp_path) -> None:
    three = _cfg(
        "libri3mix_gm", tiny_3mix, tmp_path / "l" / "smoke" / "runs" / "three", "test=false"
    )
    train(three)
    ckpt3 = tmp_path / "l" / "smoke" / "runs" / "three" / "checkpoints" / "last.ckpt"
    module2 = factory.build_module(
        _cfg("libri2mix_gm", tiny_2mix, tmp_path / "x" / "y" / "z" / "w")
    )

    with pytest.raises(ConfigError, match=r"made for another model \(n_src 3 \(this run: 2\)\)"):
        check_checkpoint(str(ckpt3), module2)
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        check_checkpoint(str(tmp_path / "missing.ckpt"), module2)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt3.read_bytes()[: ckpt3.stat().st_size // 2])
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        check_checkpoint(str(truncated), module2)

    # Through train.py: one line, exit 1, no traceback.
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=libri2mix_gm",
            "debug=smoke",
            f"data.root={tiny_2mix}",
            f"ckpt_path={ckpt3}",
            f"hydra.run.dir={tmp_path / 'cli'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "USGM_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert f"usgm: error: ckpt_path={ckpt3}: made for another model" in proc.stderr
    assert "Traceback" not in proc.stderr
