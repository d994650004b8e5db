"""Training objectives of the unified SE + SS network (Hu et al. 2023, arXiv 2302.11131).

* Separation: negative scale-invariant SNR (Le Roux et al. 2019) with utterance-level
  permutation-invariant training (Kolbæk et al. 2017) over all C! speaker orders, as in
  SepFormer (Subakan et al. 2021); optionally utterances above a threshold (30 dB in the paper's
  recipe) are left out of the mean.
* Enhancement: MSE between the enhanced latent w_e and Encoder(clean mixture).

Everything is computed in float32, also when the inputs come from a bf16 autocast region.
:func:`si_snr` is THE SI-SNR of the project (loss, validation metric and evaluation reports).
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


def valid_mask(lengths: Tensor, total: int) -> Tensor:
    """Float mask of the valid (unpadded) positions.

    Args:
        lengths: Valid length per utterance, shape (B,) integer (values above ``total`` count
            as ``total``).
        total: Padded length T.

    Returns:
        float32, shape (B, T): 1.0 where ``t < lengths[b]``, else 0.0.
    """
    positions = torch.arange(total, device=lengths.device)
    return (positions < lengths.unsqueeze(-1)).float()


def si_snr(est: Tensor, ref: Tensor, eps: float = 1e-8, mask: Tensor | None = None) -> Tensor:
    """Scale-invariant SNR in dB along the last dim (inputs are made zero-mean first).

    s_t = ⟨ŝ, s⟩ / (‖s‖² + eps) · s,  e = ŝ − s_t,  SI-SNR = 10 log10(‖s_t‖² / (‖e‖² + eps) + eps).

    Args:
        est: Estimate, shape (..., T).
        ref: Reference, shape (..., T) (broadcastable against ``est``).
        eps: Stabiliser for silent references / perfect estimates.
        mask: Optional 0/1 float mask of the valid samples, shape (..., T) broadcastable
            against ``est`` (see :func:`valid_mask`). Means and sums then run over the valid
            samples only, so a zero-padded utterance scores as the unpadded one. With an
            all-ones mask the result is bit-identical to ``mask=None``.

    Returns:
        float32 SI-SNR, shape (...) (the broadcast batch shape).
    """
    if est.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"si_snr: est and ref lengths differ: {tuple(est.shape)} vs {tuple(ref.shape)}"
        )
    est = est.float()
    ref = ref.float()
    if mask is None:
        est = est - est.mean(dim=-1, keepdim=True)
        ref = ref - ref.mean(dim=-1, keepdim=True)
    else:
        # mean over the valid part = mean over T of the masked signal · T / n. Written this way
        # (rather than sum / n) an all-ones mask multiplies by exactly 1.0, so unpadded batches
        # give the same bits as the mask-free path. Re-masking after centring keeps the padded
        # tail at exactly zero, so it adds nothing to the sums below (nor gets gradient).
        mask = mask.float()
        scale = est.shape[-1] / mask.sum(dim=-1, keepdim=True).clamp(min=1.0)
        est = est * mask
        ref = ref * mask
        est = (est - est.mean(dim=-1, keepdim=True) * scale) * mask
        ref = (ref - ref.mean(dim=-1, keepdim=True) * scale) * mask
    dot = (est * ref).sum(dim=-1, keepdim=True)
    target = dot / (ref.square().sum(dim=-1, keepdim=True) + eps) * ref
    noise = est - target
    ratio = target.square().sum(dim=-1) / (noise.square().sum(dim=-1) + eps)
    return 10.0 * torch.log10(ratio + eps)


@lru_cache(maxsize=16)
def _permutations(n_src: int, device: torch.device) -> Tensor:
    """All n_src! permutations as a (P, C) int64 tensor, cached per device (no repeated H2D).

    Built outside inference mode: a cached tensor first made during validation (which Lightning
    runs under ``torch.inference_mode``) must stay usable in autograd afterwards.
    """
    with torch.inference_mode(False):
        return torch.tensor(list(itertools.permutations(range(n_src))), device=device)


def pit_si_snr(
    est: Tensor, ref: Tensor, eps: float = 1e-8, lengths: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Utterance-level PIT SI-SNR over all C! permutations, batched.

    The (B, C, C) matrix of pairwise SI-SNRs is built once; each permutation's score is a gather
    from it, so the cost is one SI-SNR per (estimate, reference) pair.

    Args:
        est: Estimates, shape (B, C, T).
        ref: References, shape (B, C, T).
        eps: See :func:`si_snr`.
        lengths: Optional valid samples per utterance, shape (B,) integer: the SI-SNRs cover
            only ``[:lengths[b]]`` of utterance b (zero-padded batches).

    Returns:
        ``(best, perm)``: ``best`` (B,) float32, the mean SI-SNR over speakers of the best
        assignment; ``perm`` (B, C) int64 with ``perm[b, j]`` = index of the estimate assigned to
        reference j, i.e. ``est.gather(1, perm[..., None].expand_as(est))`` is aligned with ``ref``.
    """
    if est.dim() != 3 or est.shape != ref.shape:
        raise ValueError(
            f"pit_si_snr expects est and ref of equal shape (B, C, T), "
            f"got {tuple(est.shape)} and {tuple(ref.shape)}"
        )
    n_src = est.shape[1]
    mask = None if lengths is None else valid_mask(lengths, est.shape[-1])[:, None, None]
    pair = si_snr(est.unsqueeze(2), ref.unsqueeze(1), eps, mask)  # (B, C_est, C_ref)
    perms = _permutations(n_src, est.device)  # (P, C)
    cols = torch.arange(n_src, device=est.device)
    scores = pair[:, perms, cols].mean(dim=-1)  # (B, P): mean_j pair[b, perm[p, j], j]
    best, idx = scores.max(dim=-1)
    return best, perms[idx]


def silent_references(ref: Tensor, floor: float = 1e-10, lengths: Tensor | None = None) -> Tensor:
    """Utterances with a silent reference source, for which SI-SNR has no meaning.

    A source whose mean power is at most ``floor`` (−100 dB re full scale, i.e. digital
    silence, e.g. a crop that falls between one speaker's words) makes the SI-SNR of any
    estimate about −80 dB (the ``eps`` floor): training on it would push the model towards
    nothing useful, so the losses leave such utterances out and the step counts them.

    Args:
        ref: References, shape (B, C, T).
        floor: Mean-square threshold.
        lengths: Optional valid samples per utterance, shape (B,): the mean power is taken
            over the valid samples (the zero padding would otherwise lower it).

    Returns:
        bool, shape (B,): True where any of the C sources is silent.
    """
    power = ref.float().square().mean(dim=-1)  # (B, C)
    if lengths is not None:  # padding is zeros: rescale the mean over T to one over n
        power = power * (ref.shape[-1] / lengths.clamp(min=1).float()).unsqueeze(-1)
    return (power <= floor).any(dim=-1)


def ss_loss_terms(
    est: Tensor, ref: Tensor, threshold: float | None = None, lengths: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-utterance parts of the separation loss, for callers that reduce across processes.

    Args:
        est: Estimates, shape (B, C, T).
        ref: References, shape (B, C, T).
        threshold: SI-SNR in dB above which an utterance is left out (already separated well;
            30 dB in the paper's recipe); None keeps all.
        lengths: Optional valid samples per utterance, shape (B,) integer, for zero-padded
            batches of whole utterances: SI-SNR and the silence test cover only the valid part,
            so each utterance scores (and gets gradients) as if alone. None: all T are valid.

    Returns:
        ``(sisnr, keep, silent)``, each shape (B,): the PIT SI-SNR (float32, attached to the
        graph), whether the utterance counts in the loss mean, and whether it was left out for
        a silent reference (:func:`silent_references`).
    """
    best, _ = pit_si_snr(est, ref, lengths=lengths)
    silent = silent_references(ref, lengths=lengths)
    keep = ~silent
    if threshold is not None:
        keep = keep & (best.detach() <= threshold)
    return best, keep, silent


def ss_loss(
    est: Tensor, ref: Tensor, threshold: float | None = None, lengths: Tensor | None = None
) -> Tensor:
    """Separation loss: −mean over the kept utterances of the PIT SI-SNR.

    Utterances with a silent reference, and with ``threshold`` (the paper's recipe uses 30 dB)
    those whose SI-SNR exceeds it, are left out of the mean (:func:`ss_loss_terms`). If all are
    left out the loss is 0, still attached to the graph (zero gradient).

    Args:
        est: Estimates, shape (B, C, T).
        ref: References, shape (B, C, T).
        threshold: SI-SNR in dB above which an utterance is ignored; None keeps all.
        lengths: Optional valid samples per utterance, shape (B,) (see :func:`ss_loss_terms`).

    Returns:
        float32 scalar.
    """
    best, keep, _ = ss_loss_terms(est, ref, threshold, lengths)
    total = torch.where(keep, best, torch.zeros_like(best)).sum()
    return -total / keep.sum().clamp(min=1)


def se_loss(
    enhanced: Tensor, clean_latent: Tensor, reduction: str = "sum", frames: Tensor | None = None
) -> Tensor:
    """Latent-space enhancement loss MSE(w_e, Encoder(Σ sources)) (Hu et al. 2023, Eq. 2).

    ``"sum"`` sums the squared error over each utterance's latent (N·L elements), as the
    paper's released code does with its batch of one, and averages over the batch. Averaging
    over utterances keeps the loss, like the SS loss, independent of how a global batch is split
    across DDP ranks (DDP averages gradients), so one DDP step equals one single-process step.

    Args:
        enhanced: Enhanced latent w_e, shape (B, N, L).
        clean_latent: Encoder output of the clean mixture, same shape.
        reduction: ``"sum"`` (per-utterance sum, batch mean) or ``"mean"`` (mean over all
            elements).
        frames: Optional valid latent frames per utterance, shape (B,) integer
            (:func:`usgm.models.encoder.n_frames` of the sample lengths). Frames beyond are padding and left
            out: ``"sum"`` sums each utterance's valid N·L_b elements, ``"mean"`` averages over
            all valid elements of the batch. With every ``frames[b] == L`` the result is
            bit-identical to ``frames=None``.

    Returns:
        float32 scalar.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"se_loss reduction must be 'sum' or 'mean', got {reduction!r}")
    if enhanced.shape != clean_latent.shape:
        raise ValueError(
            f"se_loss shapes differ: {tuple(enhanced.shape)} vs {tuple(clean_latent.shape)}"
        )
    enhanced, clean_latent = enhanced.float(), clean_latent.float()
    if frames is not None:
        # Zero both sides beyond each utterance's frames: the padded tail then contributes
        # exactly 0 (and no gradient); an all-ones mask multiplies by exactly 1.0.
        mask = valid_mask(frames, enhanced.shape[-1]).unsqueeze(1)  # (B, 1, L)
        enhanced, clean_latent = enhanced * mask, clean_latent * mask
    if reduction == "mean":
        loss = F.mse_loss(enhanced, clean_latent, reduction="mean")
        if frames is not None:  # mean over B·L frames → mean over the valid ones
            valid = frames.clamp(min=1, max=enhanced.shape[-1]).sum().float()
            loss = loss * (enhanced.shape[0] * enhanced.shape[-1] / valid)
        return loss
    per_utt = (enhanced - clean_latent).square().flatten(1).sum(1)
    return per_utt.mean()
