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


def build_module(cfg: DictConfig) -> SeparationModule:
    """`cfg.model` (+ `cfg.data.sample_rate`) → :class:`SeparationModule`."""
    m = cfg.model
    known = {"method", "net", "optim", "scheduler", "loss", "clip_grad_norm"}
    unknown = sorted(set(m.keys()) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} under model; expected {sorted(known)}")
    return SeparationModule(
        model=to_plain(m.net),
        method=m.method,
        sample_rate=int(cfg.data.sample_rate),
        optim=to_plain(m.get("optim")),
        scheduler=to_plain(m.get("scheduler")),
        loss=to_plain(m.get("loss")),
        clip_grad_norm=m.get("clip_grad_norm"),
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


def _build_matches(info: dict[str, Any] | None, data_cfg: DictConfig) -> bool:
    """Was the corpus at `data.root` built with the generator settings now requested?"""
    import dataclasses
    import inspect
    import json

    from usgm.data.synth import SynthOptions, make_dataset
    from usgm.data.synth.options import ADDED_LATER
    from usgm.data.synth.recorded import catalogue_key

    if not info:
        return False
    gen = dict(to_plain(data_cfg.generate))
    # Counts and seed left out of the config take make_dataset's defaults (one source of truth).
    defaults = {k: v.default for k, v in inspect.signature(make_dataset).parameters.items()}
    counts = {
        "train-360": gen.pop("n_train", defaults["n_train"]),
        "dev": gen.pop("n_dev", defaults["n_dev"]),
        "test": gen.pop("n_test", defaults["n_test"]),
    }
    seed = gen.pop("seed", defaults["seed"])
    for where in ("num_workers", "recorded_dir", "cache_dir"):  # locations, not content
        gen.pop(where, None)
    options = json.loads(json.dumps(dataclasses.asdict(SynthOptions(**gen))))
    # A corpus written before an option existed was built with that option's neutral value.
    built = json.loads(json.dumps({**ADDED_LATER, **(info.get("options") or {})}))
    # A corpus with recorded voices is stale once the voice catalogue changed.
    recorded = bool(info.get("recorded_speakers"))
    return (
        (not recorded or info.get("recorded_catalogue") == catalogue_key())
        and info.get("n_src") == int(data_cfg.n_src)
        and info.get("sample_rate") == int(data_cfg.sample_rate)
        and info.get("counts") == counts
        and info.get("seed") == seed
        and built == options
    )


def ensure_default_data(data_cfg: DictConfig) -> None:
    """Generates the default corpus when `data.generate` is set and it is missing or stale.

    A corpus usgm generated earlier with other settings (an older generator's options, other
    counts) is rebuilt in place; a folder that usgm did not generate is never touched.
    """
    gen = data_cfg.get("generate")
    if not gen:
        return
    from usgm.data.synth import is_complete, make_dataset, read_info

    root = Path(data_cfg.root)
    overwrite = False
    if is_complete(root):
        if _build_matches(read_info(root), data_cfg):
            return
        print(f"[usgm] {root} was generated with other settings: rebuilding it.")
        overwrite = True
    else:
        log.info("No dataset at %s: generating the default corpus once.", root)
        print(
            f"[usgm] generating the default dataset into {root} (one-time; 2-3 minutes on"
            " 2 cores with the default options) ..."
        )
    make_dataset(
        root,
        n_src=int(data_cfg.n_src),
        sample_rate=int(data_cfg.sample_rate),
        overwrite=overwrite,
        **to_plain(gen),
    )


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
    if str(tcfg["precision"]).startswith("16") and cfg.model.method in ("gm", "gm_released"):
        raise ValueError(
            "trainer.precision=16-mixed is not supported with GM (its loss scaler scales g_SS but "
            "not g_SE); use bf16-mixed or 32"
        )
    return hydra.utils.instantiate(tcfg, callbacks=callbacks, logger=loggers or False)
