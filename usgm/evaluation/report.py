"""Evaluation reports: per-utterance CSV, summary JSON with 95 % confidence intervals, a printed
table, example audio folders, PNG plots, and logging to Lightning loggers (W&B table + audio)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ID_COLUMN = "mixture_ID"
BASE_COLUMNS = ("input_snr", "si_snr", "si_snr_i", "sdr", "sdr_i")
PESQ_COLUMNS = ("pesq", "stoi")
UNITS = {"input_snr": "dB", "si_snr": "dB", "si_snr_i": "dB", "sdr": "dB", "sdr_i": "dB"}
LABELS = {
    "input_snr": "input SNR",
    "si_snr": "SI-SNR",
    "si_snr_i": "SI-SNRi",
    "sdr": "SDR",
    "sdr_i": "SDRi",
    "pesq": "PESQ",
    "stoi": "STOI",
}


def _t_quantile(df: int) -> float:
    """Two-sided 95 % Student-t quantile (scipy when present, else the normal 1.96)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return 1.959963984540054


def column_stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, std and 95 % confidence interval (Student t) of the finite values of a column.

    Returns:
        ``{"mean", "std", "ci95_low", "ci95_high", "ci95_halfwidth", "n"}``; None where undefined.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {
            "mean": None,
            "std": None,
            "ci95_low": None,
            "ci95_high": None,
            "ci95_halfwidth": None,
            "n": 0,
        }
    mean = float(x.mean())
    if n < 2:
        return {
            "mean": mean,
            "std": None,
            "ci95_low": None,
            "ci95_high": None,
            "ci95_halfwidth": None,
            "n": n,
        }
    std = float(x.std(ddof=1))
    half = _t_quantile(n - 1) * std / math.sqrt(n)
    return {
        "mean": mean,
        "std": std,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "ci95_halfwidth": half,
        "n": n,
    }


def summarize(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, dict]:
    """Per-column statistics (see :func:`column_stats`) of the per-utterance rows."""
    return {c: column_stats([float(r[c]) for r in rows]) for c in columns}


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: Path) -> None:
    """``all_metrics.csv``: one row per utterance, ``mixture_ID`` then ``columns``."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([ID_COLUMN, *columns])
        for r in rows:
            w.writerow([r[ID_COLUMN], *(repr(float(r[c])) for c in columns)])


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(obj: Mapping[str, Any], path: Path) -> None:
    """Strict JSON (non-finite numbers become null)."""
    path.write_text(json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def format_table(stats: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Summary table: metric, mean, 95 % CI, n."""
    lines = [title] if title else []
    header = f"{'metric':<10s} {'mean':>9s} {'95% CI':>21s} {'n':>6s}"
    lines += [header, "-" * len(header)]
    for col, s in stats.items():
        unit = UNITS.get(col, "")
        if s["mean"] is None:
            lines.append(f"{LABELS.get(col, col):<10s} {'n/a':>9s} {'':>21s} {s['n']:>6d}")
            continue
        ci = f"[{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]" if s["ci95_low"] is not None else "n/a"
        lines.append(f"{LABELS.get(col, col):<10s} {s['mean']:>9.3f} {ci:>21s} {s['n']:>6d} {unit}")
    return "\n".join(lines)


def write_example(
    folder: Path,
    sample_rate: int,
    mix: np.ndarray,
    refs: np.ndarray,
    ests: np.ndarray,
    mix_clean: np.ndarray | None = None,
) -> None:
    """Example folder: ``mixture.wav``, ``mix_clean.wav``, ``s{k}.wav`` (references) and
    ``s{k}_est.wav`` (estimates, PIT-matched to ``s{k}``), 32-bit float so the saved values are
    exactly the evaluated ones.

    Args:
        folder: created if needed.
        sample_rate: audio rate.
        mix: (T,) model input. refs: (C, T). ests: (C, T), matched order.
        mix_clean: (T,) Σ sources or None.
    """
    folder.mkdir(parents=True, exist_ok=True)

    def wr(name: str, x: np.ndarray) -> None:
        sf.write(str(folder / name), np.asarray(x, dtype=np.float32), sample_rate, subtype="FLOAT")

    wr("mixture.wav", mix)
    if mix_clean is not None:
        wr("mix_clean.wav", mix_clean)
    for k, (r, e) in enumerate(zip(refs, ests), start=1):
        wr(f"s{k}.wav", r)
        wr(f"s{k}_est.wav", e)


def make_plots(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """PNG plots (matplotlib, Agg): SI-SNRi histogram; SI-SNRi against input SNR.

    The scatter plot is skipped when no utterance has a finite input SNR (clean task).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sisnri = np.array([float(r["si_snr_i"]) for r in rows])
    insnr = np.array([float(r["input_snr"]) for r in rows])
    written = []
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.hist(sisnri[np.isfinite(sisnri)], bins=min(50, max(5, len(rows) // 5)), color="C0")
    ax.axvline(
        float(np.nanmean(sisnri)),
        color="k",
        ls="--",
        lw=1,
        label=f"mean {np.nanmean(sisnri):.2f} dB",
    )
    ax.set_xlabel("SI-SNRi (dB)")
    ax.set_ylabel("utterances")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "si_snr_i_hist.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    ok = np.isfinite(insnr) & np.isfinite(sisnri)
    if ok.any():
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        ax.scatter(insnr[ok], sisnri[ok], s=6, alpha=0.6)
        ax.set_xlabel("input SNR of the noisy mixture (dB)")
        ax.set_ylabel("SI-SNRi (dB)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / "si_snr_i_vs_input_snr.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def log_to_loggers(
    loggers: Sequence[Any],
    stats: Mapping[str, Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    example_dirs: Sequence[Path] = (),
    plots: Sequence[Path] = (),
    prefix: str = "eval",
) -> None:
    """Mean metrics to every Lightning logger; W&B also gets the per-utterance table, the plots
    and the example audio."""
    means = {f"{prefix}/{c}": s["mean"] for c, s in stats.items() if s["mean"] is not None}
    for lg in loggers:
        lg.log_metrics(means)
        if type(lg).__name__ == "WandbLogger":
            _log_wandb(lg, rows, columns, example_dirs, plots, prefix)
        lg.finalize("success")


def _log_wandb(
    lg: Any,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    example_dirs: Sequence[Path],
    plots: Sequence[Path],
    prefix: str,
) -> None:
    import wandb

    table = wandb.Table(columns=[ID_COLUMN, *columns])
    for r in rows:
        table.add_data(r[ID_COLUMN], *(float(r[c]) for c in columns))
    payload: dict[str, Any] = {f"{prefix}/per_utterance": table}
    for png in plots:
        payload[f"{prefix}/{png.stem}"] = wandb.Image(str(png))
    for d in example_dirs:
        for wav in sorted(d.glob("*.wav")):
            audio, sr = sf.read(str(wav), dtype="float32")
            payload[f"{prefix}/examples/{d.name}/{wav.stem}"] = wandb.Audio(audio, sample_rate=sr)
    lg.experiment.log(payload)
