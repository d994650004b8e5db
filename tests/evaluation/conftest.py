"""Tiny models and checkpoints for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from usgm.models.presets import tiny_config

TINY = tiny_config(n_src=2)


def make_checkpoint(
    path: Path, method: str = "gm", n_src: int = 2, sample_rate: int = 8000, seed: int = 0
) -> torch.nn.Module:
    """Writes a Lightning-style checkpoint (spec format) of a tiny random model; returns it."""
    from usgm.models import build_model

    torch.manual_seed(seed)
    cfg = {**TINY, "n_src": n_src, "use_se": method != "ss_only"}
    model = build_model(cfg).eval()
    torch.save(
        {
            "epoch": 1,
            "global_step": 7,
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model": cfg, "method": method, "sample_rate": sample_rate},
            "optimizer_states": [],
        },
        path,
    )
    return model


@pytest.fixture
def tiny_ckpt(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """(path of a tiny 2-speaker gm checkpoint at 8 kHz, the model in it)."""
    path = tmp_path / "tiny.ckpt"
    return path, make_checkpoint(path)


@pytest.fixture
def checkpoint_factory():
    """``make_checkpoint(path, method=..., n_src=..., sample_rate=..., seed=...)``."""
    return make_checkpoint
