"""The training job behind `train.py`: data → fit → test → printed results."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from usgm.data.errors import DataError
from usgm.training import factory


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


log = logging.getLogger(__name__)


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

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_float_metrics(trainer.callback_metrics))

    ckpt_cb = _checkpoint_callback(trainer)
    best = ckpt_cb.best_model_path if ckpt_cb and ckpt_cb.best_model_path else None
    if best and not Path(best).exists():
        # A resumed run restores the best path of the run it came from, which top-k may have
        # deleted since; test the last weights instead.
        log.warning("best checkpoint %s no longer exists; testing the current weights", best)
        best = None
    if cfg.get("test", True):
        test_ckpt = best or (None if cfg.get("train", True) else cfg.get("ckpt_path"))
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
