"""usgm: noise-robust speech separation with a unified SE+SS network and gradient modulation."""

from __future__ import annotations

from typing import Any


def load_model(path: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Loads an exported model or a training checkpoint → ``(model, meta)``.

    See :func:`usgm.evaluation.export.load_model`; imported lazily so ``import usgm`` stays light.
    """
    from usgm.evaluation.export import load_model as _load_model

    return _load_model(path, **kwargs)


__all__ = ["load_model"]
