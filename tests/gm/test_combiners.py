"""Gradient combiners on hand-computed two-tensor examples (per-tensor vs whole-vector rules)."""

from __future__ import annotations

import pytest
import torch

from usgm.gm import COMBINERS, build_combiner

# Two shared tensors of one element each. As one vector: g_SS = (1, 0), g_SE = (-1, 1), which
# conflict (dot -1). Per tensor: the first pair conflicts, the second has g_SS = 0.
G_SS = [torch.tensor([1.0]), torch.tensor([0.0])]
G_SE = [torch.tensor([-1.0]), torch.tensor([1.0])]
GROUPS = ["encoder", "se"]

EXPECTED = {
    "sum": [0.0, 1.0],
    # per tensor: (1) -1 projected off +1 → 0, sum 1; (2) nothing to project against, sum 1
    "gm": [1.0, 1.0],
    # the released code's effective update: 2·g_SS
    "gm_released": [2.0, 0.0],
    # whole vector: g_SS' = (1,0) + ½(-1,1) = (½,½); g_SE' = (-1,1) + (1,0) = (0,1); sum (½, 3/2)
    "pcgrad": [0.5, 1.5],
    # dual-cone projections of both rows coincide with PCGrad's here (see test_module for a
    # general reference)
    "upgrad": [0.5, 1.5],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_combiner_on_hand_computed_example(name: str) -> None:
    combined, stats = build_combiner(name).combine(G_SS, G_SE, GROUPS)
    assert [float(c) for c in combined] == pytest.approx(EXPECTED[name], abs=1e-6)
    assert stats == {}


def test_agreeing_gradients_give_the_sum_for_every_combiner() -> None:
    g = torch.Generator().manual_seed(0)
    g_ss = [torch.rand(3, 4, generator=g), torch.rand(7, generator=g)]
    g_se = [0.1 * torch.rand(3, 4, generator=g), 0.1 * torch.rand(7, generator=g)]  # all ≥ 0
    for name in COMBINERS:
        if name == "gm_released":
            continue  # 2·g_SS by construction
        combined, _ = build_combiner(name).combine(g_ss, g_se, GROUPS)
        for c, a, b in zip(combined, g_ss, g_se, strict=True):
            torch.testing.assert_close(c, a + b, rtol=1e-5, atol=1e-6, msg=name)


def test_stats_report_conflicts_per_group() -> None:
    _, stats = build_combiner("gm").combine(G_SS, G_SE, GROUPS, with_stats=True)
    assert float(stats["encoder/conflict_frac"]) == 1.0
    assert float(stats["encoder/cos_mean"]) == pytest.approx(-1.0)
    assert float(stats["se/conflict_frac"]) == 0.0  # g_SS = 0: no conflict, cosine 0
    _, stats = build_combiner("gm_released").combine(G_SS, G_SE, GROUPS, with_stats=True)
    assert float(stats["encoder/cos_mean"]) == pytest.approx(1.0)  # g_SS against itself


def test_only_sum_is_linear_and_unknown_names_are_refused() -> None:
    assert [n for n, c in COMBINERS.items() if c.linear] == ["sum"]
    with pytest.raises(ValueError, match="unknown gradient combiner 'graddrop'"):
        build_combiner("graddrop")
