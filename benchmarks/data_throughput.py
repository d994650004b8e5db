r"""Audio-seconds per second that the training DataModule delivers.

Builds :class:`usgm.data.datamodule.LibriMixDataModule` as training does (speed perturbation on,
optionally dynamic mixing; fixed segments or whole utterances batched by duration), iterates its
training DataLoader with ``--workers`` persistent worker processes and reports, after
``--warmup`` batches, the valid audio (Σ ``lengths``, padding not counted) delivered per second
of wall time over ``--batches`` batches. Epoch boundaries inside the measured window are
included (``set_epoch`` then a new iterator, as Lightning does), so a per-epoch respawn cost
would show; the row records how many were crossed. Nothing is sent to a GPU: this is the rate
the input pipeline can sustain, to compare with what a training step consumes (``--target``,
1,800 audio-s/s by default: 3× a 600 audio-s/s training step).

Each mode writes a JSON line to ``--out/data_throughput.jsonl`` and a Markdown row to
``--out/data_throughput.md``.

Examples:
    python benchmarks/data_throughput.py --smoke --out results/        # tiny, CPU, seconds (tests)
    python benchmarks/data_throughput.py --root data/default_2mix --workers 4 8 12 16 --out results/
    python benchmarks/data_throughput.py --root /data/Libri2Mix --workers 12 --segment 0 \
        --batch-seconds 64 --out results/                             # whole utterances
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from usgm.data.datamodule import LibriMixDataModule

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling report.py
from report import emit

MODES = {"speed": {"dynamic_mixing": False}, "speed+dm": {"dynamic_mixing": True}}


def measure(
    root: Path,
    *,
    mode: str,
    workers: int,
    batches: int,
    warmup: int,
    segment: float | None,
    batch_size: int,
    batch_seconds: float | None,
    sample_rate: int,
    split: str,
    seed: int = 0,
) -> dict:
    """Deliver ``warmup + batches`` training batches; returns the JSON row.

    Args:
        root: LibriMix root or the generated corpus.
        mode: a key of :data:`MODES` (speed perturbation is always on).
        workers: DataLoader worker processes (persistent when > 0).
        batches: measured batches (after the warm-up).
        warmup: batches before the clock starts (worker start-up, page cache, first reads).
        segment: training segment in seconds; None: whole utterances.
        batch_size: items per batch (segments; whole utterances without ``batch_seconds``).
        batch_seconds: whole utterances batched by total padded duration.
        sample_rate: 8000 or 16000.
        split: training split folder.
        seed: data seed.

    Returns:
        The row: settings, ``audio_s_per_s`` (valid audio seconds per wall second),
        ``batches_per_s``, ``padding_frac`` (padded share of the delivered tensors),
        ``first_batch_s`` (loader creation to first batch), ``epochs_crossed``.
    """
    dm = LibriMixDataModule(
        root,
        sample_rate=sample_rate,
        train_split=split,
        segment=segment,
        batch_size=batch_size,
        batch_seconds=batch_seconds,
        num_workers=workers,
        speed_perturb=True,
        validate="none",  # the measurement is of delivery, not of the up-front checks
        seed=seed,
        **MODES[mode],
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    epoch = 0
    t_start = time.perf_counter()
    first_batch_s = None
    it = iter(loader)
    audio = padded = 0.0
    done = 0
    epochs_crossed = 0
    t0 = None
    while done < warmup + batches:
        try:
            batch = next(it)
        except StopIteration:  # a new epoch, as Lightning runs it: same persistent workers
            epoch += 1
            if t0 is not None:
                epochs_crossed += 1
            loader.sampler.set_epoch(epoch)
            it = iter(loader)
            continue
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - t_start
        done += 1
        if done == warmup:
            t0 = time.perf_counter()
        elif done > warmup:
            audio += float(batch["lengths"].sum()) / sample_rate
            padded += batch["mix"].numel() / sample_rate
    if t0 is None:  # warmup == 0
        raise SystemExit("--warmup must be >= 1 (the clock starts after a warm-up batch)")
    wall = time.perf_counter() - t0
    # Stop the persistent workers now: a live iterator inherited by the next mode's forked
    # workers would try to shut down processes that are not its children.
    shutdown = getattr(loader._iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    del it
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "root": str(root),
        "mode": mode,
        "workers": workers,
        "persistent_workers": bool(loader.persistent_workers),
        "segment": segment,
        "batch_size": None if batch_seconds else batch_size,
        "batch_seconds": batch_seconds,
        "batches": batches,
        "warmup": warmup,
        "audio_s_per_s": audio / wall,
        "batches_per_s": batches / wall,
        "padding_frac": 1.0 - audio / padded if padded else 0.0,
        "first_batch_s": first_batch_s,
        "epochs_crossed": epochs_crossed,
        "wall_s": wall,
    }


def markdown_row(r: dict, target: float) -> str:
    """``| date | host (cpus) | mode | workers | batching | audio-s/s | × target | pad | 1st |``."""
    batching = f"{r['batch_size']} × {r['segment']:g} s" if r["segment"] else "whole utts"
    if r["batch_seconds"]:
        batching = f"whole utts, ≤ {r['batch_seconds']:g} s/batch"
    return (
        f"| {r['date'][:10]} | {r['host']} ({r['cpus_usable']} cores) | {r['mode']} | "
        f"{r['workers']} | {batching} | {r['audio_s_per_s']:.0f} | "
        f"{r['audio_s_per_s'] / target:.2f} | {100 * r['padding_frac']:.1f} % | "
        f"{r['first_batch_s']:.1f} s |"
    )


def _emit(row: dict, out: Path | None, target: float) -> None:
    row = {**row, "target_audio_s_per_s": target}
    emit(row, out, "data_throughput", markdown_row(row, target))


def _smoke_corpus(folder: Path) -> Path:
    """A tiny generated corpus (eSpeak voices only: nothing to download)."""
    from usgm.data.synth import make_dataset

    return make_dataset(
        folder / "smoke_2mix", n_train=4, n_dev=1, n_test=1, num_workers=1, recorded_fraction=0.0
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("data/default_2mix"), help="corpus root")
    p.add_argument("--split", default="train-360")
    p.add_argument("--sample-rate", type=int, default=8000)
    p.add_argument("--modes", nargs="+", choices=sorted(MODES), default=sorted(MODES))
    p.add_argument("--workers", type=int, nargs="+", default=[8], help="one row per count")
    p.add_argument("--segment", type=float, default=4.0, help="seconds; 0: whole utterances")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-seconds", type=float, help="whole utterances batched by duration")
    p.add_argument("--batches", type=int, default=200, help="measured batches")
    p.add_argument("--warmup", type=int, default=20, help="batches before the clock starts")
    p.add_argument("--target", type=float, default=1800.0, help="audio-s/s the row compares to")
    p.add_argument("--out", type=Path, help="folder for the JSON lines and Markdown rows")
    p.add_argument("--smoke", action="store_true", help="tiny generated corpus, 1 worker, CPU")
    args = p.parse_args(argv)
    segment = args.segment or None
    with tempfile.TemporaryDirectory() as tmp:
        root, workers = args.root, args.workers
        batches, warmup, batch_size = args.batches, args.warmup, args.batch_size
        if args.smoke:
            root, workers = _smoke_corpus(Path(tmp)), [1]
            batches, warmup, batch_size, segment = 4, 1, 2, 1.0
        for n in workers:
            for mode in args.modes:
                row = measure(
                    root,
                    mode=mode,
                    workers=n,
                    batches=batches,
                    warmup=warmup,
                    segment=None if args.batch_seconds else segment,
                    batch_size=batch_size,
                    batch_seconds=args.batch_seconds,
                    sample_rate=args.sample_rate,
                    split=args.split,
                )
                _emit(row, args.out, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
