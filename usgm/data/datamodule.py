"""LibriMix(-noisy) Dataset and LightningDataModule.

Reads a real LibriMix root or the generated default set (same layout, see
:mod:`usgm.data.librimix`), streaming every item from disk in the DataLoader's worker processes.
Training items are random segments (a new offset per item and epoch) with optional speed
perturbation and dynamic mixing (:mod:`usgm.data.augment`); dev/test items are whole utterances.

Batch (see the project spec), built by :func:`collate_batch`:

- ``mix`` (B, T) float32: model input (``mix_both`` for ``sep_noisy``, ``mix_clean`` for ``sep_clean``)
- ``sources`` (B, C, T): target sources
- ``mix_clean`` (B, T): ``Σ sources`` (the SE target), recomputed after any augmentation
- ``lengths`` (B,) int64: valid samples per item; items are right-padded with zeros
- ``ids`` list[str]: mixture IDs
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from usgm.data.augment import DynamicMixer, SpeedPerturb, remix
from usgm.data.errors import DataError
from usgm.data.librimix import Utterance, Validate, load_split, read_wav

SHORT_POLICIES = ("pad", "drop")
# Names accepted by LibriMixDataModule.utterances() besides split folder names.
SPLIT_ALIASES = {"train": "train", "fit": "train", "valid": "valid", "val": "valid"}
SPLIT_ALIASES |= {"validate": "valid", "test": "test", "predict": "test"}
Item = dict[str, Any]


def collate_batch(items: Sequence[Item]) -> dict[str, Any]:
    """Right-pad items with zeros into the batch dict.

    Args:
        items: dicts with ``mix`` (T_i,), ``sources`` (C, T_i), ``mix_clean`` (T_i,), ``id``.

    Returns:
        ``{"mix": (B, T), "sources": (B, C, T), "mix_clean": (B, T), "lengths": (B,) int64,
        "ids": list[str]}`` with ``T = max T_i``.
    """
    n_src = {it["sources"].shape[0] for it in items}
    if len(n_src) != 1:
        raise DataError(f"items of one batch have different source counts {sorted(n_src)}")
    lengths = torch.tensor([it["mix"].shape[-1] for it in items], dtype=torch.int64)
    b, c, t = len(items), n_src.pop(), int(lengths.max())
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
        seed: base seed; each worker process derives its own generator from it and the
            DataLoader's per-worker seed, so crops differ across workers and epochs.
        utterances: an already loaded (and validated) list; skips reading the metadata.
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
        self._rng_key: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.utterances)

    def rng(self) -> np.random.Generator:
        """This process's generator: seeded from ``seed`` (+ the worker seed in a worker)."""
        info = get_worker_info()
        key = None if info is None else (info.id, info.seed)
        if self._rng is None or key != self._rng_key:
            entropy = [self.seed] if info is None else [self.seed, info.seed]
            self._rng = np.random.default_rng(entropy)
            self._rng_key = key
        return self._rng

    def __getitem__(self, index: int) -> Item:
        utt = self.utterances[index]
        if not self.train:
            return self._whole(utt)
        rng = self.rng()
        if self.mixer is not None:
            return self._dynamic_mix(rng)
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
        sources, mix_clean, mix = remix(self.speed(raw, factors), noise, self.segment)
        return self._item(mix, sources, mix_clean, utt.id)

    def _dynamic_mix(self, rng: np.random.Generator) -> Item:
        """A new mixture: random files, random windows, fresh LibriMix gains."""
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
        batch_size: training batch size.
        eval_batch_size: dev/test batch size (whole utterances; 1 avoids padding).
        num_workers: DataLoader worker processes.
        speed_perturb: per-source 95/100/105 % speed perturbation in training.
        speed_factors: the factors.
        dynamic_mixing: new training mixtures each epoch.
        validate: ``sample`` | ``all`` | ``none`` up-front file checks.
        validate_samples: mixtures per split whose headers ``sample`` checks.
        max_train, max_valid, max_test: keep only the first N mixtures (debug/smoke runs).
        pin_memory: DataLoader pin_memory.
        seed: seeds the training shuffle, the worker generators and the header sample.
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
        self.save_hyperparameters(logger=False)
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
        )

    def _loader(self, dataset: LibriMixDataset | None, stage: str, train: bool) -> DataLoader:
        if dataset is None:
            self.setup(stage)
            return self._loader(self._dataset_for(stage), stage, train)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            pin_memory=self.pin_memory,
            drop_last=False,
            # A dedicated generator: reproducible shuffles and worker seeds that change per epoch.
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            persistent_workers=False,
        )

    def _dataset_for(self, stage: str) -> LibriMixDataset | None:
        return {"fit": self.train_set, "validate": self.valid_set, "test": self.test_set}[stage]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "fit", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, "validate", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", train=False)
