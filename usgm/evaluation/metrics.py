"""Separation metrics: SI-SNR(i), BSS-eval SDR(i), input SNR, optional PESQ / STOI.

SI-SNR is :func:`usgm.losses.si_snr` (the one implementation shared with the loss and the
validation metric). SDR is the ``bss_eval_sources`` SDR of BSS-eval v3 (Vincent et al., "Performance
measurement in blind audio source separation", IEEE TASLP 2006, Sec. III.B; mir_eval-compatible):
the estimate is projected onto the span of the 512 delayed versions of its reference and

    SDR = 10 log10(‖P_j ŝ‖² / ‖ŝ − P_j ŝ‖²).

mir_eval projects onto all references' delayed versions too, but for the SDR that term cancels
(e_interf + e_artif = ŝ − P_j ŝ), so only the own-reference Toeplitz system is solved here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from usgm.losses import pit_si_snr, si_snr

BSS_FILTER_LEN = 512
_EPS = 1e-20  # energies are sums of squares in float64: keeps log10 finite for silent signals
EVAL_EXTRA = "usgm[eval]"


def _require_finite(**tensors: Tensor | None) -> None:
    """Raise ValueError naming the first tensor with a NaN/Inf value.

    A non-finite signal has no defined metric; without this check the BSS-eval solver ends in an
    internal assertion of ``torch.linalg.lstsq`` instead of an error that says why.
    """
    for name, x in tensors.items():
        if x is not None and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds non-finite values (NaN/Inf): no metric is defined")


def _db(num: Tensor, den: Tensor) -> Tensor:
    return 10.0 * torch.log10((num + _EPS) / (den + _EPS))


def bss_sdr(est: Tensor, ref: Tensor, filter_len: int = BSS_FILTER_LEN) -> Tensor:
    """BSS-eval v3 SDR of each estimate against its own reference (mir_eval ``bss_eval_sources``).

    Computed in float64 on the inputs' device. The least-squares distortion filter has
    ``filter_len`` taps; the normal equations (a symmetric Toeplitz system built from the
    reference's autocorrelation, obtained by FFT) are solved by Cholesky, with a least-squares
    fallback when the system is singular, as mir_eval does.

    Args:
        est: estimates, shape (..., T).
        ref: references, shape broadcastable to ``est`` (..., T).
        filter_len: distortion filter length (512 in BSS-eval v3).

    Returns:
        SDR in dB, shape (...) = broadcast batch shape.

    Raises:
        ValueError: lengths differ, or ``est`` / ``ref`` holds NaN/Inf.
    """
    if est.shape[-1] != ref.shape[-1]:
        raise ValueError(f"est and ref lengths differ: {est.shape[-1]} vs {ref.shape[-1]}")
    _require_finite(est=est, ref=ref)
    n = est.shape[-1]
    est = est.to(torch.float64)
    ref = ref.to(torch.float64)
    n_full = n + filter_len - 1  # length of the projection (reference delayed by up to L-1)
    n_fft = 1 << (n_full - 1).bit_length()
    ref_f = torch.fft.rfft(ref, n_fft)
    est_f = torch.fft.rfft(est, n_fft)

    # Normal equations G c = d: G[k, l] = <ref delayed k, ref delayed l> = r_ss[|k - l|],
    # d[k] = <est, ref delayed k> = r_es[k]. The FFT size makes both linear correlations.
    acf = torch.fft.irfft(ref_f * ref_f.conj(), n_fft)[..., :filter_len]
    idx = torch.arange(filter_len, device=est.device)
    gram = acf[..., (idx[:, None] - idx[None, :]).abs()]  # (..., L, L)
    xcf = torch.fft.irfft(est_f * ref_f.conj(), n_fft)[..., :filter_len]  # (..., L)
    batch = torch.broadcast_shapes(gram.shape[:-2], xcf.shape[:-1])
    gram = gram.expand(*batch, filter_len, filter_len)
    rhs = xcf.expand(*batch, filter_len).unsqueeze(-1)
    # G is symmetric positive definite for any non-silent reference: Cholesky. (Also avoids batched
    # LU, whose pivots come back corrupt on CPU with >1 thread in torch 2.14.) Where the
    # factorisation fails (numerically singular G) fall back to least squares, as mir_eval does.
    chol, info = torch.linalg.cholesky_ex(gram)
    coef = torch.cholesky_solve(rhs, chol)
    bad = (info != 0) | ~torch.isfinite(coef).all(dim=(-2, -1))
    if bool(bad.any()):
        coef = coef.clone()
        for idx in bad.nonzero().tolist():
            g, r = gram[tuple(idx)].cpu(), rhs[tuple(idx)].cpu()
            coef[tuple(idx)] = torch.linalg.lstsq(g, r, driver="gelsd").solution.to(coef.device)
    coef = coef.squeeze(-1)

    # P_j ŝ = c * ref (linear convolution, length n + L - 1); the estimate is zero-padded to match.
    proj = torch.fft.irfft(torch.fft.rfft(coef, n_fft) * ref_f, n_fft)[..., :n_full]
    est_pad = torch.nn.functional.pad(est, (0, filter_len - 1)).expand_as(proj)
    resid = est_pad - proj
    return _db(proj.square().sum(-1), resid.square().sum(-1))


def input_snr(mix: Tensor, mix_clean: Tensor) -> Tensor:
    """SNR of the noisy mixture: 10 log10(‖mix_clean‖² / ‖mix − mix_clean‖²).

    Args:
        mix: noisy mixture (..., T).
        mix_clean: sum of the clean sources (..., T).

    Returns:
        (...) in dB; +inf when the mixture has no noise.
    """
    mix = mix.to(torch.float64)
    clean = mix_clean.to(torch.float64)
    noise = (mix - clean).square().sum(-1)
    sig = clean.square().sum(-1)
    return torch.where(noise > 0, 10.0 * torch.log10((sig + _EPS) / noise), math.inf)


def pit_permutation(est: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Utterance-level PIT by mean SI-SNR over all C! permutations (:func:`usgm.losses.pit_si_snr`).

    Args:
        est: estimates (C, T).
        ref: references (C, T).

    Returns:
        ``perm`` (C,) long with ``est[perm[c]]`` matched to ``ref[c]``, and the matched per-source
        SI-SNR (C,) in dB.
    """
    _, perm = pit_si_snr(est[None], ref[None])
    perm = perm[0]
    return perm, si_snr(est[perm], ref)


def _resample(x: Any, sr: int, target: int) -> Any:
    import numpy as np
    import torchaudio.functional as AF

    out = AF.resample(torch.as_tensor(np.asarray(x, dtype=np.float32)), sr, target)
    return out.numpy()


def pesq_stoi(est: Tensor, ref: Tensor, sample_rate: int) -> tuple[float, float]:
    """Mean PESQ and STOI over matched (est, ref) pairs.

    PESQ is narrow-band at 8 kHz and wide-band at 16 kHz (ITU-T P.862 / P.862.2); other rates are
    resampled to 16 kHz for wide-band PESQ. A pair PESQ cannot score (e.g. silence) gives NaN.

    Args:
        est: matched estimates (C, T).
        ref: references (C, T).
        sample_rate: audio rate in Hz.

    Returns:
        (mean PESQ, mean STOI).

    Raises:
        ImportError: ``pesq`` / ``pystoi`` are missing (install the ``usgm[eval]`` extra).
    """
    try:
        from pesq import pesq as pesq_fn
        from pystoi import stoi as stoi_fn
    except ImportError as err:
        raise ImportError(
            f"PESQ/STOI need the optional packages pesq and pystoi: pip install '{EVAL_EXTRA}' "
            f"({err})"
        ) from err
    est_np = est.detach().to("cpu", torch.float64).numpy()
    ref_np = ref.detach().to("cpu", torch.float64).numpy()
    pesq_vals, stoi_vals = [], []
    for e, r in zip(est_np, ref_np):
        stoi_vals.append(float(stoi_fn(r, e, sample_rate, extended=False)))
        if sample_rate in (8000, 16000):
            rate, mode, rr, ee = sample_rate, ("nb" if sample_rate == 8000 else "wb"), r, e
        else:
            rate, mode = 16000, "wb"
            rr, ee = _resample(r, sample_rate, rate), _resample(e, sample_rate, rate)
        try:
            pesq_vals.append(float(pesq_fn(rate, rr, ee, mode)))
        except Exception:  # pesq raises its own error types for silent / too-short input
            pesq_vals.append(math.nan)
    return sum(pesq_vals) / len(pesq_vals), sum(stoi_vals) / len(stoi_vals)


def utterance_metrics(
    est: Tensor,
    ref: Tensor,
    mix: Tensor,
    mix_clean: Tensor | None = None,
    *,
    sample_rate: int = 8000,
    with_pesq: bool = False,
) -> tuple[dict[str, float], Tensor]:
    """All report metrics of one utterance, against the PIT-matched references.

    The estimates are matched to the references by SI-SNR PIT; every metric is then the mean over
    sources of the metric of the matched pair. Improvements subtract the same metric of the
    unprocessed model input ``mix`` against each reference.

    Args:
        est: estimates (C, T), unpadded.
        ref: references (C, T).
        mix: model input (T,), the noisy mixture.
        mix_clean: Σ sources (T,) for the input SNR; None leaves ``input_snr`` NaN.
        sample_rate: audio rate (PESQ mode, STOI).
        with_pesq: also compute ``pesq`` and ``stoi`` (needs ``usgm[eval]``).

    Returns:
        (metrics dict with ``input_snr, si_snr, si_snr_i, sdr, sdr_i`` [+ ``pesq, stoi``],
        ``perm`` (C,) with ``est[perm[c]]`` matched to ``ref[c]``).

    Raises:
        ValueError: an input holds NaN/Inf (named in the message).
    """
    _require_finite(est=est, ref=ref, mix=mix, mix_clean=mix_clean)
    est = est.float()
    ref = ref.float()
    mix = mix.float()
    perm, sisnr = pit_permutation(est, ref)
    est_m = est[perm]
    mix_rep = mix.expand_as(ref)
    sisnr_mix = si_snr(mix_rep, ref)
    # One call: row 0 = matched estimates, row 1 = the mixture, both against each reference.
    sdr = bss_sdr(torch.stack([est_m, mix_rep]), ref)
    out = {
        "input_snr": float(input_snr(mix, mix_clean)) if mix_clean is not None else math.nan,
        "si_snr": float(sisnr.mean()),
        "si_snr_i": float((sisnr - sisnr_mix).mean()),
        "sdr": float(sdr[0].mean()),
        "sdr_i": float((sdr[0] - sdr[1]).mean()),
    }
    if with_pesq:
        out["pesq"], out["stoi"] = pesq_stoi(est_m, ref, sample_rate)
    return out, perm
