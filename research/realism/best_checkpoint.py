"""The best of a run's epoch checkpoints by their exact validation score.

``gpu_transfer_run.sh`` scores the best checkpoint over all of a run's calls (stage 1, resume,
stage 2: one run directory each). File names carry the score rounded to 0.01 dB, and two
epochs can tie there; the exact ``current_score`` that Lightning's ``ModelCheckpoint`` stored in
each file decides (the file name's number where a file lacks it).

    python research/realism/best_checkpoint.py RUN/logs/*/runs/*/checkpoints/epoch*.ckpt
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

NAME_SCORE = re.compile(r"sisnri(-?[0-9.]+)\.ckpt$")


def checkpoint_score(path: str | Path) -> float:
    """Validation SI-SNRi a checkpoint was saved with (dB), exact where the file stores it.

    Raises:
        ValueError: neither the file's ModelCheckpoint state nor its name gives a score.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("current_score") is not None:
            return float(state["current_score"])
    m = NAME_SCORE.search(str(path))
    if m is None:
        raise ValueError(f"{path}: no validation score in the checkpoint or its file name")
    return float(m.group(1))


def best_checkpoint(paths: Sequence[str | Path]) -> Path:
    """The path with the highest :func:`checkpoint_score` (the earlier one of exact ties)."""
    if not paths:
        raise ValueError("no checkpoints given")
    scores = [checkpoint_score(p) for p in paths]
    return Path(paths[max(range(len(paths)), key=lambda i: (scores[i], -i))])


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    try:
        print(best_checkpoint(paths))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
