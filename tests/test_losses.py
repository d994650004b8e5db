"""SI-SNR, PIT, the thresholded SS loss and the latent SE loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torchmetrics.functional.audio import scale_invariant_signal_noise_ratio

from usgm.losses import pit_si_snr, se_loss, si_snr, silent_references, ss_loss


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


# -- padded batches (whole utterances batched by duration) ------------------------------------


def _padded(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (..., T_i) tensors with zeros into (B, ..., T_max); returns (batch, lengths)."""
    t = max(x.shape[-1] for x in items)
    out = torch.stack([torch.nn.functional.pad(x, (0, t - x.shape[-1])) for x in items])
    return out, torch.tensor([x.shape[-1] for x in items])


@pytest.mark.parametrize("threshold", [None, 0.0])
def test_ss_loss_padded_batch_equals_utterances_one_by_one(threshold: float | None) -> None:
    """Loss and gradients of a zero-padded batch with lengths = the unpadded utterances alone."""
    g = torch.Generator().manual_seed(3)
    lens = [700, 320, 513, 700]
    refs = [torch.randn(2, n, generator=g) for n in lens]
    # estimates with offsets (zero-mean must use the valid part) and varied quality
    ests = [r.flip(0) * 0.3 + (0.2 + i) * torch.randn(2, n, generator=g) + 0.5
            for i, (r, n) in enumerate(zip(refs, lens))]  # fmt: skip
    est_b, lengths = _padded(ests)
    ref_b, _ = _padded(refs)
    est_b = est_b.clone().requires_grad_(True)
    # the padded tail of the estimate is garbage, as a model's output would be
    with torch.no_grad():
        for b, n in enumerate(lens):
            est_b[b, :, n:] = 3.0
    loss_b = ss_loss(est_b, ref_b, threshold, lengths=lengths)
    loss_b.backward()

    # reference: each utterance alone, through the textbook float64 SI-SNR for the values and
    # autograd of the unmasked path for the gradients
    singles = [e.clone().requires_grad_(True) for e in ests]
    per = []
    for e, r in zip(singles, refs):
        pair = np.array([[_si_snr_numpy(e[i].detach().double().numpy(), r[j].double().numpy())
                          for j in range(2)] for i in range(2)])  # fmt: skip
        best_np = max(pair[0, 0] + pair[1, 1], pair[1, 0] + pair[0, 1]) / 2
        best, _ = pit_si_snr(e[None], r[None])
        assert best.item() == pytest.approx(best_np, abs=1e-3)
        per.append(best[0])
    kept = [s for s in per if threshold is None or s.item() <= threshold]
    assert 0 < len(kept) < len(per) or threshold is None  # the threshold must matter here
    loss_1 = -torch.stack(kept).mean()
    loss_1.backward()
    torch.testing.assert_close(loss_b, loss_1, rtol=1e-5, atol=1e-5)
    for b, (e, n) in enumerate(zip(singles, lens)):
        want = torch.zeros_like(e) if e.grad is None else e.grad  # None: left out by threshold
        torch.testing.assert_close(est_b.grad[b, :, :n], want, rtol=1e-4, atol=1e-6)
        assert torch.all(est_b.grad[b, :, n:] == 0)


def test_ss_loss_full_lengths_bit_identical() -> None:
    """lengths all equal to T: the same bits as without lengths (segment training unchanged)."""
    g = torch.Generator().manual_seed(4)
    ref = torch.randn(3, 2, 400, generator=g)
    est = (ref + torch.randn(3, 2, 400, generator=g) + 0.1).requires_grad_(True)
    full = torch.full((3,), 400)
    a = ss_loss(est, ref, 30.0)
    (ga,) = torch.autograd.grad(a, est)
    b = ss_loss(est, ref, 30.0, lengths=full)
    (gb,) = torch.autograd.grad(b, est)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    assert torch.equal(si_snr(est, ref), si_snr(est, ref, mask=torch.ones(400)))


def test_silent_reference_judged_on_valid_part() -> None:
    """A quiet but real source padded with lots of zeros is not called silent."""
    ref = torch.zeros(1, 2, 10_000)
    ref[0, :, :100] = 3e-5  # mean power 9e-10 over 100 samples, 9e-12 over 10,000
    assert bool(silent_references(ref)[0])
    assert not bool(silent_references(ref, lengths=torch.tensor([100]))[0])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_se_loss_padded_frames_equal_unpadded(reduction: str) -> None:
    g = torch.Generator().manual_seed(5)
    frames = [9, 4, 7]
    enh = [torch.randn(6, f, generator=g) for f in frames]
    clean = [torch.randn(6, f, generator=g) for f in frames]
    enh_b, n = _padded(enh)
    clean_b, _ = _padded(clean)
    enh_b = enh_b.clone().requires_grad_(True)
    with torch.no_grad():
        enh_b[1, :, 4:] = 5.0  # garbage in the padded frames
    loss_b = se_loss(enh_b, clean_b, reduction, frames=n)
    loss_b.backward()
    singles = [e.clone().requires_grad_(True) for e in enh]
    if reduction == "sum":  # per-utterance sums, averaged over utterances
        loss_1 = torch.stack([se_loss(e[None], c[None], "sum") for e, c in zip(singles, clean)])
        loss_1 = loss_1.mean()
    else:  # one mean over every valid element of the batch
        loss_1 = torch.cat([(e - c).square().flatten() for e, c in zip(singles, clean)]).mean()
    loss_1.backward()
    torch.testing.assert_close(loss_b, loss_1)
    for b, (e, f) in enumerate(zip(singles, frames)):
        torch.testing.assert_close(enh_b.grad[b, :, :f], e.grad)
        assert torch.all(enh_b.grad[b, :, f:] == 0)
    full = torch.full((3,), 9)
    assert torch.equal(se_loss(enh_b, clean_b, reduction), se_loss(enh_b, clean_b, reduction, full))


def test_latent_frames_of_lengths_and_encoder() -> None:
    from usgm.models.encoder import Encoder, n_frames

    lengths = torch.tensor([1, 15, 16, 17, 24, 25, 1000, 1003])
    got = n_frames(lengths, 16, 8)
    # hand-counted: max(1, ceil((T - 16) / 8) + 1)
    assert got.tolist() == [1, 1, 1, 2, 2, 3, 124, 125]
    # the valid frames of a zero-padded batch's latent are those of the utterance alone
    enc = Encoder(4, 16, 8)
    x = torch.randn(1, 1003)
    alone = enc(x[:, :203])
    padded = enc(torch.nn.functional.pad(x[:, :203], (0, 800)))
    f = int(n_frames(torch.tensor([203]), 16, 8)[0])
    assert alone.shape[-1] == f
    torch.testing.assert_close(padded[..., :f], alone)
