"""``usgm-make-data``: generate the offline default corpus in the LibriMix layout.

Example::

    usgm-make-data --out data/Libri2Mix-synth --n-src 2 --n-train 3000 --n-dev 200 --n-test 200

Prints the dataset root on stdout; progress goes to stderr (``--quiet`` silences it). Errors in
the arguments or the output location give one line on stderr and a non-zero exit code.

Recorded voices come from Debian's packages by default (a one-time download of about 378 MB,
announced before it starts). Without ``apt-get``, or when that download fails, the corpus is
built from eSpeak voices only and one line on stderr says so; ``--require-recorded`` (or
``--recorded-dir``) turns that into an error instead.
"""

from __future__ import annotations

import argparse
import sys

from usgm.data.errors import DataError

PROG = "usgm-make-data"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        raise _UsageError(message)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {value}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``usgm-make-data``."""
    p = _Parser(
        prog=PROG,
        description="Generate a small LibriMix-noisy-like corpus from synthetic speech (eSpeak NG) "
        "and synthetic café noise, in the real LibriMix layout (wav8k/min/...).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="dataset root to create")
    p.add_argument("--n-src", type=int, choices=(2, 3), default=2, help="speakers per mixture")
    p.add_argument("--n-train", type=_count, default=3000, metavar="N", help="train-360 mixtures")
    p.add_argument("--n-dev", type=_count, default=200, metavar="N", help="dev mixtures")
    p.add_argument("--n-test", type=_count, default=200, metavar="N", help="test mixtures")
    p.add_argument("--seed", type=_count, default=0, help="global seed (same seed: same files)")
    p.add_argument("--sample-rate", type=int, choices=(8000, 16000), default=8000)
    p.add_argument("--mode", choices=("min", "max"), default="min", help="LibriMix length mode")
    p.add_argument(
        "--num-workers", type=_positive, default=None, metavar="N",
        help="worker processes (default: all CPUs; does not change the output)",
    )  # fmt: skip
    p.add_argument(
        "--recorded-fraction", type=float, default=None, metavar="P",
        help="share of sources from recorded people (default 1.0; 0: eSpeak only, nothing fetched)",
    )  # fmt: skip
    p.add_argument(
        "--recorded-dir", default=None, metavar="DIR",
        help="recorded voices: one sub-folder per speaker ID (research/realism/pack_recorded.py), or "
        "train/, dev/, test/ with one sub-folder per speaker each (a corpus of your own; the "
        "split folders are the pools). Default: installed packages, cache, or apt-get download",
    )  # fmt: skip
    p.add_argument(
        "--require-recorded", action="store_true",
        help="fail when the recorded voices cannot be had (default: without apt-get, or when "
        "its download fails, build eSpeak-only data and say so)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``usgm-make-data``; returns the exit code (0 ok, 1 bad input/output, 2 usage)."""
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    from usgm.data.synth.writer import make_dataset

    try:
        root = make_dataset(
            args.out,
            n_src=args.n_src,
            n_train=args.n_train,
            n_dev=args.n_dev,
            n_test=args.n_test,
            seed=args.seed,
            sample_rate=args.sample_rate,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
            verbose=not args.quiet,
            mode=args.mode,
            recorded_dir=args.recorded_dir,
            require_recorded=args.require_recorded,
            **(
                {}
                if args.recorded_fraction is None
                else {"recorded_fraction": args.recorded_fraction}
            ),
        )
    except DataError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no dataset was written", file=sys.stderr)
        return 130
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
