"""Builds the training objects from a composed Hydra config (no algorithms here)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from usgm.training.module import SeparationModule

log = logging.getLogger(__name__)

# One id per process: unique run directories even when two runs start in the same second.
_UID = uuid.uuid4().hex[:6]

# Keys of `data` that configure usgm itself rather than the DataModule constructor.
_DATA_META_KEYS = ("generate", "split")


def register_resolvers() -> None:
    """Registers the OmegaConf resolvers the configs use (idempotent)."""
    if not OmegaConf.has_resolver("usgm_uid"):
        OmegaConf.register_new_resolver("usgm_uid", lambda: _UID)


def to_plain(node: Any) -> Any:
    """DictConfig/ListConfig → plain Python containers (checkpoint-safe hyperparameters)."""
    if OmegaConf.is_config(node):  # resolve in place: interpolations may point outside node
        return OmegaConf.to_container(node, resolve=True)
    return node


_MODULE_KEYS = (
    "method",
    "net",
    "optimizer",
    "scheduler",
    "scheduler_start_epoch",
    "loss",
    "clip_grad_norm",
    "compile",
    "compile_dynamic",
    "compile_mode",
    "max_bad_steps",
)


def build_module(cfg: DictConfig) -> SeparationModule:
    """`cfg.model` (+ `cfg.data.sample_rate`) → :class:`SeparationModule`.

    A null `model.compile_dynamic` becomes true when `data.batch_seconds` is set.
    """
    m = cfg.model
    if "optim" in m:
        raise ValueError(
            "model.optim was replaced by model.optimizer, a Hydra _partial_ target "
            "(e.g. model.optimizer.lr=3e-4 or model.optimizer._target_=torch.optim.AdamW)"
        )
    unknown = sorted(set(m.keys()) - set(_MODULE_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} under model; expected {sorted(_MODULE_KEYS)}")
    kwargs = {k: to_plain(m[k]) for k in _MODULE_KEYS if k in m and k not in ("method", "net")}
    if kwargs.get("compile_dynamic") is None and cfg.data.get("batch_seconds") is not None:
        # Whole utterances batched by duration: a new (batch, time) shape nearly every step, so
        # compile with symbolic sizes from the start (one graph per mask net) instead of a
        # static graph for the first batch that the second batch already replaces.
        kwargs["compile_dynamic"] = True
    return SeparationModule(
        model=to_plain(m.net),
        method=m.method,
        sample_rate=int(cfg.data.sample_rate),
        **kwargs,
    )


def data_kwargs(data_cfg: DictConfig, seed: int = 0) -> dict[str, Any]:
    """The DataModule's constructor arguments: `cfg.data` minus usgm's own keys.

    A null `data.seed` takes the run's top-level `seed`.
    """
    kw = to_plain(data_cfg)
    for key in _DATA_META_KEYS:
        kw.pop(key, None)
    if kw.get("seed") is None:
        kw["seed"] = int(seed)
    return kw


def ensure_default_data(data_cfg: DictConfig) -> None:
    """Generates the default corpus at `data.root` when `data.generate` is set (one call).

    Missing or stale corpora are (re)built, current ones reused; the rules, and the eSpeak-only
    fallback where recorded voices cannot be had, are :func:`usgm.data.synth.ensure_corpus`'s.
    """
    gen = data_cfg.get("generate")
    if not gen:
        return
    from usgm.data.synth import ensure_corpus

    ensure_corpus(data_cfg.root, int(data_cfg.n_src), int(data_cfg.sample_rate), to_plain(gen))


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """Instantiates `cfg.data._target_` (LibriMixDataModule by default)."""
    kw = data_kwargs(cfg.data, seed=cfg.get("seed", 0))
    kw.setdefault("_target_", "usgm.data.datamodule.LibriMixDataModule")
    return hydra.utils.instantiate(kw, _convert_="all")


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_loggers(cfg: DictConfig) -> list[pl.loggers.Logger]:
    loggers: list[pl.loggers.Logger] = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if not isinstance(lg_cfg, DictConfig) or "_target_" not in lg_cfg:
            continue
        lg_cfg = OmegaConf.to_container(lg_cfg, resolve=True)
        if lg_cfg["_target_"].endswith("WandbLogger"):
            if lg_cfg.get("offline") == "auto":
                lg_cfg["offline"] = not _wandb_has_key()
                if lg_cfg["offline"]:
                    print("[usgm] W&B: no API key found, logging offline (`wandb sync` later).")
            Path(lg_cfg["save_dir"]).mkdir(parents=True, exist_ok=True)
        log.info("logger %s: %s", name, lg_cfg["_target_"])
        loggers.append(hydra.utils.instantiate(lg_cfg))
    return loggers


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks = []
    for _, cb_cfg in (cfg.get("callbacks") or {}).items():
        if isinstance(cb_cfg, DictConfig) and "_target_" in cb_cfg:
            callbacks.append(hydra.utils.instantiate(cb_cfg))
    return callbacks


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """`auto` → bf16-mixed on a GPU, 32 otherwise."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if gpu else "32"


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> pl.Trainer:
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    tcfg["precision"] = resolve_precision(tcfg.get("precision", "auto"), tcfg.get("accelerator"))
    if str(tcfg["precision"]).startswith("16"):
        # The step computes its gradients with torch.autograd.grad and combines them itself;
        # a float16 loss scaler would have to be threaded through every task gradient.
        raise ValueError(
            "trainer.precision=16-mixed is not supported (float16 needs a loss scaler that the "
            "two-task step does not use); use bf16-mixed or 32"
        )
    return hydra.utils.instantiate(tcfg, callbacks=callbacks, logger=loggers or False)
