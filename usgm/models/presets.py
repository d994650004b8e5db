"""Named model sizes (plain dicts for :func:`usgm.models.build_model`)."""

from __future__ import annotations

from typing import Any

# Milliseconds per step on a CPU: for tests, smoke runs and benchmark --smoke modes.
TINY: dict[str, Any] = {
    "n_filters": 16,
    "kernel_size": 16,
    "stride": 8,
    "chunk_size": 10,
    "d_model": 16,
    "n_heads": 2,
    "d_ffn": 32,
    "dropout": 0.0,
    "rnn_hidden": 8,
    "se": {"n_blocks": 1, "n_intra": 1, "n_inter": 1},
    "ss": {"n_blocks": 1, "n_intra": 1, "n_inter": 1},
}


def tiny_config(n_src: int = 2, backbone: str = "sepformer", **overrides: Any) -> dict[str, Any]:
    """A fresh copy of :data:`TINY` for ``n_src`` speakers with the given backbone."""
    cfg = {**TINY, "se": dict(TINY["se"]), "ss": dict(TINY["ss"])}
    cfg.update(n_src=n_src, backbone=backbone, **overrides)
    return cfg
