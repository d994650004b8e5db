"""Gradient combiners: how two tasks' gradients on the shared parameters become one update.

The unified network has two losses, L_SS (separation) and w·L_SE (enhancement). Both reach the
encoder and the SE mask net (the *shared* parameters); the SS mask net and the decoder see L_SS
only. A :class:`Combiner` receives, per shared parameter tensor, the two gradients g_SS and g_SE
(already summed over every data-parallel rank) and returns the update direction for each tensor.

Combiners here:

- ``sum``: g_SS + g_SE, plain multi-task learning. Linear, so a training step can get it from
  one backward of L_SS + w·L_SE.
- ``gm``: gradient modulation (Hu et al. 2023, arXiv 2302.11131, Sec. 2.3), per tensor:
  a conflicting g_SE is projected onto the normal plane of g_SS, then added
  (:func:`usgm.gm.projection.modulate`).
- ``gm_released``: what the authors' released GM computes under its pinned torch 1.8. It keeps
  the SE gradients as references to ``.grad``; ``zero_grad()`` zeroes them in place and the SS
  backward accumulates g_SS into the same tensors, so the "SE gradient" it projects *is* g_SS and
  the update is 2·g_SS: the SE loss has no effect. A reproduction ablation, not a method.
- ``pcgrad``: PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): each task's
  gradient is projected onto the normal plane of the other where they conflict (both
  directions), then summed; over the whole shared gradient vector, not per tensor.
- ``upgrad``: UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"):
  each task's gradient is projected onto the dual cone of both, then summed; over the whole
  shared vector (with a negligible regularisation of the QP, so the projection is exact).

``pcgrad`` and ``upgrad`` take their weights from the `torchjd` package: with two tasks, an
aggregator of the (2 × n) Jacobian is a weighted sum ``w_SS·g_SS + w_SE·g_SE`` whose weights
depend only on the 2 × 2 Gramian of the two gradients, so usgm computes the Gramian in three dot
products and never builds the Jacobian. Both are scaled like a sum (UPGrad's preference vector
is all ones), so without conflict every combiner here returns g_SS + g_SE and the learning rate
means the same for all of them. Their weights are solved on the host (one device sync a step).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from usgm.gm.projection import gm_stats, modulate, modulate_and_stats

Stats = dict[str, Tensor]


class Combiner(ABC):
    """Combines per-tensor gradients of the two tasks on the shared parameters.

    Subclasses set :attr:`name` and implement :meth:`combine`. A combiner is pure torch and
    stateless; the training step is responsible for passing global (all-reduced) gradients,
    because every non-linear combiner gives a different result on per-rank gradients.
    """

    #: Name used by ``model.method`` and in logs.
    name: ClassVar[str]
    #: True when the result is always g_SS + g_SE: the step may then skip computing the two
    #: gradients separately and run one backward of the weighted loss sum.
    linear: ClassVar[bool] = False
    #: True when the result does not depend on g_SE: the step then never computes it.
    ignores_se: ClassVar[bool] = False

    @abstractmethod
    def combine(
        self,
        g_ss: Sequence[Tensor],
        g_se: Sequence[Tensor],
        groups: Sequence[str],
        with_stats: bool = False,
    ) -> tuple[list[Tensor], Stats]:
        """Combine the two tasks' gradients.

        Args:
            g_ss: SS-loss gradient per shared tensor (any shapes).
            g_se: Weighted SE-loss gradient per shared tensor, same shapes as ``g_ss``.
            groups: Module label per tensor (``"encoder"``, ``"se"``) for the telemetry.
            with_stats: Also return conflict telemetry (costs a few reductions; no host sync
                for ``gm``, ``gm_released`` and ``sum``).

        Returns:
            ``(combined, stats)``: the update direction per tensor, and 0-d tensors
            ``"<group>/conflict_frac"`` and ``"<group>/cos_mean"`` (empty unless asked for).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class SumCombiner(Combiner):
    """Plain multi-task learning: g_SS + g_SE."""

    name = "sum"
    linear = True

    def combine(self, g_ss, g_se, groups, with_stats=False):
        combined = [a + b for a, b in zip(g_ss, g_se, strict=True)]
        return combined, (gm_stats(list(g_se), list(g_ss), groups) if with_stats else {})


class GradientModulation(Combiner):
    """GM of Hu et al. (2023), Eq. (5)–(6), per tensor (see :func:`usgm.gm.modulate`)."""

    name = "gm"

    def combine(self, g_ss, g_se, groups, with_stats=False):
        if with_stats:
            out, stats = modulate_and_stats(list(g_se), list(g_ss), groups)
        else:
            out, stats = modulate(list(g_se), list(g_ss)), {}
        return [o for o in out if o is not None], stats


class ReleasedGM(Combiner):
    """The released code's effective update under torch 1.8: 2·g_SS (the SE loss is lost).

    The projection there compares g_SS with itself (its stored "SE gradient" was overwritten by
    g_SS), finds no conflict and adds the two; the telemetry reports that comparison (cosine 1).
    """

    name = "gm_released"
    ignores_se = True

    def combine(self, g_ss, g_se, groups, with_stats=False):
        stats = gm_stats(list(g_ss), list(g_ss), groups) if with_stats else {}
        return [2.0 * g for g in g_ss], stats


def _gramian(g_ss: Sequence[Tensor], g_se: Sequence[Tensor]) -> Tensor:
    """2 × 2 Gramian [[‖a‖², a·b], [a·b, ‖b‖²]] of the flattened shared gradients (float64, CPU).

    Accumulated in float64: squared norms of large gradients overflow float32, and tiny ones
    underflow it.
    """
    dots = torch.zeros(3, dtype=torch.float64, device=g_ss[0].device)
    for a, b in zip(g_ss, g_se, strict=True):
        a64, b64 = a.reshape(-1).double(), b.reshape(-1).double()
        dots += torch.stack((a64 @ a64, a64 @ b64, b64 @ b64))
    aa, ab, bb = dots.cpu().tolist()  # the QP solvers run on the host
    return torch.tensor([[aa, ab], [ab, bb]], dtype=torch.float64)


class TorchJDCombiner(Combiner):
    """A two-task aggregator of the `torchjd` package, applied through its Gramian weighting.

    Args:
        weighting: A torchjd ``Weighting`` of a PSD matrix, mapping the 2 × 2 Gramian of
            (g_SS, g_SE) to the weights of the two gradients.
    """

    def __init__(self, weighting) -> None:
        self.weighting = weighting

    def combine(self, g_ss, g_se, groups, with_stats=False):
        if not g_ss:
            return [], {}
        gram = _gramian(g_ss, g_se)
        if gram[0, 0] == 0 and gram[1, 1] == 0:
            weights = torch.ones(2, dtype=torch.float64)  # both zero: nothing to weigh
        else:
            with torch.random.fork_rng(devices=[]):  # PCGrad's weighting draws a permutation:
                weights = self.weighting(gram)  # keep the run's random stream unchanged
        w_ss, w_se = (float(w) for w in weights)
        combined = [w_ss * a + w_se * b for a, b in zip(g_ss, g_se, strict=True)]
        stats = gm_stats(list(g_se), list(g_ss), groups) if with_stats else {}
        return combined, stats


class PCGrad(TorchJDCombiner):
    """PCGrad (Yu et al. 2020) over the shared gradient vector, via ``torchjd``."""

    name = "pcgrad"

    def __init__(self) -> None:
        from torchjd.aggregation import PCGradWeighting

        super().__init__(PCGradWeighting())


class UPGrad(TorchJDCombiner):
    """UPGrad (Quinton & Rey 2024) over the shared gradient vector, via ``torchjd``.

    The preference vector is (1, 1), so the result is on the scale of a sum (torchjd's default,
    the mean, would halve every shared update relative to the unshared ones).
    """

    name = "upgrad"

    def __init__(self) -> None:
        from torchjd.aggregation import UPGradWeighting
        from torchjd.linalg import QuadprogProjector

        # torchjd's default regularisation (1e-4 on the normalised Gramian) dominates when one
        # gradient is ~100x smaller than the other, as w·g_SE is here, and then returns another
        # direction than the dual-cone projection: keep it negligible.
        projector = QuadprogProjector(reg_eps=1e-12)
        ones = torch.ones(2, dtype=torch.float64)
        super().__init__(UPGradWeighting(pref_vector=ones, projector=projector))


COMBINERS: dict[str, type[Combiner]] = {
    c.name: c for c in (SumCombiner, GradientModulation, ReleasedGM, PCGrad, UPGrad)
}


def build_combiner(name: str) -> Combiner:
    """The combiner registered under ``name`` (a key of :data:`COMBINERS`).

    Raises:
        ValueError: Unknown name (the message lists the known ones).
    """
    if name not in COMBINERS:
        raise ValueError(f"unknown gradient combiner {name!r}; known: {sorted(COMBINERS)}")
    return COMBINERS[name]()
