"""Build the default corpus on disk in the LibriMix layout, reproducibly and atomically.

Work is cut into fixed shards of ``options.shard_size`` mixtures per split. Every shard runs in a
fresh *spawned* process (``max_tasks_per_child=1``) with its own seed derived from
``(seed, split, shard)``, and every mixture draws from a generator seeded by
``(seed, split, mixture index)``. Since eSpeak's hidden state only depends on what the process
synthesised before, the same seed gives byte-identical files whatever the number of workers.

The dataset is written into a sibling folder ``<out>.partial-<pid>``; the completion marker
:data:`COMPLETE_MARKER` (JSON with the build parameters) is written last, then the folder is
renamed to ``<out>``. A crash leaves only the ``.partial-*`` folder (removed by the next build),
never a half-written ``<out>``. :func:`is_complete` tells whether a root holds a finished build.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from usgm.data.errors import DataError
from usgm.data.mixing import mix_librimix, quantize_mixture
from usgm.data.synth.options import SPLIT_DIRS, SPLITS, SynthOptions
from usgm.data.synth.voices import LANGUAGE_FILES, Speaker, babble_subpool, make_pools

COMPLETE_MARKER = "DONE"
FORMAT = "usgm-synth"
FORMAT_VERSION = 1
SAMPLE_RATES = (8000, 16000)
_SPLIT_SEED_CODE = {"train": 1, "dev": 2, "test": 3}
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


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker process needs (plain, picklable data)."""

    split: str
    shard: int
    start: int
    stop: int
    n_src: int
    seed: int
    sample_rate: int
    options: SynthOptions
    voice_data: str
    split_dir: str
    speakers: tuple[Speaker, ...]
    babble: tuple[Speaker, ...]


def mixture_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Seed of one mixture's random generator."""
    return np.random.SeedSequence([seed, 3000, _SPLIT_SEED_CODE[split], index])


def shard_seed(seed: int, split: str, shard: int) -> np.random.SeedSequence:
    """Seed of one shard's random generator (its babble bank)."""
    return np.random.SeedSequence([seed, 2000, _SPLIT_SEED_CODE[split], shard])


def run_shard(task: ShardTask) -> list[tuple[int, str, int]]:
    """Synthesise, mix and write one shard's mixtures (runs in a fresh process).

    Returns:
        ``(index, mixture_ID, length)`` per mixture.
    """
    # Imported here: the synthesiser stack is only needed inside workers.
    from usgm.data.synth.espeak import Espeak
    from usgm.data.synth.noise import cafe_noise, make_babble_bank
    from usgm.data.synth.speech import render_utterance

    opts, sr = task.options, task.sample_rate
    tts = Espeak(task.voice_data)
    bank = make_babble_bank(
        tts, list(task.babble), np.random.default_rng(shard_seed(task.seed, task.split, task.shard)),
        sr, opts,
    )  # fmt: skip
    out = Path(task.split_dir)
    rows = []
    for index in range(task.start, task.stop):
        rng = np.random.default_rng(mixture_seed(task.seed, task.split, index))
        picks = rng.choice(len(task.speakers), size=task.n_src, replace=False)
        speakers = [task.speakers[i] for i in picks]
        sources = [render_utterance(tts, spk, rng, sr, opts) for spk in speakers]
        lengths = [len(s) for s in sources]
        n = min(lengths) if opts.mode == "min" else max(lengths)
        noise = cafe_noise(rng, n, sr, bank, opts)
        scaled, scaled_noise = mix_librimix(
            sources, noise, sr, rng, opts.speech_lufs, opts.noise_lufs, opts.max_peak, opts.mode
        )
        q = quantize_mixture(scaled, scaled_noise)
        mixture_id = "_".join(
            f"{spk.spk_id}-{index * task.n_src + j:06d}" for j, spk in enumerate(speakers)
        )
        files = {"mix_both": q.mix_both, "mix_clean": q.mix_clean, "noise": q.noise}
        files |= {f"s{j + 1}": s for j, s in enumerate(q.sources)}
        for kind, data in files.items():
            sf.write(out / kind / f"{mixture_id}.wav", data, sr, subtype="PCM_16")
        rows.append((index, mixture_id, n))
    return rows


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
    root: Path, n_src: int, counts: dict[str, int], sample_rate: int, num_workers: int | None,
    overwrite: bool,
) -> None:  # fmt: skip
    if n_src not in (2, 3):
        raise DataError(f"n_src must be 2 or 3, got {n_src}")
    for split, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise DataError(f"n_{split} must be a non-negative integer, got {n!r}")
    if sum(counts.values()) == 0:
        raise DataError("nothing to generate: n_train, n_dev and n_test are all 0")
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


def _write_speakers(path: Path, pools: dict[str, list[Speaker]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["speaker_ID", "pool", "language", "text_language", "gender", "f0_base", "f0_top",
             "formant_scale_pct", "klatt", "rate_wpm"]
        )  # fmt: skip
        for pool in pools.values():
            for s in pool:
                writer.writerow(
                    [s.spk_id, s.pool, s.language, s.text_language, s.gender, s.pitch[0],
                     s.pitch[1], s.formants[1][0], s.klatt, s.rate]
                )  # fmt: skip


def make_dataset(
    out: str | os.PathLike[str],
    n_src: int = 2,
    n_train: int = 800,
    n_dev: int = 200,
    n_test: int = 200,
    seed: int = 0,
    sample_rate: int = 8000,
    num_workers: int | None = None,
    *,
    overwrite: bool = False,
    verbose: bool = False,
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
        **options: fields of :class:`~usgm.data.synth.options.SynthOptions` (e.g. ``mode="max"``,
            ``room_tone_db=None``).

    Returns:
        The dataset root (absolute).

    Raises:
        DataError: bad arguments, an existing non-empty ``out`` without ``overwrite``, or an
            output location that cannot be written.
    """
    opts = SynthOptions.from_kwargs(**options)
    root = Path(out).expanduser().absolute()
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    _check_args(root, n_src, counts, sample_rate, num_workers, overwrite)
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
        pools = make_pools(seed, opts)
        kinds = ["mix_both", "mix_clean", *(f"s{j + 1}" for j in range(n_src)), "noise"]
        with tempfile.TemporaryDirectory(prefix="usgm-espeak-") as tmp:
            from usgm.data.synth.espeak import make_data_dir

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
                        )
                    )  # fmt: skip
            rows = _run_tasks(tasks, num_workers, log)
        final_base = root / base.relative_to(build)
        for split in SPLITS:
            _write_csvs(base / "metadata", final_base, split, n_src, sorted(rows[split]))
        _write_speakers(build / "speakers.csv", pools)
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
            "build_seconds": round(elapsed, 1),
        }
        (build / COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        _finalise(build, root, overwrite)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log(f"wrote {sum(counts.values())} mixtures to {root} in {time.perf_counter() - t0:.1f} s")
    return root


def _run_tasks(tasks: list[ShardTask], num_workers: int | None, log) -> dict[str, list]:
    rows: dict[str, list] = {split: [] for split in SPLITS}
    if not tasks:
        return rows
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(num_workers or cpus or 1, len(tasks))
    # spawn + one task per child: every shard starts from a fresh eSpeak (reproducibility).
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_shard, task): task for task in tasks}
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
