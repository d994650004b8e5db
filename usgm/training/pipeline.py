"""The training job behind `train.py`: data → fit → test → printed results."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from usgm.data.errors import DataError
from usgm.training import factory
from usgm.training.callbacks import LastCheckpoint


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


class Preempted(RuntimeError):
    """Training stopped on SIGTERM; the message says where the checkpoint was saved.

    Attributes:
        report: whether this process should print the message (global rank 0 only).
    """

    def __init__(self, message: str, report: bool = True) -> None:
        super().__init__(message)
        self.report = report


log = logging.getLogger(__name__)

# Hands the checkpoint that `ckpt_path=last` resolved to from DDP rank 0 to the ranks it starts
# (they re-run train.py with the same overrides): they must resume from the same file even if
# another run writes a newer one meanwhile. Value: "<run directory>\n<checkpoint>".
_RESOLVED_ENV = "USGM_RESOLVED_CKPT_PATH"


def _run_checkpoints(run_dir: Path) -> list[Path]:
    """Resumable checkpoints a run directory holds: last.ckpt and Lightning's SLURM hpc_ckpt."""
    found = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    return [p for p in found if p.is_file()]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`cfg.ckpt_path` → the checkpoint file to resume from (None: start fresh).

    ``last`` means the run directory's own newest checkpoint when ``hydra.run.dir`` names an
    existing run, otherwise the newest ``last.ckpt`` of an earlier run of the same experiment
    (``<paths.log_dir>/<task_name>/runs/*``); with neither it is an error, not a fresh start.

    Raises:
        ConfigError: ``last`` found nothing.
    """
    value = cfg.get("ckpt_path")
    if value in (None, ""):
        return None
    if str(value) != "last":
        return str(value)
    out_dir = Path(cfg.paths.output_dir).resolve()
    handed = os.environ.get(_RESOLVED_ENV, "").split("\n")
    if len(handed) == 2 and handed[0] == str(out_dir):
        return handed[1]
    own = _run_checkpoints(out_dir)
    runs = Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs"
    candidates = own or [
        p
        for p in runs.glob("*/checkpoints/last.ckpt")
        if p.is_file() and p.parents[1].resolve() != out_dir
    ]
    if not candidates:
        raise ConfigError(
            f"ckpt_path=last: no checkpoint in this run directory ({out_dir}) nor in any earlier "
            f"run of '{cfg.task_name}' under {runs}; give a checkpoint file or leave ckpt_path "
            "unset to start from scratch"
        )
    path = str(max(candidates, key=lambda p: p.stat().st_mtime).resolve())
    os.environ[_RESOLVED_ENV] = f"{out_dir}\n{path}"
    log.info("ckpt_path=last: resuming from %s", path)
    return path


def check_checkpoint(path: str, module: pl.LightningModule) -> None:
    """Refuses a checkpoint that training cannot resume from, with one clear line.

    Raises:
        ConfigError: missing, unreadable or truncated, not a training checkpoint, or made for
            another model (e.g. 3 speakers for a 2-speaker experiment).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"ckpt_path={path}: no such checkpoint file")
    try:
        # mmap: the tensors are not read into memory just for this check.
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a damaged zip or pickle
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"ckpt_path={path}: not a readable checkpoint (truncated or corrupt?): {reason}"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"ckpt_path={path}: not a Lightning training checkpoint")
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise ConfigError(
            f"ckpt_path={path}: holds weights only, no training state to resume; use a "
            "run's checkpoints/last.ckpt"
        )
    ours = module.state_dict()
    theirs = ckpt["state_dict"]
    bad = sorted(set(ours) ^ set(theirs)) or [
        k for k in ours if tuple(ours[k].shape) != tuple(theirs[k].shape)
    ]
    if bad:
        saved = ckpt.get("hyper_parameters") or {}
        want = dict(module.hparams)
        diffs = [
            f"{name} {got!r} (this run: {exp!r})"
            for name, got, exp in (
                ("method", saved.get("method"), want.get("method")),
                (
                    "n_src",
                    (saved.get("model") or {}).get("n_src"),
                    (want.get("model") or {}).get("n_src"),
                ),
            )
            if got != exp
        ]
        what = ", ".join(diffs) if diffs else f"parameter {bad[0]} differs"
        raise ConfigError(
            f"ckpt_path={path}: made for another model ({what}); resume it with the "
            "experiment and model settings it was trained with"
        )


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _checkpoint_callback(trainer: pl.Trainer) -> pl.callbacks.ModelCheckpoint | None:
    """The checkpoint callback that tracks the best model (the monitored one, if any)."""
    found = [cb for cb in trainer.callbacks if isinstance(cb, pl.callbacks.ModelCheckpoint)]
    monitored = [cb for cb in found if cb.monitor]
    return (monitored or found or [None])[0]


def train(cfg: DictConfig) -> dict[str, float]:
    """Runs one training job from a composed config and returns the test (or last) metrics.

    Writes ``results.json`` (metrics + paths) into ``cfg.paths.output_dir``.
    """
    factory.register_resolvers()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True)

    factory.ensure_default_data(cfg.data)
    try:
        datamodule = factory.build_datamodule(cfg)
        module = factory.build_module(cfg)
    except ValueError as err:  # a bad config value; DataError (bad files) passes through as is
        if isinstance(err, DataError):
            raise
        raise ConfigError(str(err)) from err
    callbacks = factory.build_callbacks(cfg)
    loggers = factory.build_loggers(cfg)
    try:
        trainer = factory.build_trainer(cfg, callbacks, loggers)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    for lg in loggers:
        lg.log_hyperparams(
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "n_parameters": sum(p.numel() for p in module.parameters()),
            }
        )

    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None and cfg.get("train", True):
        check_checkpoint(ckpt_path, module)

    try:
        return _fit_and_test(cfg, trainer, module, datamodule, ckpt_path)
    except SIGTERMException as err:  # a SystemExit(None) from Lightning: it would exit 0
        raise _preempted(trainer) from err


def _preempted(trainer: pl.Trainer) -> Preempted:
    """The one-line report of a SIGTERM stop: the step and the checkpoint saved for it."""
    saver = next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
    if saver is not None and saver.preempted is not None:
        path, step = saver.preempted
        msg = (
            f"stopped by SIGTERM at step {step}; saved {path} "
            f"(resume: ckpt_path={path}, or ckpt_path=last)"
        )
    elif saver is not None and saver.path.is_file():
        msg = f"stopped by SIGTERM after training; last checkpoint {saver.path}"
    else:
        msg = f"stopped by SIGTERM at step {trainer.global_step}; nothing saved (no LastCheckpoint)"
    return Preempted(msg, report=trainer.is_global_zero)


def _fit_and_test(
    cfg: DictConfig,
    trainer: pl.Trainer,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    ckpt_path: str | None,
) -> dict[str, float]:
    out_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(_float_metrics(trainer.callback_metrics))

    ckpt_cb = _checkpoint_callback(trainer)
    best = ckpt_cb.best_model_path if ckpt_cb and ckpt_cb.best_model_path else None
    if best and not Path(best).exists():
        # A resumed run restores the best path of the run it came from, which top-k may have
        # deleted since; test the last weights instead.
        log.warning("best checkpoint %s no longer exists; testing the current weights", best)
        best = None
    if cfg.get("test", True):
        test_ckpt = best or (None if cfg.get("train", True) else ckpt_path)
        if cfg.get("train", True) and test_ckpt is None:
            log.warning("no best checkpoint found; testing the current weights")
        results = trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False)
        if results:
            metrics.update(_float_metrics(results[0]))

    summary = {
        "metrics": metrics,
        "method": module.method,
        "n_parameters": sum(p.numel() for p in module.parameters()),
        "output_dir": str(out_dir),
        "best_checkpoint": best,
        "last_checkpoint": str(Path(ckpt_cb.dirpath) / "last.ckpt")
        if ckpt_cb and ckpt_cb.dirpath and (Path(ckpt_cb.dirpath) / "last.ckpt").exists()
        else None,
        "data_root": str(cfg.data.root),
        "resumed_from": ckpt_path if cfg.get("train", True) else None,
    }
    if trainer.is_global_zero:
        (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
        _print_summary(summary)
    return metrics


def _print_summary(summary: dict[str, Any]) -> None:
    m = summary["metrics"]
    print("\n" + "=" * 64)
    print(f"usgm results ({summary['method']}, {summary['n_parameters'] / 1e6:.2f} M parameters)")
    for key in ("test/si_snr", "test/si_snri", "val/si_snr", "val/si_snri"):
        if key in m and not math.isnan(m[key]):
            print(f"  {key:<14s} {m[key]:8.2f} dB")
    print(f"  run directory   {summary['output_dir']}")
    print(f"  best checkpoint {summary['best_checkpoint']}")
    print(f"  last checkpoint {summary['last_checkpoint']}")
    print(f"  results         {Path(summary['output_dir']) / 'results.json'}")
    print("=" * 64)
