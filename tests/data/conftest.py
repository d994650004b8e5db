"""Tiny random-signal corpora in the LibriMix layout, for the data tests.

The signals are random noise (no speech), written as PCM_16 with the mixtures summed in the int16
domain so that ``mix_clean == Σ sources`` and ``mix_both == mix_clean + noise`` hold exactly on
the float values read back. The CSVs record absolute paths under a non-existent old location
(like real LibriMix metadata copied from another machine) unless ``old_prefix=None``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

OLD_PREFIX = "/nonexistent/old_machine/LibriMix"


def write_librimix(
    root: Path,
    *,
    n_src: int = 2,
    splits: dict[str, int] | None = None,
    sample_rate: int = 8000,
    mode: str = "min",
    seconds: tuple[float, float] = (0.5, 1.5),
    old_prefix: str | None = OLD_PREFIX,
    seed: int = 0,
) -> Path:
    """Write a tiny LibriMix-layout corpus under ``root`` and return ``root``.

    Args:
        root: destination (created).
        n_src: speakers per mixture.
        splits: mixtures per split (default train-360: 6, dev: 4, test: 4).
        sample_rate: file rate; the folder is ``wav{sr//1000}k``.
        mode: ``min`` or ``max`` folder.
        seconds: range of utterance durations.
        old_prefix: absolute prefix recorded in the CSVs (None: the real paths).
        seed: random seed.
    """
    splits = splits or {"train-360": 6, "dev": 4, "test": 4}
    rng = np.random.default_rng(seed)
    folder = f"wav{sample_rate // 1000}k"
    base = root / folder / mode
    meta = base / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    recorded = Path(old_prefix) if old_prefix else root
    spk = 100
    for split, n_mix in splits.items():
        kinds = ["mix_both", "mix_clean", *(f"s{k + 1}" for k in range(n_src)), "noise"]
        for kind in kinds:
            (base / split / kind).mkdir(parents=True, exist_ok=True)
        rows_both, rows_clean = [], []
        for m in range(n_mix):
            parts = []
            for _ in range(n_src):
                spk += 1
                parts.append(f"{spk}-{rng.integers(1000, 9999)}-{m:04d}")
            uid = "_".join(parts)
            length = int(rng.integers(int(seconds[0] * sample_rate), int(seconds[1] * sample_rate)))
            srcs = [
                np.clip(rng.normal(0, 0.05 * 32768, length), -6000, 6000).astype(np.int16)
                for _ in range(n_src)
            ]
            noise = np.clip(rng.normal(0, 0.02 * 32768, length), -3000, 3000).astype(np.int16)
            clean = np.sum([s.astype(np.int32) for s in srcs], axis=0)
            both = clean + noise
            signals = {"mix_both": both, "mix_clean": clean, "noise": noise}
            signals |= {f"s{k + 1}": s for k, s in enumerate(srcs)}
            paths = {}
            for kind, sig in signals.items():
                rel = Path(split) / kind / f"{uid}.wav"
                sf.write(base / rel, sig.astype(np.int16), sample_rate, subtype="PCM_16")
                paths[kind] = str(recorded / folder / mode / rel)
            src_paths = [paths[f"s{k + 1}"] for k in range(n_src)]
            rows_both.append([uid, paths["mix_both"], *src_paths, paths["noise"], length])
            rows_clean.append([uid, paths["mix_clean"], *src_paths, length])
        src_cols = [f"source_{k + 1}_path" for k in range(n_src)]
        for kind, rows, cols in (
            ("mix_both", rows_both, ["noise_path"]),
            ("mix_clean", rows_clean, []),
        ):
            with open(meta / f"mixture_{split}_{kind}.csv", "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["mixture_ID", "mixture_path", *src_cols, *cols, "length"])
                writer.writerows(rows)
    return root


@pytest.fixture
def make_librimix(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_librimix(name="Libri2Mix", **write_librimix_kwargs) -> root``."""

    def make(name: str = "Libri2Mix", **kwargs) -> Path:
        return write_librimix(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def libri2mix(make_librimix) -> Path:
    """A 2-speaker tiny corpus (train-360 6, dev 4, test 4 mixtures of 0.5–1.5 s)."""
    return make_librimix("Libri2Mix", n_src=2)
