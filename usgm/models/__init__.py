"""Pure-torch models: the unified SE+SS separator (Hu et al. 2023) and its building blocks."""

from .unified import (
    DEFAULT_CONFIG,
    SeparatorOutput,
    UnifiedSeparator,
    build_model,
    count_parameters,
    resolve_config,
)

__all__ = [
    "DEFAULT_CONFIG",
    "SeparatorOutput",
    "UnifiedSeparator",
    "build_model",
    "count_parameters",
    "resolve_config",
]
