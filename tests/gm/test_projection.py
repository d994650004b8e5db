"""Gradient modulation: the projection rule, edge cases, fast path vs reference, telemetry."""

from __future__ import annotations

import math

import pytest
import torch

from usgm.gm.projection import _modulate_reference, gm_stats, modulate, modulate_and_stats


def test_agreeing_gradients_are_summed() -> None:
    se, ss = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    (out,) = modulate([se], [ss])
    torch.testing.assert_close(out, se + ss)


def test_conflicting_gradient_is_projected_explicit_numbers() -> None:
    # ⟨g_SE, g_SS⟩ = −1, ‖g_SS‖² = 1 → g_SE' = (−1, 1) + 1·(1, 0) = (0, 1)
    (out,) = modulate([torch.tensor([-1.0, 1.0])], [torch.tensor([1.0, 0.0])])
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0]))
    # ⟨g_SE, g_SS⟩ = −6, ‖g_SS‖² = 4 → g_SE' = (−3, 1, 2) + 1.5·(2, 0, 0) = (0, 1, 2)
    (out,) = modulate([torch.tensor([[-3.0, 1.0, 2.0]])], [torch.tensor([[2.0, 0.0, 0.0]])])
    torch.testing.assert_close(out, torch.tensor([[2.0, 1.0, 2.0]]))


def test_conflict_result_properties_random() -> None:
    g = torch.Generator().manual_seed(0)
    ss = [torch.randn(7, 5, generator=g), torch.randn(3000, generator=g)]
    se = [-s + 0.3 * torch.randn(s.shape, generator=g) for s in ss]  # strongly conflicting
    for a, b, c in zip(se, ss, modulate(se, ss)):
        assert torch.sum(a * b) < 0
        delta = c - b  # the modulated SE gradient
        assert abs(torch.sum(delta * b).item()) < 1e-3 * delta.norm() * b.norm()  # ⟂ g_SS
        removed = a - delta  # what was taken out of g_SE is parallel to g_SS
        cos = torch.sum(removed * b) / (removed.norm() * b.norm())
        assert cos.item() == pytest.approx(-1.0, abs=1e-5)
        # the component orthogonal to g_SS is untouched
        b_hat = b / b.norm()
        torch.testing.assert_close(delta, a - torch.sum(a * b_hat) * b_hat, rtol=1e-4, atol=1e-4)


def test_zero_ss_gradient_keeps_se_gradient() -> None:
    se = torch.tensor([0.5, -2.0, 3.0])
    (out,) = modulate([se], [torch.zeros(3)])
    torch.testing.assert_close(out, se)
    assert torch.isfinite(out).all()
    stats = gm_stats([se], [torch.zeros(3)])
    assert stats["conflict_frac"].item() == 0.0 and stats["cos_mean"].item() == 0.0


def test_none_handling() -> None:
    a, b = torch.randn(3), torch.randn(3)
    out = modulate([None, a, None, a], [b, None, None, b])
    assert out[0] is b and out[1] is a and out[2] is None
    torch.testing.assert_close(out[3], _modulate_reference([a], [b])[0])
    assert modulate([], []) == []
    stats = gm_stats([None], [b])
    assert stats["n_pairs"].item() == 0


def test_errors() -> None:
    with pytest.raises(ValueError, match="one SE and one SS"):
        modulate([torch.zeros(2)], [])
    with pytest.raises(ValueError, match="gradient 1"):
        modulate([torch.zeros(2), torch.zeros(3)], [torch.zeros(2), torch.zeros(4)])
    with pytest.raises(ValueError, match="groups"):
        gm_stats([torch.zeros(2)], [torch.zeros(2)], groups=["a", "b"])


def test_fast_path_equals_reference_on_random_tensors() -> None:
    g = torch.Generator().manual_seed(1)
    shapes = [(), (1,), (5,), (1024,), (1025,), (3, 700), (16, 4, 4), (0,), (2048,), (33, 33)]
    se, ss = [], []
    for i, shape in enumerate(shapes):
        b = torch.randn(shape, generator=g)
        sign = -1.0 if i % 2 else 1.0  # half conflicting, half agreeing
        se.append(sign * b * torch.rand((), generator=g) + torch.randn(shape, generator=g))
        ss.append(b)
    se[4] = None  # unpaired entries in the middle
    ss[6] = None
    fast, ref = modulate(se, ss), _modulate_reference(se, ss)
    for f, r, a, b in zip(fast, ref, se, ss):
        if r is None:
            assert f is None
            continue
        assert f.shape == r.shape and f.dtype == r.dtype
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-5)
        if a is not None and b is not None and f.numel():
            assert f.data_ptr() not in (a.data_ptr(), b.data_ptr())  # fresh memory


def test_low_precision_gradients_keep_their_dtype() -> None:
    g = torch.Generator().manual_seed(2)
    ss = [torch.randn(300, generator=g).bfloat16()]
    se = [(-ss[0].float() + torch.randn(300, generator=g)).bfloat16()]
    (out,) = modulate(se, ss)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, _modulate_reference(se, ss)[0])


def test_stats_explicit_numbers_and_groups() -> None:
    se = [torch.tensor([-1.0, 1.0]), torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])]
    ss = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])]
    stats = gm_stats(se, ss, groups=["encoder", "se", "se"])
    cos = [-1 / math.sqrt(2), 1.0, 0.0]
    assert stats["conflict_frac"].item() == pytest.approx(1 / 3)
    assert stats["cos_mean"].item() == pytest.approx(sum(cos) / 3, abs=1e-6)
    assert stats["n_pairs"].item() == 3
    assert stats["encoder/conflict_frac"].item() == 1.0
    assert stats["encoder/cos_mean"].item() == pytest.approx(cos[0], abs=1e-6)
    assert stats["se/conflict_frac"].item() == 0.0
    assert stats["se/cos_mean"].item() == pytest.approx(0.5, abs=1e-6)
    combined, stats2 = modulate_and_stats(se, ss, groups=["encoder", "se", "se"])
    for c, r in zip(combined, modulate(se, ss)):
        torch.testing.assert_close(c, r)
    assert stats2.keys() == stats.keys()
