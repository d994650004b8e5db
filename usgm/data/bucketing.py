"""Whole-utterance training batches formed by total duration (``data.batch_seconds``).

Training on whole utterances (the paper's protocol, ``data.segment: null``) with a fixed batch
size wastes the GPU twice: a batch of one is slow, and a fixed batch of random lengths pads
every item to the longest. :class:`BucketBatchSampler` instead packs utterances of similar
length (sorted, with a random order inside each length bucket) into batches whose padded size
``batch size × longest item`` stays within a budget of samples, then shuffles the batches.

It is a :class:`~usgm.data.datamodule.ResumableSampler` (hence a ``DistributedSampler``, which
Lightning neither wraps nor replaces under DDP) whose elements are whole batches: lists of
:class:`~usgm.data.datamodule.ItemKey`. The DataLoader runs with ``batch_size=None`` and the
dataset turns each list into a list of items (see ``LibriMixDataset.__getitem__``), which
``collate_batch`` pads. Every rank builds the same batch list from ``(seed, epoch)`` and takes
every ``num_replicas``-th batch after padding the list to a multiple of ``num_replicas``, so all
ranks run the same number of steps (none waits in a collective for a rank that has finished).
A resumed run skips the batches already trained on (the position counts batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Dataset

from usgm.data.datamodule import ItemKey, ResumableSampler, round_up
from usgm.data.errors import DataError


def bucket_batches(
    lengths: Sequence[int] | np.ndarray,
    max_samples: int,
    bucket_width: int,
    rng: np.random.Generator | None = None,
    max_batch_size: int | None = None,
) -> list[list[int]]:
    """Pack indices into batches of similar length whose padded size fits ``max_samples``.

    Each length is rounded up to a multiple of ``bucket_width`` (its bucket). Indices are sorted
    by bucket, in random order inside a bucket (so the batches differ between epochs), then cut
    greedily on the rounded lengths: a batch grows while ``(size + 1) × longest`` stays
    ≤ ``max_samples``. Items of one bucket are interchangeable for the budget, so the batch
    sizes (and their number) do not depend on ``rng``: every epoch has the same number of
    steps, which Lightning reads once per fit. An utterance longer than ``max_samples`` forms a
    batch of its own (it must still be trained on).

    Args:
        lengths: samples per utterance, shape (N,).
        max_samples: budget of padded samples per batch (``batch_seconds × sample_rate``).
        bucket_width: width of a length bucket in samples (≥ 1). 1 sorts exactly (least
            padding, the same neighbours every epoch); wider buckets mix more between epochs
            at the cost of some padding (at most one bucket width per item).
        rng: shuffles inside buckets; None keeps the sorted order (ties by index).
        max_batch_size: optional cap on the items per batch.

    Returns:
        Batches of indices in ascending length order (shuffle them afterwards).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_samples < 1 or bucket_width < 1:
        raise DataError(f"bucket_batches: max_samples={max_samples} and bucket_width="
                        f"{bucket_width} must be >= 1")  # fmt: skip
    tie = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    rounded = round_up(lengths, bucket_width)  # bucket ceiling ≥ the true length
    order = np.lexsort((tie, rounded))  # last key is primary: by bucket, then the tie-break
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order.tolist():
        n = int(rounded[i])
        grown = max(longest, n)
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * grown > max_samples):
            batches.append(current)
            current, grown = [], n
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


class BucketBatchSampler(ResumableSampler):
    """Length-bucketed batches of whole utterances with a duration budget; DDP-sharded; resumable.

    Yields one ``list[ItemKey]`` per batch. The batch list of an epoch is a pure function of
    ``(seed, epoch)`` and the lengths, identical on every rank; rank r takes batches
    ``r, r + R, …`` (R = ``num_replicas``) of the list padded by repeating its first batches to a
    multiple of R, so every rank gets ``ceil(batches / R)`` batches.

    Args:
        dataset: the training dataset (its length is checked against ``lengths``).
        lengths: samples each item will have at most (its utterance length), shape (N,).
        max_samples: padded samples per batch (``batch_seconds × sample_rate``).
        bucket_width: bucket width in samples (see :func:`bucket_batches`).
        num_replicas: world size.
        rank: this process's global rank.
        shuffle: shuffle inside buckets and the batch order every epoch.
        seed: the run's seed (the same on every rank).
        max_batch_size: optional cap on the items per batch.
    """

    def __init__(
        self,
        dataset: Dataset,
        lengths: Sequence[int] | np.ndarray,
        max_samples: int,
        *,
        bucket_width: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) != len(dataset):  # type: ignore[arg-type]
            raise DataError(f"{len(self.lengths)} lengths for {len(dataset)} items")  # type: ignore[arg-type]
        self.max_samples = int(max_samples)
        self.bucket_width = max(1, int(bucket_width))
        self.max_batch_size = max_batch_size
        self._len: int | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch`` (indices), in training order, before sharding."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        batches = bucket_batches(
            self.lengths, self.max_samples, self.bucket_width, rng, self.max_batch_size
        )
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``: every ``num_replicas``-th of the padded list."""
        batches = self.epoch_batches(epoch)
        per_rank = -(-len(batches) // self.num_replicas)
        padded = (batches * (per_rank * self.num_replicas // max(len(batches), 1) + 1))[
            : per_rank * self.num_replicas
        ]  # like DistributedSampler(drop_last=False): repeat from the start
        return padded[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        # The same for every epoch (see bucket_batches), as Lightning reads it once per fit.
        if self._len is None:
            self._len = len(self.rank_batches(self.epoch))
        return self._len

    def __iter__(self) -> Iterator[list[ItemKey]]:  # type: ignore[override]
        epoch, skip = self._start_iteration()
        batches = self.rank_batches(epoch)[skip:]
        return iter([[ItemKey(int(i), epoch, self.rank) for i in b] for b in batches])
