"""Whole utterances batched by duration: packing, epochs, DDP shares, resume, DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from usgm.data.bucketing import BucketBatchSampler, bucket_batches
from usgm.data.datamodule import ItemKey, LibriMixDataModule
from usgm.data.errors import DataError

SR = 8000


def _lengths(n: int = 200, seed: int = 0) -> np.ndarray:
    """LibriMix-like mix: 3–20 s at 8 kHz."""
    return np.random.default_rng(seed).integers(3 * SR, 20 * SR, size=n)


def test_bucket_batches_cover_once_within_budget_and_pad_little() -> None:
    lengths = _lengths()
    lengths[7] = 70 * SR  # longer than the budget: must still be trained on, alone
    budget = 64 * SR
    batches = bucket_batches(lengths, budget, SR // 2, np.random.default_rng(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    assert [7] in batches
    padded = 0
    for b in batches:
        longest = int(lengths[b].max())
        assert len(b) == 1 or len(b) * longest <= budget
        padded += len(b) * longest
    # Length buckets keep the padding small; random batches of the same sizes would pad far more.
    assert padded / lengths.sum() < 1.08
    rng = np.random.default_rng(2)
    perm = rng.permutation(len(lengths))
    sizes = [len(b) for b in batches]
    cuts = np.split(perm, np.cumsum(sizes)[:-1])
    random_padded = sum(len(c) * int(lengths[c].max()) for c in cuts)
    assert random_padded / lengths.sum() > 1.2


def test_bucket_batches_max_batch_size_and_bad_args() -> None:
    lengths = np.full(10, 100)
    assert [len(b) for b in bucket_batches(lengths, 10_000, 1, None, max_batch_size=4)] == [4, 4, 2]
    with pytest.raises(DataError):
        bucket_batches(lengths, 0, 1)


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _sampler(lengths: np.ndarray, **kw) -> BucketBatchSampler:
    return BucketBatchSampler(_Items(len(lengths)), lengths, 64 * SR, bucket_width=SR, **kw)


def test_epochs_are_seeded_and_differ() -> None:
    lengths = _lengths()
    a, b = _sampler(lengths, seed=5), _sampler(lengths, seed=5)
    first = [[k.index for k in batch] for batch in a]  # epoch 0
    assert first == [[k.index for k in batch] for batch in b]
    keys = list(a)  # no set_epoch: the next epoch
    assert all(k.epoch == 1 and k.rank == 0 for batch in keys for k in batch)
    second = [[k.index for k in batch] for batch in keys]
    assert second != first
    assert sorted(i for batch in second for i in batch) == list(range(len(lengths)))
    # the same number of batches (and sizes) every epoch: Lightning reads len() once per fit
    assert sorted(map(len, a.epoch_batches(7))) == sorted(map(len, a.epoch_batches(0)))
    assert len({len(a.rank_batches(e)) for e in range(10)} | {len(a)}) == 1
    assert [[k.index for k in batch] for batch in _sampler(lengths, seed=6)] != first


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_ranks_get_equal_shares_of_all_batches(world: int) -> None:
    lengths = _lengths(101)
    ranks = [_sampler(lengths, num_replicas=world, rank=r, seed=1) for r in range(world)]
    for s in ranks:
        s.set_epoch(3)
    shares = [list(s) for s in ranks]
    n_batches = len(ranks[0].epoch_batches(3))
    assert len({len(s) for s in shares}) == 1  # same step count: no rank waits forever
    assert len(shares[0]) == len(ranks[0]) == -(-n_batches // world)
    seen = {k.index for share in shares for batch in share for k in batch}
    assert seen == set(range(len(lengths)))
    for r, share in enumerate(shares):
        assert all(k.rank == r and k.epoch == 3 for batch in share for k in batch)


def test_resume_skips_the_batches_trained_on() -> None:
    lengths = _lengths()
    s = _sampler(lengths, seed=2)
    s.set_epoch(4)
    full = [[k.index for k in b] for b in s]
    s.set_position(4, 3)
    s.set_epoch(4)  # Lightning calls it again on resume: keeps the position
    assert [[k.index for k in b] for b in s] == full[3:]


# -- DataModule ---------------------------------------------------------------------------------


def _dm(root: Path, **kw) -> LibriMixDataModule:
    kw = {"num_workers": 0, "segment": None, "batch_seconds": 2.5, "bucket_width": 0.1, **kw}
    return LibriMixDataModule(root, **kw)


@pytest.mark.parametrize(
    "aug", [{}, {"speed_perturb": True}, {"speed_perturb": True, "dynamic_mixing": True}]
)
def test_datamodule_duration_batches(make_librimix, aug: dict) -> None:
    root = make_librimix(splits={"train-360": 12, "dev": 2, "test": 2}, seconds=(0.4, 1.6))
    dm = _dm(root, **aug)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, BucketBatchSampler)
    utt = {u.id: u.length for u in dm.train_set.utterances}
    ids, sizes, shapes = [], [], set()
    for batch in loader:
        b, t = batch["mix"].shape
        sizes.append(b)
        assert b == 1 or b * t <= 2.5 * SR  # the duration budget holds after augmentation
        # the batch ends at its bucket's edge (0.1 s): batch lengths repeat across batches
        width = round(0.1 * SR)
        assert t % width == 0 and t - width < int(batch["lengths"].max()) <= t
        shapes.add(t)
        torch.testing.assert_close(batch["mix_clean"], batch["sources"].sum(1), atol=1e-5, rtol=0)
        for i, n in enumerate(batch["lengths"].tolist()):
            assert torch.all(batch["mix"][i, n:] == 0)
        if not aug:  # whole utterances as stored
            assert [utt[i] for i in batch["ids"]] == batch["lengths"].tolist()
        ids += batch["ids"]
    assert len(ids) == 12 and max(sizes) > 1
    assert len(shapes) <= len({-(-n // round(0.1 * SR)) for n in utt.values()})
    if not aug.get("dynamic_mixing"):
        assert sorted(ids) == sorted(utt)


def test_datamodule_duration_batches_resume(libri2mix: Path) -> None:
    dm = _dm(libri2mix, batch_seconds=1.6, speed_perturb=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    full = [(b["ids"], b["mix"]) for b in loader]
    assert len(full) >= 3
    loader.sampler.set_epoch(1)
    it = iter(loader)
    next(it)
    next(it)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    dm2 = _dm(libri2mix, batch_seconds=1.6, speed_perturb=True)
    dm2.setup("fit")
    resumed = dm2.train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    rest = [(b["ids"], b["mix"]) for b in resumed]
    assert len(rest) == len(full) - 2
    for (ids, mix), (ids2, mix2) in zip(full[2:], rest, strict=True):
        assert ids == ids2 and torch.equal(mix, mix2)


def test_datamodule_batch_seconds_errors_and_workers(libri2mix: Path) -> None:
    with pytest.raises(DataError, match="segment=null"):
        LibriMixDataModule(libri2mix, segment=3.0, batch_seconds=32)
    with pytest.raises(DataError, match="> 0"):
        LibriMixDataModule(libri2mix, segment=None, batch_seconds=0)
    dm = LibriMixDataModule(libri2mix, segment=None, batch_seconds=2.0, num_workers=1)
    assert dm.train_dataloader().persistent_workers  # no worker respawn every epoch
    assert not LibriMixDataModule(libri2mix, num_workers=0).train_dataloader().persistent_workers


@pytest.mark.parametrize("dynamic_mixing", [False, True])
def test_items_never_exceed_their_utterance(make_librimix, dynamic_mixing: bool) -> None:
    """The budget is planned from utterance lengths: augmented items must not be longer."""
    root = make_librimix(splits={"train-360": 12, "dev": 2, "test": 2}, seconds=(0.3, 1.6))
    dm = _dm(root, task="sep_clean", speed_perturb=True, speed_factors=[0.8],
             dynamic_mixing=dynamic_mixing)  # fmt: skip
    dm.setup("fit")
    ds = dm.train_set
    assert ds.cap_to_utterance
    for i, u in enumerate(ds.utterances):
        for epoch in range(3):
            assert ds[ItemKey(i, epoch, 0)]["mix"].shape[-1] <= u.length


def test_lightning_fit_with_duration_batches(libri2mix: Path, tmp_path: Path) -> None:
    """Lightning takes the batch-yielding sampler as is (no re-wrap); epochs run their batches."""
    import lightning as L

    from usgm.losses import ss_loss

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, 0.5]))
            self.sizes: list[int] = []

        def training_step(self, batch, _):
            self.sizes.append(len(batch["ids"]))
            est = self.w[:, None] * batch["mix"].unsqueeze(1)
            return ss_loss(est, batch["sources"], lengths=batch["lengths"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = _dm(libri2mix, batch_seconds=1.6, max_valid=1)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        limit_val_batches=0,
    )  # fmt: skip
    model = Tiny()
    trainer.fit(model, datamodule=dm)
    loader = trainer.train_dataloader
    assert isinstance(loader.sampler, BucketBatchSampler)
    expected = sum(len(loader.sampler.rank_batches(e)) for e in range(2))
    assert trainer.global_step == expected == len(model.sizes)
    assert sum(model.sizes) == 12 and max(model.sizes) > 1  # 6 utterances × 2 epochs


@pytest.mark.parametrize("method", ["ss_only", "gm"])
def test_training_step_losses_skip_padding(method: str) -> None:
    """SeparationModule._gradients hands the batch lengths to the SS and SE losses."""
    from usgm.losses import se_loss, ss_loss
    from usgm.models.encoder import n_frames
    from usgm.models.presets import tiny_config
    from usgm.training.module import SeparationModule

    torch.manual_seed(0)
    module = SeparationModule(model=tiny_config(n_src=2), method=method, clip_grad_norm=None)
    module.eval()  # no dropout: the reference below recomputes the same forward
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([800, 430])
    sources = torch.randn(2, 2, 800, generator=g) * 0.1
    sources[1, :, 430:] = 0  # zero padding, as collate_batch writes it
    mix_clean = sources.sum(1)
    mix = mix_clean + torch.randn(2, 800, generator=g) * 0.05 * (
        torch.arange(800) < lengths[:, None]
    )
    batch = {"mix": mix, "sources": sources, "mix_clean": mix_clean, "lengths": lengths}
    _, info = module._gradients(batch, with_stats=False)

    model = module.model
    with torch.no_grad():
        enhanced = model.enhance(model.encode(mix))
        est = model.decode(enhanced, model.separation_masks(enhanced), 800)
        threshold = module.hparams["loss"]["threshold"]
        want = ss_loss(est, sources, threshold, lengths=lengths)
        torch.testing.assert_close(info["loss_ss"], want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(info["loss_ss"], ss_loss(est, sources, threshold), atol=1e-3)
        if method == "gm":
            enc = model.encoder
            frames = n_frames(lengths, enc.kernel_size, enc.stride)
            clean = model.encode(mix_clean)
            red = module.hparams["loss"]["se_reduction"]
            torch.testing.assert_close(info["loss_se"], se_loss(enhanced, clean, red, frames))
            assert not torch.allclose(info["loss_se"], se_loss(enhanced, clean, red), rtol=1e-4)
