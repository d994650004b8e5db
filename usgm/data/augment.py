"""Training-time augmentation: speed perturbation and dynamic mixing.

Speed perturbation follows the paper's recipe (Hu et al., ICASSP 2023, Sec. 3.2, after SepFormer's
SpeechBrain recipe): every source is independently played at 95, 100 or 105 % speed, then the
mixture is re-summed from the perturbed sources plus the *unperturbed* noise and ``mix_clean`` is
recomputed; all signals are cut to the shortest (LibriMix ``min`` mode).

Method: a speed factor ``f`` (> 1 faster, shorter) is band-limited resampling by the reduced
fraction ``f = p/q`` (``Fraction(f).limit_denominator(100)``, e.g. 0.95 = 19/20, 1.05 = 21/20):
``torchaudio.transforms.Resample(orig_freq=p, new_freq=q)`` (sinc interpolation, Hann window,
width 6, rolloff 0.99) turns T samples into ``ceil(T·q/p) ≈ T/f`` and, played at the original
rate, changes tempo and pitch by ``f`` (like sox ``speed``). This is exactly resampling
``sr → sr/f`` (8000 → 8421.05… for 0.95), but with the kernel of the reduced ratio: 20 phases
instead of the 8421 × 8014-tap kernel of ``8000 → round(8000/0.95)``, which costs seconds per
call. One Resample module (its kernel) is cached per factor.

Dynamic mixing (SepFormer / Wavesplit style): each training item is a new mixture drawn from the
split's source and noise files (speakers distinct where the IDs tell them), with fresh LibriMix
gains from :func:`usgm.data.mixing.mix_librimix` (speech U(−33, −25) LUFS, noise U(−38, −30)
LUFS, peak ≤ 0.9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchaudio.transforms import Resample

from usgm.data.errors import DataError
from usgm.data.librimix import Utterance

MAX_DENOMINATOR = 100


def speed_ratio(factor: float) -> tuple[int, int]:
    """``(orig_freq, new_freq)`` whose resampling plays a signal ``factor`` times faster.

    Example: ``speed_ratio(0.95) == (19, 20)``, ``speed_ratio(1.05) == (21, 20)``.
    """
    frac = Fraction(float(factor)).limit_denominator(MAX_DENOMINATOR)
    return frac.numerator, frac.denominator


class SpeedPerturb:
    """Independent per-source speed perturbation (each source draws its own factor).

    Args:
        factors: speed factors to choose from uniformly, e.g. ``(0.95, 1.0, 1.05)``.
    """

    def __init__(self, factors: Sequence[float] = (0.95, 1.0, 1.05)) -> None:
        factors = tuple(float(f) for f in factors)
        if not factors or any(not (0.5 <= f <= 2.0) for f in factors):
            raise DataError(
                f"data.speed_factors={list(factors)} must be non-empty, each in [0.5, 2]"
            )
        self.factors = factors
        self._resamplers: dict[tuple[int, int], Resample] = {}

    @property
    def max_factor(self) -> float:
        """The fastest factor: how many input samples one output sample may need."""
        return max(self.factors)

    def draw(self, n: int, rng: np.random.Generator) -> list[float]:
        """Choose ``n`` factors uniformly and independently."""
        return [self.factors[i] for i in rng.integers(len(self.factors), size=n)]

    def apply(self, x: Tensor, factor: float) -> Tensor:
        """Play ``x`` (..., T) at ``factor`` × speed → (..., ≈T/factor)."""
        orig, new = speed_ratio(factor)
        if orig == new:
            return x
        res = self._resamplers.get((orig, new))
        if res is None:
            res = self._resamplers[(orig, new)] = Resample(orig, new, dtype=torch.float32)
        with torch.no_grad():
            return res(x)

    def __call__(self, sources: Sequence[Tensor], factors: Sequence[float]) -> list[Tensor]:
        """Perturb each (T_i,) source with its factor; lengths differ afterwards."""
        return [self.apply(s, f) for s, f in zip(sources, factors, strict=True)]


def remix(
    sources: Sequence[Tensor], noise: Tensor | None, length: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut everything to the shortest (``min`` mode) and re-sum the mixtures.

    Args:
        sources: C tensors (T_i,).
        noise: (T_n,) or None (clean task).
        length: optional cap on the output length (the training segment).

    Returns:
        ``(sources (C, T), mix_clean (T,), mix (T,))`` with ``mix_clean = Σ sources`` and
        ``mix = mix_clean + noise`` (``mix = mix_clean`` without noise).
    """
    lens = [s.shape[-1] for s in sources] + ([noise.shape[-1]] if noise is not None else [])
    t = min(lens) if length is None else min([*lens, length])
    src = torch.stack([s[..., :t] for s in sources])
    mix_clean = src.sum(0)
    mix = mix_clean + noise[:t] if noise is not None else mix_clean.clone()
    return src, mix_clean, mix


@dataclass(frozen=True)
class PoolItem:
    """One source or noise file available to dynamic mixing."""

    path: Path
    length: int
    speaker: str
    label: str


def _speaker(utt_id: str, k: int, n_src: int) -> str | None:
    """Speaker of source ``k`` from a LibriMix ID ``spk-chap-utt_spk-chap-utt``, if it parses."""
    parts = utt_id.split("_")
    if len(parts) != n_src:
        return None
    return parts[k].split("-")[0] or None


class DynamicMixer:
    """Draws new mixtures from a split's sources and noises, with LibriMix gains.

    Args:
        utterances: the split (its source files and noise files form the pools).
        n_src: speakers per mixture.
        sample_rate: for the loudness measurement.
        use_noise: add a noise file (sep_noisy); False for sep_clean.
        min_length: leave out files shorter than this (samples; the ``drop`` policy).
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        n_src: int,
        sample_rate: int,
        use_noise: bool = True,
        min_length: int = 0,
    ) -> None:
        self.n_src = n_src
        self.sample_rate = sample_rate
        self.sources: list[PoolItem] = []
        self.noises: list[PoolItem] = []
        for utt in utterances:
            if utt.length < min_length:
                continue
            for k, path in enumerate(utt.sources):
                spk = _speaker(utt.id, k, len(utt.sources)) or f"{utt.id}/s{k + 1}"
                self.sources.append(PoolItem(path, utt.length, spk, f"{utt.id}/s{k + 1}"))
            if use_noise:
                if utt.noise is None:
                    raise DataError(f"dynamic mixing with noise needs noise_path for {utt.id!r}")
                self.noises.append(PoolItem(utt.noise, utt.length, "noise", f"{utt.id}/noise"))
        if len(self.sources) < n_src or (use_noise and not self.noises):
            raise DataError(
                f"dynamic mixing needs at least {n_src} source files"
                + (" and one noise file" if use_noise else "")
                + f" (long enough); the split has {len(self.sources)} sources"
            )
        self.use_noise = use_noise

    def draw(self, rng: np.random.Generator) -> tuple[list[PoolItem], PoolItem | None]:
        """Pick ``n_src`` source files of distinct speakers (when possible) and a noise file."""
        picked: list[PoolItem] = []
        for _ in range(20):
            idx = rng.choice(len(self.sources), size=self.n_src, replace=False)
            picked = [self.sources[i] for i in idx]
            if len({p.speaker for p in picked}) == self.n_src:
                break
        noise = self.noises[int(rng.integers(len(self.noises)))] if self.use_noise else None
        return picked, noise

    def gains(
        self, sources: list[np.ndarray], noise: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Rescale to random LibriMix loudness (see :func:`usgm.data.mixing.mix_librimix`)."""
        from usgm.data.mixing import mix_librimix  # lazy: pulls in the loudness meter

        return mix_librimix(sources, noise, self.sample_rate, rng, mode="min")
