"""Metrics against independent references: mir_eval for SDR, direct float64 formulas otherwise."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from usgm.evaluation.metrics import (
    bss_sdr,
    input_snr,
    pesq_stoi,
    pit_permutation,
    utterance_metrics,
)
from usgm.losses import pit_si_snr


def mir_sdr(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    import mir_eval.separation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bss_eval_sources is marked deprecated in mir_eval 0.8
        return mir_eval.separation.bss_eval_sources(refs, ests, compute_permutation=False)[0]


def speechlike(rng: np.random.Generator, n: int, sr: int = 8000) -> np.ndarray:
    """Speech-shaped stand-in: AR(2) 'formant' noise with a ~4 Hz syllable envelope and pauses."""
    x = lfilter([1.0], [1.0, -1.6, 0.8], rng.standard_normal(n))
    t = np.arange(n) / sr
    env = np.clip(np.sin(2 * np.pi * (3 + rng.random()) * t + rng.random() * 6), 0, None) ** 2
    env *= np.abs(np.convolve(rng.standard_normal(n), np.ones(sr // 20) / (sr // 20), "same"))
    return 0.1 * x * env / np.abs(x * env).max()


def si_snr_np(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * math.log10((target @ target) / ((est - target) @ (est - target)))


def degrade(rng: np.random.Generator, refs: np.ndarray, leak: float, noise: float) -> np.ndarray:
    """Estimates = filtered own source + cross-talk + white noise (every BSS-eval term non-zero)."""
    c = refs.shape[0]
    mix = np.roll(np.eye(c), 1, axis=1) * leak + np.eye(c)
    est = lfilter([1.0, 0.4, -0.2], [1.0], mix @ refs, axis=-1)
    return est + noise * refs.std() * rng.standard_normal(refs.shape)


@pytest.mark.parametrize("n_src", [2, 3])
def test_sdr_matches_mir_eval_random(n_src: int) -> None:
    rng = np.random.default_rng(n_src)
    refs = rng.standard_normal((n_src, 3000))
    ests = degrade(rng, refs, 0.3, 0.2)
    ours = bss_sdr(torch.from_numpy(ests), torch.from_numpy(refs)).numpy()
    assert np.abs(ours - mir_sdr(refs, ests)).max() < 0.01


def test_sdr_matches_mir_eval_speechlike() -> None:
    rng = np.random.default_rng(7)
    refs = np.stack([speechlike(rng, 16000) for _ in range(2)])
    worst = 0.0
    for leak, noise in ((0.1, 0.05), (0.5, 0.3), (1.0, 1.0)):
        ests = degrade(rng, refs, leak, noise).astype(np.float32)
        ours = bss_sdr(torch.from_numpy(ests), torch.from_numpy(refs.astype(np.float32))).numpy()
        theirs = mir_sdr(refs.astype(np.float32).astype(np.float64), ests.astype(np.float64))
        worst = max(worst, float(np.abs(ours - theirs).max()))
    assert worst < 0.01
    # The mixture as estimate (the SDRi baseline).
    mix = refs.sum(0) + 0.02 * rng.standard_normal(refs.shape[1])
    ours = bss_sdr(torch.from_numpy(mix), torch.from_numpy(refs)).numpy()
    assert np.abs(ours - mir_sdr(refs, np.stack([mix, mix]))).max() < 0.01


def test_sdr_broadcasts_and_keeps_device_dtype() -> None:
    rng = np.random.default_rng(1)
    refs = torch.from_numpy(rng.standard_normal((2, 2000)))
    ests = torch.from_numpy(rng.standard_normal((3, 2, 2000))) + refs
    batched = bss_sdr(ests, refs)
    assert batched.shape == (3, 2) and batched.dtype == torch.float64
    for i in range(3):
        assert torch.allclose(batched[i], bss_sdr(ests[i], refs), atol=1e-9)


def test_input_snr_formula() -> None:
    rng = np.random.default_rng(2)
    clean = rng.standard_normal(1000)
    noise = 0.3 * rng.standard_normal(1000)
    expected = 10 * math.log10((clean @ clean) / (noise @ noise))
    got = float(input_snr(torch.from_numpy(clean + noise), torch.from_numpy(clean)))
    assert got == pytest.approx(expected, abs=1e-9)
    assert math.isinf(float(input_snr(torch.ones(10), torch.ones(10))))


def test_utterance_metrics_against_references() -> None:
    rng = np.random.default_rng(3)
    refs = np.stack([speechlike(rng, 8000) for _ in range(3)]).astype(np.float32)
    noise = (0.01 * rng.standard_normal(8000)).astype(np.float32)
    mix = refs.sum(0) + noise
    ests = degrade(rng, refs.astype(np.float64), 0.2, 0.1).astype(np.float32)
    order = [2, 0, 1]  # the model returns the speakers in another order
    m, perm = utterance_metrics(
        torch.from_numpy(ests[order]),
        torch.from_numpy(refs),
        torch.from_numpy(mix),
        torch.from_numpy(refs.sum(0)),
    )
    assert [order[int(p)] for p in perm] == [0, 1, 2]
    r64, e64, m64 = refs.astype(np.float64), ests.astype(np.float64), mix.astype(np.float64)
    si = np.array([si_snr_np(e, r) for e, r in zip(e64, r64)])
    si0 = np.array([si_snr_np(m64, r) for r in r64])
    sdr = mir_sdr(r64, e64)
    sdr0 = mir_sdr(r64, np.stack([m64] * 3))
    clean = r64.sum(0)
    assert m["si_snr"] == pytest.approx(si.mean(), abs=1e-3)
    assert m["si_snr_i"] == pytest.approx((si - si0).mean(), abs=1e-3)
    assert m["sdr"] == pytest.approx(sdr.mean(), abs=0.01)
    assert m["sdr_i"] == pytest.approx((sdr - sdr0).mean(), abs=0.01)
    snr = 10 * math.log10((clean @ clean) / ((m64 - clean) @ (m64 - clean)))
    assert m["input_snr"] == pytest.approx(snr, abs=1e-3)


def test_pit_permutation_agrees_with_losses() -> None:
    torch.manual_seed(0)
    ref = torch.randn(3, 500)
    est = ref[[1, 2, 0]] + 0.3 * torch.randn(3, 500)
    perm, per_src = pit_permutation(est, ref)
    assert perm.tolist() == [2, 0, 1]
    best, _ = pit_si_snr(est[None], ref[None])
    assert float(per_src.mean()) == pytest.approx(float(best[0]), abs=1e-5)


@pytest.mark.parametrize("sr", [8000, 16000])
def test_pesq_stoi_ranges(sr: int) -> None:
    rng = np.random.default_rng(sr)
    ref = torch.from_numpy(np.stack([speechlike(rng, sr, sr) for _ in range(2)]).astype(np.float32))
    est = ref + 0.005 * torch.randn_like(ref)
    p, s = pesq_stoi(est, ref, sr)
    assert 1.0 <= p <= 4.7 and 0.5 <= s <= 1.0
    p_bad, s_bad = pesq_stoi(ref.flip(0) + 0.05 * torch.randn_like(ref), ref, sr)
    assert p_bad < p and s_bad < s


def test_pesq_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pesq", None)  # import pesq → ImportError
    with pytest.raises(ImportError, match=r"usgm\[eval\]"):
        pesq_stoi(torch.zeros(1, 8000), torch.zeros(1, 8000), 8000)


def test_sdr_ill_conditioned_and_multithreaded() -> None:
    """A pure tone (near-singular Toeplitz system) and the 2-thread CPU path both match mir_eval."""
    rng = np.random.default_rng(5)
    tone = np.sin(0.05 * np.arange(4000))
    refs = np.stack([tone, rng.standard_normal(4000)])
    ests = refs + 0.1 * rng.standard_normal(refs.shape)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # batched LU is broken with >1 thread in torch 2.14 (CPU)
        ours = bss_sdr(torch.from_numpy(ests), torch.from_numpy(refs)).numpy()
    finally:
        torch.set_num_threads(threads)
    assert np.abs(ours - mir_sdr(refs, ests)).max() < 0.01


@pytest.mark.parametrize("where", ["est", "ref", "mix"])
def test_non_finite_inputs_raise_a_clear_error(where: str) -> None:
    """NaN anywhere: a ValueError naming the input, not torch.linalg.lstsq's internal assert."""
    torch.manual_seed(0)
    sig = {k: torch.randn(2, 4000) for k in ("est", "ref")} | {"mix": torch.randn(4000)}
    sig[where][..., 17] = float("nan")
    with pytest.raises(ValueError, match=f"{where} holds non-finite values"):
        utterance_metrics(sig["est"], sig["ref"], sig["mix"])
    if where != "mix":
        with pytest.raises(ValueError, match=f"{where} holds non-finite"):
            bss_sdr(sig["est"], sig["ref"])
