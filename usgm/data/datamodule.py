"""LibriMix(-noisy) Dataset and LightningDataModule.

Reads a real LibriMix root or the generated default set (same layout, see
:mod:`usgm.data.librimix`), streaming every item from disk in the DataLoader's worker processes.
Training items are random segments (a new offset per item and epoch) with optional speed
perturbation and dynamic mixing (:mod:`usgm.data.augment`); dev/test items are whole utterances.

The training data stream is a pure function of ``(seed, epoch, rank, index)``: the
:class:`ResumableSampler` shuffles and shards the indices (like ``DistributedSampler``) and hands
each index to the dataset as an :class:`ItemKey`, from which the item's crop, speed factors and
dynamic mixture are drawn. So every rank draws different items, the stream does not depend on the
number of DataLoader workers, and :class:`ResumableDataLoader` can save and restore its position
(epoch, batches consumed) in Lightning checkpoints: a resumed run continues the same stream.
With ``batch_seconds`` (whole utterances batched by total duration) the sampler is the
:class:`~usgm.data.bucketing.BucketBatchSampler` subclass, whose elements are whole batches.

Batch (see the project spec), built by :func:`collate_batch`:

- ``mix`` (B, T) float32: model input (``mix_both`` for ``sep_noisy``, ``mix_clean`` for ``sep_clean``)
- ``sources`` (B, C, T): target sources
- ``mix_clean`` (B, T): ``Σ sources`` (the SE target), recomputed after any augmentation
- ``lengths`` (B,) int64: valid samples per item; items are right-padded with zeros
- ``ids`` list[str]: mixture IDs
"""

from __future__ import annotations

import functools
import math
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from usgm.data.augment import DynamicMixer, SpeedPerturb, remix
from usgm.data.errors import DataError
from usgm.data.librimix import Utterance, Validate, load_split, read_wav

SHORT_POLICIES = ("pad", "drop")
# Names accepted by LibriMixDataModule.utterances() besides split folder names.
SPLIT_ALIASES = {"train": "train", "fit": "train", "valid": "valid", "val": "valid"}
SPLIT_ALIASES |= {"validate": "valid", "test": "test", "predict": "test"}
Item = dict[str, Any]


class ItemKey(NamedTuple):
    """What :class:`ResumableSampler` yields: a dataset index and the draw it belongs to.

    The item's random choices are seeded from ``(dataset seed, epoch, rank, index)`` alone, so
    the same key always gives the same item, whichever worker process builds it.
    """

    index: int
    epoch: int
    rank: int


def _dist_rank() -> int:
    """This process's global rank (0 outside torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def round_up(n: Any, multiple: int) -> Any:
    """``n`` rounded up to a multiple of ``multiple`` (an int or an integer array, elementwise).

    The bucket edge: :func:`~usgm.data.bucketing.bucket_batches` counts every item at this
    length against the batch budget and :func:`collate_batch` pads a batch to it, so the two
    must round alike.
    """
    return -(-n // multiple) * multiple


def collate_batch(items: Sequence[Item], pad_multiple: int = 1) -> dict[str, Any]:
    """Right-pad items with zeros into the batch dict.

    Args:
        items: dicts with ``mix`` (T_i,), ``sources`` (C, T_i), ``mix_clean`` (T_i,), ``id``.
        pad_multiple: the batch length ``T`` is rounded up to a multiple of this many samples.
            Whole-utterance batches (``batch_seconds``) pass the bucket width: a batch then
            ends at its bucket's edge, so an epoch has a few dozen distinct shapes instead of
            one per batch, and the per-shape work (cuDNN's algorithm search, the caching
            allocator's new blocks, compiled graphs) is done once per shape, not every step.

    Returns:
        ``{"mix": (B, T), "sources": (B, C, T), "mix_clean": (B, T), "lengths": (B,) int64,
        "ids": list[str]}`` with ``T = max T_i`` rounded up to ``pad_multiple``.
    """
    n_src = {it["sources"].shape[0] for it in items}
    if len(n_src) != 1:
        raise DataError(f"items of one batch have different source counts {sorted(n_src)}")
    lengths = torch.tensor([it["mix"].shape[-1] for it in items], dtype=torch.int64)
    b, c, t = len(items), n_src.pop(), int(lengths.max())
    t = round_up(t, max(1, pad_multiple))
    mix = torch.zeros(b, t)
    sources = torch.zeros(b, c, t)
    mix_clean = torch.zeros(b, t)
    for i, it in enumerate(items):
        n = int(lengths[i])
        mix[i, :n] = it["mix"]
        sources[i, :, :n] = it["sources"]
        mix_clean[i, :n] = it["mix_clean"]
    return {
        "mix": mix,
        "sources": sources,
        "mix_clean": mix_clean,
        "lengths": lengths,
        "ids": [it["id"] for it in items],
    }


class LibriMixDataset(Dataset):
    """One split of a LibriMix root, read lazily from disk.

    Args:
        root: LibriMix root (``…/Libri2Mix``; the generated set has the same layout).
        split: ``train-360``, ``train-100``, ``dev``, ``test``.
        n_src: speakers per mixture.
        sample_rate: 8000 or 16000.
        mode: ``min`` or ``max``.
        task: ``sep_noisy`` (input ``mix_both``) or ``sep_clean`` (input ``mix_clean``).
        segment: training segment in seconds (None: whole utterances). Used only when ``train``.
        short_policy: utterances shorter than ``segment``: ``pad`` (kept whole, padded in the
            batch) or ``drop``.
        train: random segments and augmentation; otherwise whole utterances, no augmentation.
        speed_perturb: per-source speed perturbation (train only).
        speed_factors: factors to choose from.
        dynamic_mixing: new mixtures from the split's sources/noises each epoch (train only).
        validate: up-front checks, ``none`` | ``sample`` | ``all`` (see
            :func:`usgm.data.librimix.load_split`).
        validate_samples: mixtures whose headers ``sample`` checks.
        limit: keep the first ``limit`` mixtures.
        seed: base seed. Items requested with an :class:`ItemKey` (what the DataModule's
            training sampler yields) draw from a generator seeded by ``(seed, epoch, rank,
            index)``; items requested with a plain index draw from one generator per process,
            seeded by ``seed``, the rank and the DataLoader's worker seed, so repeated requests
            differ.
        utterances: an already loaded (and validated) list; skips reading the metadata.
        cap_to_utterance: whole-utterance training (``segment`` None) only: an item is never
            longer than its index's utterance, also after speed perturbation (which can stretch
            a source by 1/0.95) or dynamic mixing (which draws other files). The duration-
            budgeted batches (``data.batch_seconds``) are planned from those lengths.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        n_src: int = 2,
        sample_rate: int = 8000,
        mode: str = "min",
        task: str = "sep_noisy",
        segment: float | None = None,
        short_policy: str = "pad",
        train: bool = False,
        speed_perturb: bool = False,
        speed_factors: Sequence[float] = (0.95, 1.0, 1.05),
        dynamic_mixing: bool = False,
        validate: Validate = "sample",
        validate_samples: int = 16,
        limit: int | None = None,
        seed: int = 0,
        utterances: Sequence[Utterance] | None = None,
        cap_to_utterance: bool = False,
    ) -> None:
        if short_policy not in SHORT_POLICIES:
            raise DataError(f"data.short_policy={short_policy!r} is not one of pad, drop")
        if segment is not None and not segment > 0:
            raise DataError(f"data.segment={segment!r} must be > 0 seconds or null")
        if utterances is None:
            utterances = load_split(
                root,
                split,
                n_src=n_src,
                sample_rate=sample_rate,
                mode=mode,
                task=task,
                validate=validate,
                validate_samples=validate_samples,
                limit=limit,
                seed=seed,
            )
        self.split = split
        self.n_src = n_src
        self.sample_rate = sample_rate
        self.task = task
        self.train = train
        self.seed = seed
        self.cap_to_utterance = bool(cap_to_utterance)
        self.segment = round(segment * sample_rate) if (train and segment is not None) else None
        min_len = self.segment if (self.segment and short_policy == "drop") else 0
        self.utterances = [u for u in utterances if u.length >= min_len]
        if not self.utterances:
            raise DataError(
                f"split {split!r}: every utterance is shorter than data.segment={segment} s; "
                "use data.short_policy=pad or a shorter segment"
            )
        self.speed = SpeedPerturb(speed_factors) if (train and speed_perturb) else None
        self.mixer = (
            DynamicMixer(self.utterances, n_src, sample_rate, task == "sep_noisy", min_len)
            if (train and dynamic_mixing)
            else None
        )
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple | None = None

    def __len__(self) -> int:
        return len(self.utterances)

    def rng(self) -> np.random.Generator:
        """This process's generator for plain-index requests.

        Seeded from ``seed``, the global rank (so DDP ranks differ) and, in a DataLoader worker,
        the worker seed (so workers and epochs differ).
        """
        info = get_worker_info()
        rank = _dist_rank()
        key = (rank, None) if info is None else (rank, info.id, info.seed)
        if self._rng is None or key != self._rng_key:
            entropy = [self.seed, rank] if info is None else [self.seed, rank, info.seed]
            self._rng = np.random.default_rng(entropy)
            self._rng_key = key
        return self._rng

    def item_rng(self, key: ItemKey) -> np.random.Generator:
        """The generator of one keyed draw: a pure function of ``(seed, epoch, rank, index)``."""
        return np.random.default_rng([self.seed, key.epoch, key.rank, key.index])

    def __getitem__(self, index: int | ItemKey | list[ItemKey]) -> Item | list[Item]:
        if isinstance(index, list):  # a whole batch from BucketBatchSampler
            return [self[i] for i in index]  # type: ignore[misc]
        if isinstance(index, ItemKey):
            key, index = index, index.index
        else:
            key = None
        utt = self.utterances[index]
        if not self.train:
            return self._whole(utt)
        rng = self.rng() if key is None else self.item_rng(key)
        if self.mixer is not None:
            return self._dynamic_mix(rng, utt.length if self.cap_to_utterance else None)
        if self.speed is not None:
            return self._perturbed(utt, rng)
        return self._crop(utt, rng)

    # -- item builders ----------------------------------------------------------------------
    def _read(self, path, length: int, start: int = 0, frames: int | None = None) -> Tensor:
        frames = length - start if frames is None else frames
        return torch.from_numpy(read_wav(path, self.sample_rate, start, frames, length))

    def _item(self, mix: Tensor, sources: Tensor, mix_clean: Tensor, uid: str) -> Item:
        return {"mix": mix, "sources": sources, "mix_clean": mix_clean, "id": uid}

    def _whole(self, utt: Utterance) -> Item:
        """Whole utterance, the mixture as stored on disk."""
        mix = self._read(utt.mixture, utt.length)
        sources = torch.stack([self._read(p, utt.length) for p in utt.sources])
        return self._item(mix, sources, sources.sum(0), utt.id)

    def _window(self, length: int, want: int | None, rng: np.random.Generator) -> tuple[int, int]:
        """Random ``(start, frames)`` of ``want`` samples (all of it when shorter or None)."""
        if want is None or want >= length:
            return 0, length
        return int(rng.integers(length - want + 1)), want

    def _crop(self, utt: Utterance, rng: np.random.Generator) -> Item:
        """Random segment of the stored mixture and sources (one offset for all files)."""
        start, n = self._window(utt.length, self.segment, rng)
        mix = self._read(utt.mixture, utt.length, start, n)
        sources = torch.stack([self._read(p, utt.length, start, n) for p in utt.sources])
        return self._item(mix, sources, sources.sum(0), utt.id)

    def _read_need(self, factor: float) -> int | None:
        """Input samples a source needs so that, at ``factor`` speed, a segment remains."""
        return None if self.segment is None else math.ceil(self.segment * factor) + 1

    def _perturbed(self, utt: Utterance, rng: np.random.Generator) -> Item:
        """Speed-perturbed sources re-summed with the unperturbed noise (paper recipe)."""
        assert self.speed is not None
        factors = self.speed.draw(self.n_src, rng)
        start, n = self._window(utt.length, self._read_need(max(factors)), rng)
        raw = [self._read(p, utt.length, start, n) for p in utt.sources]
        noise = None
        if self.task == "sep_noisy":
            assert utt.noise is not None
            noise = self._read(utt.noise, utt.length, start, n)
        cap = utt.length if (self.cap_to_utterance and self.segment is None) else self.segment
        sources, mix_clean, mix = remix(self.speed(raw, factors), noise, cap)
        return self._item(mix, sources, mix_clean, utt.id)

    def _dynamic_mix(self, rng: np.random.Generator, cap: int | None = None) -> Item:
        """A new mixture: random files, random windows, fresh LibriMix gains.

        ``cap`` (samples): longest result when training on whole utterances, see
        ``cap_to_utterance``.
        """
        assert self.mixer is not None
        picked, noise_ref = self.mixer.draw(rng)
        factors = self.speed.draw(self.n_src, rng) if self.speed else [1.0] * self.n_src
        raw = []
        for ref, f in zip(picked, factors, strict=True):
            start, n = self._window(ref.length, self._read_need(f), rng)
            raw.append(self._read(ref.path, ref.length, start, n))
        if self.speed is not None:
            raw = self.speed(raw, factors)
        t = min(s.shape[-1] for s in raw)
        if noise_ref is not None:
            t = min(t, noise_ref.length)
        if self.segment is not None:
            t = min(t, self.segment)
        elif cap is not None:
            t = min(t, cap)
        srcs = [s[:t].numpy() for s in raw]
        noise = None
        if noise_ref is not None:
            start, n = self._window(noise_ref.length, t, rng)
            noise = self._read(noise_ref.path, noise_ref.length, start, n).numpy()
        srcs, noise = self.mixer.gains(srcs, noise, rng)
        sources, mix_clean, mix = remix(
            [torch.as_tensor(np.asarray(s, dtype=np.float32)) for s in srcs],
            None if noise is None else torch.as_tensor(np.asarray(noise, dtype=np.float32)),
        )
        uid = "dm:" + "+".join(p.label for p in picked)
        return self._item(mix, sources, mix_clean, uid)


class ResumableSampler(DistributedSampler):
    """Shuffles and shards the training set per epoch; yields :class:`ItemKey` s; resumable.

    A ``DistributedSampler`` (so Lightning neither wraps nor replaces it under DDP): every rank
    takes its own share of one permutation seeded by ``seed + epoch``, and each key carries the
    epoch and rank so that the dataset's random draws differ across ranks and epochs.

    The epoch is the one given to :meth:`set_epoch` (Lightning calls it before every epoch) or
    :meth:`set_position`; an iteration that neither preceded takes the next epoch, so a plain
    ``for epoch ...: for batch in loader`` loop also gets new draws every epoch.

    Args:
        dataset: the training dataset.
        num_replicas: world size.
        rank: this process's global rank.
        shuffle: shuffle every epoch.
        seed: shuffle seed (the same on every rank).
    """

    def __init__(
        self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
        seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
            drop_last=False,
        )  # fmt: skip
        self._skip = 0  # samples of the next iteration already consumed before a resume
        self._positioned = True  # the first iteration is epoch 0
        self.iter_epoch = 0  # epoch and skip of the iteration in progress
        self.iter_skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Sets the next iteration's epoch (keeps a restored position within that epoch)."""
        if epoch != self.epoch:
            self._skip = 0
        super().set_epoch(epoch)
        self._positioned = True

    def set_position(self, epoch: int, skip: int) -> None:
        """The next iteration is ``epoch`` with its first ``skip`` elements left out (a resume).

        Elements are samples here and whole batches in the bucketing subclass.
        """
        super().set_epoch(epoch)
        self._skip = max(0, int(skip))
        self._positioned = True

    def _start_iteration(self) -> tuple[int, int]:
        """Begin an iteration: ``(epoch, elements to skip)`` (also kept as ``iter_*``)."""
        if not self._positioned:
            DistributedSampler.set_epoch(self, self.epoch + 1)
            self._skip = 0
        self._positioned = False
        self.iter_epoch, self.iter_skip = self.epoch, self._skip
        self._skip = 0
        return self.iter_epoch, self.iter_skip

    def __iter__(self) -> Iterator[ItemKey]:  # type: ignore[override]
        epoch, skip = self._start_iteration()
        indices = list(super().__iter__())[skip:]
        return iter([ItemKey(int(i), epoch, self.rank) for i in indices])


def _await_parents_sigterm(owners: frozenset[int]) -> None:
    """A worker's SIGTERM watcher thread: ends the worker only for its owners' SIGTERM."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid in owners:
            # The loader's own shutdown (multiprocessing's terminate()). Exit status 0: the
            # main process's worker watch takes a death by signal for a crash.
            os._exit(0)


def worker_ignores_sigterm(worker_id: int, main_pid: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: a SIGTERM from anyone but the main process is left to it.

    Schedulers signal a whole process group (SLURM every process of a job step, coreutils
    ``timeout`` its child's group). A worker killed by that SIGTERM makes the main process raise
    "DataLoader worker ... is killed by signal" at once, before the training loop reaches the
    batch boundary where it saves the SIGTERM checkpoint. So the worker blocks SIGTERM and a
    watcher thread takes it with its sender: the main process's own SIGTERM (its loader's or
    multiprocessing's shutdown terminating the worker) ends the worker at once, any other is
    dropped. The worker still ends with the main process (the loader's shutdown, or its
    parent-death watchdog), and SIGKILL still ends it. Simply ignoring SIGTERM would hang a
    main process that terminates and joins its workers at exit. Effective with the ``fork``
    start method (Linux's default up to Python 3.13): a ``forkserver`` worker has threads from
    before this function that do not block SIGTERM, so there it dies of it as before.

    Setting a ``worker_init_fn`` stops Lightning from adding its own after
    ``seed_everything(..., workers=True)``; its per-rank, per-worker seeding is therefore called
    here when that was asked for (``PL_SEED_WORKERS=1``).

    Args:
        worker_id: the worker's index.
        main_pid: the process that owns the loader (bound with :func:`functools.partial` when
            the loader is built): under the ``forkserver`` start method (Python 3.14's default
            on Linux) it is not the worker's parent, yet it is the one that terminates it.
    """
    owners = frozenset({os.getppid()} | ({main_pid} if main_pid is not None else set()))
    if hasattr(signal, "sigwaitinfo"):  # Linux (macOS and Windows lack it: default SIGTERM)
        # Blocked before any other thread of the worker exists: every later thread inherits it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(
            target=_await_parents_sigterm, args=(owners,), daemon=True, name="usgm-sigterm"
        ).start()
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position in its :class:`ResumableSampler` stream is checkpointable.

    Lightning saves ``state_dict()`` of stateful training loaders with the fit loop's state and
    calls ``load_state_dict()`` before iterating on resume. The position counts batches handed to
    the training loop (not those prefetched by workers), so a run resumed from a checkpoint
    continues with exactly the batch after the last one it trained on. With any other sampler
    (e.g. one Lightning substituted for ``overfit_batches``) the state is empty and ignored.
    Takes exactly ``DataLoader``'s arguments, so Lightning can re-instantiate it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position: tuple[int, int] = (0, 0)  # (epoch, batches consumed)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.sampler if isinstance(self.sampler, ResumableSampler) else None
        consumed = None
        for batch in super().__iter__():
            if sampler is not None:
                if consumed is None:  # the sampler has started this iteration by now
                    consumed = sampler.iter_skip // (self.batch_size or 1)
                consumed += 1
                self._position = (sampler.iter_epoch, consumed)
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: the epoch in progress and its batches already trained on."""
        if not isinstance(self.sampler, ResumableSampler):
            return {}
        epoch, batches = self._position
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Positions the next iteration just after the saved batch."""
        if not state or not isinstance(self.sampler, ResumableSampler):
            return
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self._position = (epoch, batches)
        self.sampler.set_position(epoch, batches * (self.batch_size or 1))


class LibriMixDataModule(L.LightningDataModule):
    """LibriMix-noisy (or clean) data for training, validation and test.

    Constructor keys mirror ``conf/data/*.yaml``. Validation of the root, metadata and files
    runs in :meth:`setup` (so before training starts) or explicitly via :meth:`check`, and
    raises :class:`~usgm.data.errors.DataError`.

    Args:
        root: LibriMix root (``…/Libri2Mix``) or the generated set.
        n_src: speakers (2: Libri2Mix, 3: Libri3Mix).
        sample_rate: 8000 or 16000 (``wav8k`` / ``wav16k``).
        mode: ``min`` or ``max``.
        task: ``sep_noisy`` or ``sep_clean``.
        train_split, valid_split, test_split: split folder names.
        segment: training segment in seconds; None → whole utterances (the paper's recipe).
        short_policy: ``pad`` or ``drop`` training utterances shorter than ``segment``.
        batch_size: training batch size (with ``batch_seconds``: unused).
        batch_seconds: whole-utterance training only (``segment`` None): form training batches
            by total padded duration instead of a fixed size, from length buckets
            (:class:`~usgm.data.bucketing.BucketBatchSampler`), each batch's
            ``size × longest`` at most this many seconds. None: fixed ``batch_size``.
        bucket_width: width of a length bucket in seconds (``batch_seconds`` only): items of
            one bucket are shuffled between epochs, and a batch is padded to its bucket's
            upper edge (so batch lengths repeat); wider buckets vary batches more but pad up
            to this much per item.
        eval_batch_size: dev/test batch size (whole utterances; 1 avoids padding).
        num_workers: DataLoader worker processes.
        speed_perturb: per-source 95/100/105 % speed perturbation in training.
        speed_factors: the factors.
        dynamic_mixing: new training mixtures each epoch.
        validate: ``sample`` | ``all`` | ``none`` up-front file checks.
        validate_samples: mixtures per split whose headers ``sample`` checks.
        max_train, max_valid, max_test: keep only the first N mixtures (debug/smoke runs).
        pin_memory: DataLoader pin_memory.
        seed: seeds the training shuffle, the items' random draws and the header sample.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        n_src: int = 2,
        sample_rate: int = 8000,
        mode: str = "min",
        task: str = "sep_noisy",
        train_split: str = "train-360",
        valid_split: str = "dev",
        test_split: str = "test",
        segment: float | None = 3.0,
        short_policy: str = "pad",
        batch_size: int = 4,
        batch_seconds: float | None = None,
        bucket_width: float = 0.5,
        eval_batch_size: int = 1,
        num_workers: int = 2,
        speed_perturb: bool = False,
        speed_factors: Sequence[float] = (0.95, 1.0, 1.05),
        dynamic_mixing: bool = False,
        validate: Validate = "sample",
        validate_samples: int = 16,
        max_train: int | None = None,
        max_valid: int | None = None,
        max_test: int | None = None,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # Plain types only (Hydra hands over ListConfig; checkpoints load with weights_only).
        root = str(root)
        speed_factors = [float(f) for f in speed_factors]
        segment = None if segment is None else float(segment)
        batch_seconds = None if batch_seconds is None else float(batch_seconds)
        bucket_width = float(bucket_width)
        self.save_hyperparameters(logger=False)
        if batch_seconds is not None:
            if not batch_seconds > 0 or not bucket_width > 0:
                raise DataError(
                    f"data.batch_seconds={batch_seconds!r} and data.bucket_width="
                    f"{bucket_width!r} must be > 0 seconds"
                )
            if segment is not None:
                raise DataError(
                    f"data.batch_seconds={batch_seconds} batches whole utterances: set "
                    f"data.segment=null (it is {segment}), or use data.batch_size for segments"
                )
        if short_policy not in SHORT_POLICIES:
            raise DataError(f"data.short_policy={short_policy!r} is not one of pad, drop")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise DataError(f"data.{key}={value!r} must be >= 1")
        if int(num_workers) < 0:
            raise DataError(f"data.num_workers={num_workers!r} must be >= 0")
        self.root = root
        self.n_src = int(n_src)
        self.sample_rate = int(sample_rate)
        self.mode = mode
        self.task = task
        self.splits = {"train": train_split, "valid": valid_split, "test": test_split}
        self.limits = {"train": max_train, "valid": max_valid, "test": max_test}
        self.segment = segment
        self.short_policy = short_policy
        self.batch_size = int(batch_size)
        self.batch_seconds = batch_seconds
        self.bucket_width = bucket_width
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.speed_perturb = bool(speed_perturb)
        self.speed_factors = speed_factors
        self.dynamic_mixing = bool(dynamic_mixing)
        self.validate = validate
        self.validate_samples = int(validate_samples)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self._loaded: dict[tuple[str, int | None], list[Utterance]] = {}
        self.train_set: LibriMixDataset | None = None
        self.valid_set: LibriMixDataset | None = None
        self.test_set: LibriMixDataset | None = None

    # -- metadata ---------------------------------------------------------------------------
    def _role(self, split: str) -> tuple[str, int | None]:
        """Map an alias (train/valid/test) or a split folder name to (split, limit)."""
        role = SPLIT_ALIASES.get(split)
        if role is None:
            role = next((r for r, s in self.splits.items() if s == split), None)
        if role is None:
            return split, None
        return self.splits[role], self.limits[role]

    def _load(self, split: str, limit: int | None) -> list[Utterance]:
        key = (split, limit)
        if key not in self._loaded:
            self._loaded[key] = load_split(
                self.root,
                split,
                n_src=self.n_src,
                sample_rate=self.sample_rate,
                mode=self.mode,
                task=self.task,
                validate=self.validate,
                validate_samples=self.validate_samples,
                limit=limit,
                seed=self.seed,
            )
        return self._loaded[key]

    def utterances(self, split: str = "test") -> list[Utterance]:
        """The resolved (and validated) mixtures of a split, in dataloader order for dev/test.

        Args:
            split: ``train`` / ``valid`` / ``test`` (the configured splits, with their
                ``max_*`` limits) or a split folder name such as ``dev``.
        """
        return list(self._load(*self._role(split)))

    def check(self, stage: str | None = None) -> None:
        """Validate the root, metadata and files the stage needs (all splits when None).

        Raises:
            DataError: naming the file, column or key.
        """
        roles = {"fit": ["train", "valid"], "validate": ["valid"], "test": ["test"]}
        roles["predict"] = ["test"]
        for role in roles.get(stage or "", ["train", "valid", "test"]):
            self._load(self.splits[role], self.limits[role])

    # -- Lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Validate and build the datasets for ``fit`` / ``validate`` / ``test`` (None: all)."""
        self.check(stage)
        if stage in (None, "fit"):
            self.train_set = self._dataset("train", train=True)
        if stage in (None, "fit", "validate"):
            self.valid_set = self._dataset("valid", train=False)
        if stage in (None, "test", "predict"):
            self.test_set = self._dataset("test", train=False)

    def _dataset(self, role: str, train: bool) -> LibriMixDataset:
        split, limit = self.splits[role], self.limits[role]
        return LibriMixDataset(
            self.root,
            split,
            n_src=self.n_src,
            sample_rate=self.sample_rate,
            mode=self.mode,
            task=self.task,
            segment=self.segment,
            short_policy=self.short_policy,
            train=train,
            speed_perturb=self.speed_perturb,
            speed_factors=self.speed_factors,
            dynamic_mixing=self.dynamic_mixing,
            seed=self.seed,
            utterances=self._load(split, limit),
            cap_to_utterance=train and self.batch_seconds is not None,
        )

    def _world(self) -> tuple[int, int]:
        """(world size, global rank): the attached trainer's, else torch.distributed's."""
        trainer = self.trainer
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _loader(self, dataset: LibriMixDataset | None, stage: str, train: bool) -> DataLoader:
        if dataset is None:
            self.setup(stage)
            return self._loader(self._dataset_for(stage), stage, train)
        # Every loader: persistent workers, no respawn (and no re-import, re-opened files) every
        # epoch, safe because every random draw of a training item comes from its key, not
        # worker state; workers leave a foreign SIGTERM to the main process.
        common: dict[str, Any] = {
            "num_workers": self.num_workers,
            "collate_fn": collate_batch,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
            "worker_init_fn": functools.partial(worker_ignores_sigterm, main_pid=os.getpid()),
        }
        if not train:
            return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, **common)
        world_size, rank = self._world()
        if self.batch_seconds is not None:
            # Imported here: bucketing builds on this module's ResumableSampler.
            from usgm.data.bucketing import BucketBatchSampler

            batches = BucketBatchSampler(
                dataset,
                [u.length for u in dataset.utterances],  # items are capped to these
                round(self.batch_seconds * self.sample_rate),
                bucket_width=round(self.bucket_width * self.sample_rate),
                num_replicas=world_size,
                rank=rank,
                seed=self.seed,
            )
            # Each batch ends at its bucket's edge (see collate_batch): few distinct shapes.
            common["collate_fn"] = functools.partial(
                collate_batch, pad_multiple=batches.bucket_width
            )
            # The sampler's elements are whole batches (lists of keys): batch_size=None hands
            # each list to the dataset as one index. Position counts batches (batch_size None).
            return ResumableDataLoader(dataset, batch_size=None, sampler=batches, **common)
        # The sampler owns the whole training stream (order and per-item draws), sharded by
        # rank; the loader makes its position part of Lightning's checkpoints.
        sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=self.seed)
        return ResumableDataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=False, **common
        )

    def _dataset_for(self, stage: str) -> LibriMixDataset | None:
        return {"fit": self.train_set, "validate": self.valid_set, "test": self.test_set}[stage]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "fit", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, "validate", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", train=False)
