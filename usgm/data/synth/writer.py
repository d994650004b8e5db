"""Build the default corpus on disk in the LibriMix layout, reproducibly and atomically.

Work is cut into fixed shards of ``options.shard_size`` mixtures per split. Every shard runs in a
fresh interpreter (:mod:`usgm.data.synth.worker`, ``num_workers`` at a time) with its own seed
derived from ``(seed, split, shard)``, and every mixture draws from a generator seeded by
``(seed, split, mixture index)``. Since eSpeak's hidden state only depends on what the process
synthesised before, the same seed gives byte-identical files whatever the number of workers.

The dataset is written into a sibling folder ``<out>.partial-<pid>``; the completion marker
:data:`COMPLETE_MARKER` (JSON with the build parameters) is written last, then the folder is
renamed to ``<out>``. A crash leaves only the ``.partial-*`` folder (removed by the next build),
never a half-written ``<out>``. :func:`is_complete` tells whether a root holds a finished build.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usgm.data.errors import DataError
from usgm.data.synth.options import (
    DEFAULT_COUNTS,
    DEFAULT_SEED,
    SPLIT_DIRS,
    SPLITS,
    SynthOptions,
)
from usgm.data.synth.voices import LANGUAGE_FILES, Speaker, babble_subpool, make_pools

if TYPE_CHECKING:
    from usgm.data.synth.worker import ShardTask

COMPLETE_MARKER = "DONE"
FORMAT = "usgm-synth"
FORMAT_VERSION = 1
SAMPLE_RATES = (8000, 16000)
_OWN_ENTRIES = {"wav8k", "wav16k", COMPLETE_MARKER, "speakers.csv"}


def rate_folder(sample_rate: int) -> str:
    """``wav8k`` / ``wav16k``."""
    return f"wav{sample_rate // 1000}k"


def is_complete(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds a finished generated dataset (its ``DONE`` marker is readable)."""
    return read_info(root) is not None


def read_info(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The build parameters recorded in ``root/DONE``, or None when absent or unreadable."""
    marker = Path(root) / COMPLETE_MARKER
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path) -> None:
    """Remove ``<root>.partial-<pid>`` / ``<root>.old-<pid>`` folders of dead builds."""
    if not root.parent.is_dir():
        return
    for path in root.parent.glob(f"{root.name}.*-*"):
        kind, _, pid = path.name[len(root.name) + 1 :].partition("-")
        if kind in ("partial", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _check_args(
    root: Path, n_src: int, counts: dict[str, int], seed: int, sample_rate: int,
    num_workers: int | None, overwrite: bool, speakers: tuple[int, ...],
) -> None:  # fmt: skip
    if n_src not in (2, 3):
        raise DataError(f"n_src must be 2 or 3, got {n_src}")
    for split, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise DataError(f"n_{split} must be a non-negative integer, got {n!r}")
    if sum(counts.values()) == 0:
        raise DataError("nothing to generate: n_train, n_dev and n_test are all 0")
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if min(speakers[:3]) < n_src:
        raise DataError(f"each speaker pool needs at least n_src={n_src} speakers, got {speakers}")
    if sample_rate not in SAMPLE_RATES:
        raise DataError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise DataError(f"num_workers must be a positive integer, got {num_workers!r}")
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise DataError(f"output {root} exists and is not a directory")
        entries = {p.name for p in root.iterdir()}
        if entries:
            if not overwrite:
                what = "a dataset" if is_complete(root) else "files"
                raise DataError(
                    f"output {root} already holds {what}; refusing to overwrite it "
                    "(pass --overwrite / overwrite=True to replace it)"
                )
            if not entries <= _OWN_ENTRIES:
                raise DataError(
                    f"output {root} holds files that are not a usgm dataset "
                    f"({', '.join(sorted(entries - _OWN_ENTRIES)[:3])}); not deleting it"
                )
    ancestor = root.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise DataError(f"output {root} is not writable (cannot create files in {ancestor})")


def _write_csvs(meta_dir: Path, final_base: Path, split: str, n_src: int, rows: list) -> None:
    """Write the two metadata CSVs of a split, with absolute paths under the *final* root."""
    final = final_base / SPLIT_DIRS[split]
    src_cols = [f"source_{j + 1}_path" for j in range(n_src)]
    for kind, extra in (("mix_both", ["noise_path"]), ("mix_clean", [])):
        with open(meta_dir / f"mixture_{SPLIT_DIRS[split]}_{kind}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["mixture_ID", "mixture_path", *src_cols, *extra, "length"])
            for _, mid, length in rows:
                srcs = [str(final / f"s{j + 1}" / f"{mid}.wav") for j in range(n_src)]
                noise = [str(final / "noise" / f"{mid}.wav")] if extra else []
                writer.writerow([mid, str(final / kind / f"{mid}.wav"), *srcs, *noise, length])


def _write_speakers(path: Path, pools: dict[str, list[Speaker]], recorded: list) -> None:
    """One row per speaker; recorded people (``source`` = recorded) leave the eSpeak fields empty."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["speaker_ID", "pool", "language", "text_language", "gender", "f0_base", "f0_top",
             "formant_scale_pct", "klatt", "rate_wpm", "source"]
        )  # fmt: skip
        for pool in pools.values():
            for s in pool:
                writer.writerow(
                    [s.spk_id, s.pool, s.language, s.text_language, s.gender, s.pitch[0],
                     s.pitch[1], s.formants[1][0], s.klatt, s.rate, "espeak"]
                )  # fmt: skip
        for r in recorded:
            writer.writerow([r.spk_id, r.pool, *[""] * 8, "recorded"])


def make_dataset(
    out: str | os.PathLike[str],
    n_src: int = 2,
    n_train: int = DEFAULT_COUNTS["n_train"],
    n_dev: int = DEFAULT_COUNTS["n_dev"],
    n_test: int = DEFAULT_COUNTS["n_test"],
    seed: int = DEFAULT_SEED,
    sample_rate: int = 8000,
    num_workers: int | None = None,
    *,
    overwrite: bool = False,
    verbose: bool = False,
    recorded_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    require_recorded: bool = False,
    **options: Any,
) -> Path:
    """Generate the synthetic LibriMix-noisy-like corpus.

    Writes ``out/wav8k/<mode>/{train-360,dev,test}/{mix_both,mix_clean,s1,s2[,s3],noise}/ID.wav``
    (PCM_16, exact int16 sums), ``out/wav8k/<mode>/metadata/mixture_<split>_{mix_both,mix_clean}
    .csv`` (absolute paths under ``out``), ``out/speakers.csv`` and, last, the ``out/DONE``
    marker.

    Args:
        out: dataset root to create (the folder that will contain ``wav8k/``).
        n_src: speakers per mixture, 2 or 3.
        n_train: mixtures in ``train-360``.
        n_dev: mixtures in ``dev``.
        n_test: mixtures in ``test``.
        seed: global seed; the same seed (and options) gives byte-identical audio files.
        sample_rate: 8000 or 16000 (folder ``wav8k`` / ``wav16k``).
        num_workers: worker processes (default: the CPUs available). Does not change the output.
        overwrite: replace an existing usgm dataset at ``out``.
        verbose: print progress to stderr.
        recorded_dir: folder of recorded speech: one sub-folder of clips per speaker ID, or
            ``train/``, ``dev/``, ``test/`` folders of per-speaker sub-folders (default:
            installed packages, then the cache, then ``apt-get download``); see
            :mod:`usgm.data.synth.recorded`. Unused when ``recorded_fraction`` is 0.
        cache_dir: where downloads and decoded banks are kept (default ``$USGM_CACHE`` or
            ``~/.cache/usgm``).
        require_recorded: fail when the recorded voices cannot be had. By default a build that
            asks for recorded voices from Debian's packages (``recorded_fraction`` > 0, no
            ``recorded_dir``) on a machine without ``apt-get``, or whose download fails, goes on
            with eSpeak-only sources (``recorded_fraction`` 0), says so in one line on stderr and
            records why in ``DONE`` (``recorded_fallback``). A ``recorded_dir`` is always
            required to work.
        **options: fields of :class:`~usgm.data.synth.options.SynthOptions` (e.g. ``mode="max"``,
            ``room_tone_db=None``).

    Returns:
        The dataset root (absolute).

    Raises:
        DataError: bad arguments, an existing non-empty ``out`` without ``overwrite``, an
            output location that cannot be written, or recorded voices that cannot be had where
            they are required (``recorded_dir`` or ``require_recorded``).
    """
    opts = SynthOptions.from_kwargs(**options)
    root = Path(out).expanduser().absolute()
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    _check_args(root, n_src, counts, seed, sample_rate, num_workers, overwrite, opts.speakers)
    _remove_stale(root)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if verbose:
            print(f"[usgm-make-data] {msg}", file=sys.stderr, flush=True)

    build = root.parent / f"{root.name}.partial-{os.getpid()}"
    try:
        build.mkdir(parents=True)
    except OSError as exc:
        raise DataError(f"cannot create the output next to {root}: {exc.strerror or exc}") from exc
    try:
        base = build / rate_folder(sample_rate) / opts.mode
        (base / "metadata").mkdir(parents=True)
        recorded, fallback = [], None
        if opts.recorded_fraction > 0 and opts.recorded_splits:
            from usgm.data.synth.recorded import RecordedUnavailable, ensure_bank

            try:
                # One-time download/decoding takes a while: always say so, even when not verbose.
                recorded = ensure_bank(
                    sample_rate, recorded_dir, cache_dir,
                    lambda msg: print(f"[usgm-make-data] {msg}", file=sys.stderr, flush=True),
                )  # fmt: skip
            except RecordedUnavailable as exc:
                if recorded_dir is not None or require_recorded:
                    raise
                fallback = {"reason": exc.reason, "requested_fraction": opts.recorded_fraction}
                # recorded_fraction 0 draws nothing for the recorded voices: the corpus is
                # exactly the eSpeak-only one, and DONE says so in its options.
                opts = dataclasses.replace(opts, recorded_fraction=0.0)
                print(
                    f"[usgm] recorded voices unavailable ({exc.reason}): building eSpeak-only "
                    "data; expect a lower real-speech score, see docs/default-data.md",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
        pools = make_pools(seed, opts)
        kinds = ["mix_both", "mix_clean", *(f"s{j + 1}" for j in range(n_src)), "noise"]
        with tempfile.TemporaryDirectory(prefix="usgm-synth-") as tmp:
            from usgm.data.synth.espeak import make_data_dir
            from usgm.data.synth.worker import ShardTask

            used = {s.language for pool in pools.values() for s in pool}
            voice_data = make_data_dir(
                Path(tmp) / "espeak-ng-data",
                {k: LANGUAGE_FILES[k] for k in sorted(used)},
                {s.variant: s.variant_text() for pool in pools.values() for s in pool},
            )
            tasks = []
            for split in SPLITS:
                split_dir = base / SPLIT_DIRS[split]
                for kind in kinds:
                    (split_dir / kind).mkdir(parents=True)
                for shard, start in enumerate(range(0, counts[split], opts.shard_size)):
                    tasks.append(
                        ShardTask(
                            split=split, shard=shard, start=start,
                            stop=min(start + opts.shard_size, counts[split]), n_src=n_src,
                            seed=seed, sample_rate=sample_rate, options=opts,
                            voice_data=str(voice_data), split_dir=str(split_dir),
                            speakers=tuple(pools[split]),
                            babble=tuple(babble_subpool(pools["babble"], split)),
                            recorded=tuple(
                                r for r in recorded
                                if r.pool == split and split in opts.recorded_splits
                            ),
                        )
                    )  # fmt: skip
            rows = _run_tasks(tasks, num_workers, Path(tmp), log)
        final_base = root / base.relative_to(build)
        for split in SPLITS:
            _write_csvs(base / "metadata", final_base, split, n_src, sorted(rows[split]))
        _write_speakers(build / "speakers.csv", pools, recorded)
        elapsed = time.perf_counter() - t0
        info = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_src": n_src,
            "counts": {SPLIT_DIRS[k]: v for k, v in counts.items()},
            "seed": seed,
            "sample_rate": sample_rate,
            "mode": opts.mode,
            "options": opts.to_dict(),
            "recorded_speakers": {
                r.spk_id: {"pool": r.pool, "seconds": round(r.seconds, 1)} for r in recorded
            },
            "recorded_catalogue": _catalogue_key() if recorded else None,
            "recorded_fallback": fallback,
            "build_seconds": round(elapsed, 1),
        }
        (build / COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        _finalise(build, root, overwrite)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log(f"wrote {sum(counts.values())} mixtures to {root} in {time.perf_counter() - t0:.1f} s")
    return root


def _catalogue_key() -> str:
    from usgm.data.synth.recorded import catalogue_key

    return catalogue_key()


def _run_tasks(
    tasks: list[ShardTask], num_workers: int | None, tmp: Path, log: Callable[[str], None]
) -> dict[str, list]:
    """Run every shard in its own fresh interpreter, ``num_workers`` at a time."""
    rows: dict[str, list] = {split: [] for split in SPLITS}
    if not tasks:
        return rows
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(num_workers or cpus or 1, len(tasks))
    # The child must import this very usgm, even when it is not installed (source checkout).
    package_parent = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"  # one process per core already

    def run(i: int, task: ShardTask) -> list:
        task_file, result_file = tmp / f"task{i}.pkl", tmp / f"result{i}.pkl"
        task_file.write_bytes(pickle.dumps(task))
        cmd = [sys.executable, "-m", "usgm.data.synth.worker", str(task_file), str(result_file)]
        proc = subprocess.run(cmd, env=env, capture_output=True)
        if proc.returncode != 0 or not result_file.exists():
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(
                f"generator worker for {SPLIT_DIRS[task.split]} shard {task.shard} failed "
                f"(exit {proc.returncode}):\n" + "\n".join(tail)
            )
        return pickle.loads(result_file.read_bytes())

    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(run, i, task): task for i, task in enumerate(tasks)}
        try:
            for done, fut in enumerate(as_completed(futures), 1):
                task = futures[fut]
                rows[task.split].extend(fut.result())
                log(f"{SPLIT_DIRS[task.split]} shard {task.shard} done ({done}/{len(tasks)})")
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return rows


def _finalise(build: Path, root: Path, overwrite: bool) -> None:
    """Move the finished build to ``root`` (replacing an old dataset when ``overwrite``)."""
    old = None
    if root.exists():
        if not any(root.iterdir()):
            root.rmdir()
        elif overwrite:
            old = root.parent / f"{root.name}.old-{os.getpid()}"
            root.rename(old)
        elif is_complete(root):
            # Another process finished the same build meanwhile: keep its result.
            shutil.rmtree(build, ignore_errors=True)
            return
        else:
            raise DataError(f"output {root} appeared while building; not replacing it")
    build.rename(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
