"""SI-SNR, PIT, the thresholded SS loss and the latent SE loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torchmetrics.functional.audio import scale_invariant_signal_noise_ratio

from usgm.losses import pit_si_snr, se_loss, si_snr, ss_loss


def _si_snr_numpy(est: np.ndarray, ref: np.ndarray) -> float:
    """Textbook SI-SNR (Le Roux et al. 2019) in float64, no stabilisers."""
    est = est - est.mean()
    ref = ref - ref.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    noise = est - target
    return float(10 * np.log10(np.dot(target, target) / np.dot(noise, noise)))


def test_si_snr_matches_independent_references() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(4, 3, 500, generator=g)
    est = ref + 0.5 * torch.randn(4, 3, 500, generator=g) + 0.3  # offset: zero-mean matters
    ours = si_snr(est, ref)
    assert ours.shape == (4, 3)
    assert ours.dtype == torch.float32
    expected = torch.tensor(
        [
            [_si_snr_numpy(e.double().numpy(), r.double().numpy()) for e, r in zip(eb, rb)]
            for eb, rb in zip(est, ref)
        ]
    )
    torch.testing.assert_close(ours, expected.float(), rtol=1e-4, atol=1e-4)
    tm = scale_invariant_signal_noise_ratio(est, ref)
    torch.testing.assert_close(ours, tm, rtol=1e-4, atol=1e-4)


def test_si_snr_scale_invariance_and_broadcast() -> None:
    g = torch.Generator().manual_seed(1)
    ref, noise = torch.randn(2, 300, generator=g), torch.randn(2, 300, generator=g)
    est = ref + noise
    torch.testing.assert_close(si_snr(3.7 * est, ref), si_snr(est, ref), rtol=1e-4, atol=1e-4)
    assert si_snr(est[:, None], ref[None]).shape == (2, 2)
    assert (si_snr(ref, ref) > 60).all()
    with pytest.raises(ValueError, match="lengths"):
        si_snr(est, ref[:, :-1])


def _brute_force_pit(est: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    best, perms = [], []
    for e, r in zip(est, ref):
        scores = {
            p: torch.stack([si_snr(e[p[j]], r[j]) for j in range(len(p))]).mean().item()
            for p in itertools.permutations(range(est.shape[1]))
        }
        p = max(scores, key=scores.__getitem__)
        best.append(scores[p])
        perms.append(p)
    return torch.tensor(best), torch.tensor(perms)


@pytest.mark.parametrize("n_src", [2, 3])
def test_pit_recovers_permutation_and_matches_brute_force(n_src: int) -> None:
    g = torch.Generator().manual_seed(n_src)
    batch, length = 5, 400
    est = torch.randn(batch, n_src, length, generator=g)
    true_perm = torch.stack([torch.randperm(n_src, generator=g) for _ in range(batch)])
    # reference j is a noisy copy of estimate true_perm[b, j]
    ref = est.gather(1, true_perm[..., None].expand_as(est))
    ref = ref + 0.3 * torch.randn(ref.shape, generator=g)
    best, perm = pit_si_snr(est, ref)
    assert best.shape == (batch,) and perm.shape == (batch, n_src)
    assert torch.equal(perm, true_perm)
    aligned = est.gather(1, perm[..., None].expand_as(est))
    torch.testing.assert_close(best, si_snr(aligned, ref).mean(-1))
    bf_best, bf_perm = _brute_force_pit(est, ref)
    torch.testing.assert_close(best, bf_best, rtol=1e-5, atol=1e-5)
    assert torch.equal(perm, bf_perm)
    # random (unrelated) estimates: still the brute-force optimum
    noise = torch.randn(batch, n_src, length, generator=g)
    b2, p2 = pit_si_snr(noise, ref)
    bf2, bp2 = _brute_force_pit(noise, ref)
    torch.testing.assert_close(b2, bf2, rtol=1e-5, atol=1e-5)
    assert torch.equal(p2, bp2)


def test_pit_gradient_flows_and_rejects_bad_shapes() -> None:
    est = torch.randn(2, 2, 100, requires_grad=True)
    ref = torch.randn(2, 2, 100)
    ss_loss(est, ref).backward()
    assert est.grad is not None and torch.isfinite(est.grad).all()
    with pytest.raises(ValueError, match="B, C, T"):
        pit_si_snr(est[0], ref[0])


def test_ss_loss_threshold_leaves_out_separated_utterances() -> None:
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(3, 2, 800, generator=g)
    est = ref.clone()
    est[0] += 1e-3 * torch.randn(2, 800, generator=g)  # ~60 dB: left out at 30 dB
    est[1] += 0.5 * torch.randn(2, 800, generator=g)  # ~6 dB
    est[2] += 1.0 * torch.randn(2, 800, generator=g)  # ~0 dB
    est.requires_grad_(True)
    best, _ = pit_si_snr(est.detach(), ref)
    assert best[0] > 30 and (best[1:] < 30).all()
    torch.testing.assert_close(ss_loss(est, ref), -best.mean())
    loss = ss_loss(est, ref, threshold=30.0)
    torch.testing.assert_close(loss, -best[1:].mean())
    loss.backward()
    assert est.grad is not None
    assert (est.grad[0] == 0).all() and (est.grad[1:] != 0).any()


def test_ss_loss_all_left_out_is_zero_with_graph() -> None:
    ref = torch.randn(2, 2, 300)
    est = (ref + 1e-4 * torch.randn_like(ref)).requires_grad_(True)
    loss = ss_loss(est, ref, threshold=30.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert est.grad is not None and (est.grad == 0).all()


def test_losses_are_float32_under_bf16() -> None:
    g = torch.Generator().manual_seed(4)
    ref = torch.randn(2, 3, 256, generator=g).bfloat16()
    est = (ref.float() + 0.3 * torch.randn(2, 3, 256, generator=g)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = si_snr(est, ref)
        best, _ = pit_si_snr(est, ref)
        loss = ss_loss(est, ref)
        mse = se_loss(est, ref)
    for t in (value, best, loss, mse):
        assert t.dtype == torch.float32
    torch.testing.assert_close(value, si_snr(est.float(), ref.float()))


def test_se_loss_reductions_and_errors() -> None:
    a, b = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    # "sum": squared error summed over each utterance's latent, mean over the batch
    torch.testing.assert_close(se_loss(a, b), ((a - b) ** 2).sum() / 2)
    torch.testing.assert_close(se_loss(a[:1], b[:1]), ((a[:1] - b[:1]) ** 2).sum())  # paper: B = 1
    torch.testing.assert_close(se_loss(a, b, reduction="mean"), ((a - b) ** 2).mean())
    with pytest.raises(ValueError, match="reduction"):
        se_loss(a, b, reduction="none")
    with pytest.raises(ValueError, match="shapes"):
        se_loss(a, b[..., :-1])


def test_pit_usable_in_autograd_after_inference_mode_call() -> None:
    """Validation runs under inference mode first; training must still backprop afterwards."""
    with torch.inference_mode():
        pit_si_snr(torch.randn(1, 4, 64), torch.randn(1, 4, 64))
    est = torch.randn(2, 4, 64, requires_grad=True)
    best, _ = pit_si_snr(est, torch.randn(2, 4, 64))
    best.sum().backward()
    assert est.grad is not None
