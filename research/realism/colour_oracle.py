"""How far can a mixture's people be told apart by their recording's colouring alone?

The *colour oracle* separates each mixture with a time-invariant Wiener filter built from the
true sources' long-term power spectra, ``M_i(f) = P_i(f) / (sum_j P_j(f) + P_n(f))`` applied to
the noisy mixture's STFT. It knows nothing of when anyone talks, only each source's average
spectrum, so its SI-SNRi measures how much a set's pairs differ in spectral colour (voice
timbre, EQ, band limit, microphone), the cue that the channel probe found the models
lean on. A set with a higher colour-oracle score is easier for any model that separates by
colour; the score is model-free, so it says whether a probe's gain is a learned habit or just
an easier set.

Sets: the real-speech dev set (plain and under the channel probe's ``one_eq`` / ``both_eq``
chains, :func:`real_speech_transfer.channel_probe_mixtures`) and the test split of any
generated corpus (``--synthetic-root``, repeatable; ``--split train-360`` for what a model
trains on).

Example:
    python research/realism/colour_oracle.py --mix-dir data/real_speech/mix \\
        --synthetic-root data/default_2mix --out colour_oracle.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_speech_transfer as rst

from usgm.losses import si_snr

N_FFT = 256  # 32 ms at 8 kHz (hop a quarter of it)


def colour_oracle(
    mix: np.ndarray, sources: np.ndarray, n_fft: int = N_FFT, stationary: bool = True
) -> np.ndarray:
    """Separate with each source's long-term spectrum as a stationary Wiener filter.

    Args:
        mix: Noisy mixture, shape (T,).
        sources: Clean sources, shape (C, T); the noise is ``mix - sources.sum(0)``.
        n_fft: STFT size (hop ``n_fft // 4``, Hann window).
        stationary: False gives the time-varying ideal ratio mask ``|S_i|^2 / (sum_j |S_j|^2
            + |N|^2)`` per frame instead: the reference for what knowing *when* each source
            is where in frequency adds to knowing its colour.

    Returns:
        Estimates, shape (C, T), float64, in the order of ``sources``.
    """
    m = torch.from_numpy(np.asarray(mix, dtype=np.float64))
    s = torch.from_numpy(np.asarray(sources, dtype=np.float64))
    n = m - s.sum(0)
    win = torch.hann_window(n_fft, dtype=torch.float64)

    def stft(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, n_fft, n_fft // 4, window=win, return_complex=True)

    psd = stft(s).abs().pow(2)  # (C, F, frames)
    noise_psd = stft(n).abs().pow(2)  # (F, frames)
    if stationary:
        psd, noise_psd = psd.mean(-1, keepdim=True), noise_psd.mean(-1, keepdim=True)
    mask = psd / (psd.sum(0) + noise_psd).clamp_min(1e-20)
    est = torch.istft(mask * stft(m), n_fft, n_fft // 4, window=win, length=len(m))
    return est.numpy()


def score_set(mixtures: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Mean colour-oracle SI-SNRi (oracle assignment, no PIT) over ``(id, mix, sources)``.

    Returns:
        ``{"n", "si_snri", "si_snri_stats", "irm_si_snri", "per_mixture"}`` (dB; ``irm_*``:
        the time-varying ideal ratio mask, as reference).
    """
    per: dict[str, float] = {}
    irm: list[float] = []
    for uid, mix, srcs in mixtures:
        ref = torch.from_numpy(np.asarray(srcs, dtype=np.float64))
        base = si_snr(torch.from_numpy(np.asarray(mix, np.float64)).expand_as(ref), ref)
        est = torch.from_numpy(colour_oracle(mix, srcs))
        per[uid] = float((si_snr(est, ref) - base).mean())
        est = torch.from_numpy(colour_oracle(mix, srcs, stationary=False))
        irm.append(float((si_snr(est, ref) - base).mean()))
    vals = list(per.values())
    return {
        "n": len(vals),
        "si_snri": float(np.mean(vals)) if vals else float("nan"),
        "si_snri_stats": rst._stats(vals) if vals else None,
        "irm_si_snri": float(np.mean(irm)) if irm else float("nan"),
        "per_mixture": {k: round(v, 3) for k, v in per.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mix-dir", type=Path, default=rst.DEFAULT_CACHE / "mix")
    p.add_argument("--n-src", type=int, default=2)
    p.add_argument("--synthetic-root", type=Path, action="append", default=[],
                   help="generated corpus to score (repeatable)")  # fmt: skip
    p.add_argument("--split", default="test", choices=("test", "dev", "train-360"),
                   help="split of the generated corpora to score")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="at most this many mixtures per corpus")
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    args = p.parse_args(argv)

    folder = args.mix_dir / f"real{args.n_src}mix_dev"
    items = rst.load_set(folder)
    if items is None:
        print(f"error: no built real-speech set in {folder} (build it with "
              f"real_speech_transfer.py --build-only --n-src {args.n_src})", file=sys.stderr)  # fmt: skip
        return 2
    for root in args.synthetic_root:  # before any scoring: a wrong path fails at once
        if not (root / "DONE").exists():
            print(f"error: {root} is not a generated corpus (no DONE file)", file=sys.stderr)
            return 2
    plain = score_set(rst.mixtures_from_set(items))
    report: dict[str, Any] = {"n_fft": N_FFT, "split": args.split, "real": {"plain": plain}}
    for probe in ("one_eq", "both_eq"):
        r = score_set(rst.channel_probe_mixtures(items, probe))
        base = plain["per_mixture"]
        r["change"] = rst._stats([v - base[u] for u, v in r["per_mixture"].items()])
        report["real"][probe] = r
    report["synthetic"] = {}
    for root in args.synthetic_root:
        report["synthetic"][str(root)] = score_set(
            rst.synthetic_mixtures(root, args.n_src, args.limit, args.split)
        )
    for name, r in [*report["real"].items(), *report["synthetic"].items()]:
        extra = (
            f"  change {r['change']['mean']:+.2f} ± {r['change']['ci95']:.2f}"
            if "change" in r
            else ""
        )
        print(f"{name:40s} n={r['n']:4d}  colour oracle SI-SNRi {r['si_snri']:+6.2f} "
              f"± {r['si_snri_stats']['ci95']:.2f}  (IRM {r['irm_si_snri']:+6.2f}){extra}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
