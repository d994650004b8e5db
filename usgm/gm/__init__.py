"""Gradient modulation and other two-task gradient combiners (pure torch, reusable).

- :mod:`usgm.gm.projection`: the GM projection of Hu et al. (2023) on lists of per-tensor
  gradients (:func:`modulate`), with conflict telemetry (:func:`gm_stats`).
- :mod:`usgm.gm.combiners`: the :class:`Combiner` interface that the training step uses
  (``sum``, ``gm``, ``gm_released``, ``pcgrad``, ``upgrad``).
"""

from usgm.gm.combiners import COMBINERS, Combiner, build_combiner
from usgm.gm.projection import gm_stats, modulate, modulate_and_stats

__all__ = [
    "COMBINERS",
    "Combiner",
    "build_combiner",
    "gm_stats",
    "modulate",
    "modulate_and_stats",
]
