"""LibriMixDataModule: batch format, padding, splits, workers, config and early errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from usgm.data.datamodule import LibriMixDataModule, collate_batch
from usgm.data.errors import DataError
from usgm.data.librimix import read_wav

SR = 8000
CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def _dm(root: Path, **kw) -> LibriMixDataModule:
    kw = {"num_workers": 0, "segment": 0.5, "batch_size": 3, **kw}
    return LibriMixDataModule(root, **kw)


def _check_batch(batch: dict, b: int, c: int, t: int | None = None) -> None:
    assert set(batch) == {"mix", "sources", "mix_clean", "lengths", "ids"}
    assert batch["mix"].shape[0] == b and batch["sources"].shape[:2] == (b, c)
    t = batch["mix"].shape[-1] if t is None else t
    assert batch["mix"].shape == (b, t) and batch["mix_clean"].shape == (b, t)
    assert batch["sources"].shape == (b, c, t)
    assert batch["lengths"].dtype == torch.int64 and batch["lengths"].shape == (b,)
    assert batch["mix"].dtype == torch.float32
    assert isinstance(batch["ids"], list) and all(isinstance(i, str) for i in batch["ids"])
    torch.testing.assert_close(batch["mix_clean"], batch["sources"].sum(1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_src", [2, 3])
def test_batch_shapes(make_librimix, n_src: int) -> None:
    root = make_librimix(f"Libri{n_src}Mix", n_src=n_src)
    dm = _dm(root, n_src=n_src, eval_batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch, 3, n_src, 4000)
    assert torch.all(batch["lengths"] == 4000)  # every utterance is >= 0.5 s
    val = next(iter(dm.val_dataloader()))
    _check_batch(val, 2, n_src)
    dm.setup("test")
    test = list(dm.test_dataloader())
    assert sum(len(b["ids"]) for b in test) == 4


def test_whole_utterances_padding_and_content(libri2mix: Path) -> None:
    dm = _dm(libri2mix, eval_batch_size=4)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    utts = dm.utterances("test")
    assert batch["ids"] == [u.id for u in utts]  # test order == utterances("test") order
    assert batch["lengths"].tolist() == [u.length for u in utts]
    assert batch["mix"].shape[-1] == max(u.length for u in utts)
    for i, u in enumerate(utts):
        n = u.length
        assert torch.all(batch["mix"][i, n:] == 0) and torch.all(batch["sources"][i, :, n:] == 0)
        np.testing.assert_array_equal(batch["mix"][i, :n].numpy(), read_wav(u.mixture, SR))
        noise = read_wav(u.noise, SR)
        # On the generated files the identities are exact: mix_both = Σ sources + noise.
        np.testing.assert_allclose(
            (batch["mix"][i, :n] - batch["mix_clean"][i, :n]).numpy(), noise, atol=1e-6
        )


def test_sep_clean(libri2mix: Path) -> None:
    dm = _dm(libri2mix, task="sep_clean", eval_batch_size=2)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(batch["mix"], batch["mix_clean"], atol=1e-6, rtol=0)
    assert all(u.noise is None for u in dm.utterances("valid"))


def test_short_policy(libri2mix: Path) -> None:
    lengths = [u.length for u in _dm(libri2mix).utterances("train")]
    seg = 1.0
    n_long = sum(n >= seg * SR for n in lengths)
    assert 0 < n_long < len(lengths)  # the corpus has both (0.5–1.5 s)
    drop = _dm(libri2mix, segment=seg, short_policy="drop", batch_size=8)
    drop.setup("fit")
    batch = next(iter(drop.train_dataloader()))
    assert len(batch["ids"]) == n_long and torch.all(batch["lengths"] == 8000)
    pad = _dm(libri2mix, segment=seg, short_policy="pad", batch_size=8)
    pad.setup("fit")
    batch = next(iter(pad.train_dataloader()))
    assert len(batch["ids"]) == len(lengths) and batch["mix"].shape[-1] == 8000
    assert sorted(batch["lengths"].tolist()) == sorted(min(n, 8000) for n in lengths)
    for i, n in enumerate(batch["lengths"].tolist()):
        assert torch.all(batch["mix"][i, n:] == 0)
    with pytest.raises(DataError, match=r"shorter than data\.segment"):
        _dm(libri2mix, segment=5.0, short_policy="drop").setup("fit")


def test_random_crops_change_per_epoch(libri2mix: Path) -> None:
    dm = _dm(libri2mix, segment=0.25, batch_size=6)
    dm.setup("fit")
    loader = dm.train_dataloader()
    epochs = [next(iter(loader)) for _ in range(2)]
    by_id = [dict(zip(b["ids"], b["mix"])) for b in epochs]
    assert any(not torch.equal(by_id[0][k], by_id[1][k]) for k in by_id[0])
    # Reproducible: a fresh DataModule with the same seed gives the same first epoch.
    dm2 = _dm(libri2mix, segment=0.25, batch_size=6)
    dm2.setup("fit")
    again = next(iter(dm2.train_dataloader()))
    assert again["ids"] == epochs[0]["ids"] and torch.equal(again["mix"], epochs[0]["mix"])


def test_two_workers(libri2mix: Path) -> None:
    dm = _dm(libri2mix, num_workers=2, batch_size=2, segment=0.25, speed_perturb=True)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sum(len(b["ids"]) for b in batches) == 6
    for b in batches:
        _check_batch(b, len(b["ids"]), 2)
    dm.num_workers = 2
    val = list(dm.val_dataloader())
    assert [b["ids"][0] for b in val] == [u.id for u in dm.utterances("dev")]


def test_limits_and_utterances(libri2mix: Path) -> None:
    dm = _dm(libri2mix, max_train=2, max_valid=1, max_test=3)
    dm.setup(None)
    assert len(dm.train_set) == 2 and len(dm.valid_set) == 1 and len(dm.test_set) == 3
    assert [u.id for u in dm.utterances("test")] == [u.id for u in dm.utterances("test")[:3]]
    assert len(dm.utterances("dev")) == 1  # the configured valid split keeps its limit
    assert len(dm.utterances("train-360")) == 2
    u = dm.utterances("test")[0]
    assert u.mixture.is_file() and len(u.sources) == 2


def test_early_errors(tmp_path: Path, libri2mix: Path) -> None:
    with pytest.raises(DataError, match="usgm-make-data"):
        _dm(tmp_path / "missing").setup("fit")
    with pytest.raises(DataError, match="n_src=3"):
        _dm(libri2mix, n_src=3).check("test")
    (libri2mix / "wav8k/min/metadata/mixture_dev_mix_both.csv").unlink()
    with pytest.raises(DataError, match=r"mixture_dev_mix_both\.csv is missing"):
        _dm(libri2mix).setup("fit")  # dev is checked before training starts
    _dm(libri2mix).setup("test")  # test alone does not need dev
    with pytest.raises(DataError, match="short_policy"):
        _dm(libri2mix, short_policy="loop")


def test_collate_rejects_mixed_source_counts() -> None:
    a = {
        "mix": torch.zeros(3),
        "sources": torch.zeros(2, 3),
        "mix_clean": torch.zeros(3),
        "id": "a",
    }
    b = {
        "mix": torch.zeros(3),
        "sources": torch.zeros(3, 3),
        "mix_clean": torch.zeros(3),
        "id": "b",
    }
    with pytest.raises(DataError, match="source counts"):
        collate_batch([a, b])


@pytest.mark.parametrize("name", ["default", "librimix"])
def test_hydra_config(libri2mix: Path, name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    params = inspect.signature(LibriMixDataModule.__init__).parameters
    # `generate` configures train.py's one-time corpus generation, not the DataModule.
    meta = {"_target_", "generate"}
    assert set(cfg) - meta == set(params) - {"self"}
    # Standalone (no paths group) the root interpolation still resolves.
    assert OmegaConf.to_container(cfg, resolve=True)["root"].startswith("data/")
    full = OmegaConf.create({"paths": {"data_dir": str(libri2mix.parent)}, "data": cfg})
    assert (
        full.data.root
        == f"{libri2mix.parent}/{'default_2mix' if name == 'default' else 'Libri2Mix'}"
    )
    full.data.root = str(libri2mix)
    full.data.seed = 5
    full.data.num_workers = 0
    full.data.pop("generate", None)
    dm = instantiate(full.data)
    assert isinstance(dm, LibriMixDataModule) and dm.seed == 5
    assert dm.hparams["speed_factors"] == [0.95, 1.0, 1.05]
    assert type(dm.hparams["speed_factors"]) is list  # plain data for weights_only checkpoints
    dm.setup("validate")
    _check_batch(next(iter(dm.val_dataloader())), 1, 2)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, _):
        return ((self.w * batch["mix"].unsqueeze(1) - batch["sources"]) ** 2).mean()

    def validation_step(self, batch, _):
        self.log("val", batch["lengths"].float().mean(), batch_size=len(batch["ids"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_fit(libri2mix: Path, tmp_path: Path) -> None:
    dm = _dm(libri2mix, batch_size=2, speed_perturb=True, dynamic_mixing=True, max_valid=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Tiny(), datamodule=dm)
    assert trainer.global_step == 6


def test_lazy_error_from_worker_names_file(libri2mix: Path) -> None:
    # validate=none: nothing checked up front; the worker's read still fails clearly.
    dm = _dm(libri2mix, validate="none", num_workers=2, eval_batch_size=4)
    bad = dm.utterances("test")[2].sources[1]
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    dm.setup("test")
    with pytest.raises(DataError, match="unreadable or corrupt") as err:
        list(dm.test_dataloader())
    assert str(bad) in str(err.value)


def test_loader_position_resumes_the_same_stream(libri2mix: Path) -> None:
    """state_dict/load_state_dict mid-epoch continue with the next batch; workers do not matter."""

    def stream(loader, epochs: int) -> list:
        out = []
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)  # as Lightning does before each epoch
            out += [(epoch, b["ids"], b["mix"]) for b in loader]
        return out

    dm = _dm(libri2mix, segment=0.25, batch_size=2, speed_perturb=True, dynamic_mixing=True)
    dm.setup("fit")
    full = stream(dm.train_dataloader(), 2)
    assert len(full) == 6

    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    it = iter(loader)
    next(it)  # one batch of epoch 1 trained on, then the run stops
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 1}

    dm2 = _dm(libri2mix, segment=0.25, batch_size=2, speed_perturb=True, dynamic_mixing=True)
    dm2.num_workers = 2  # the stream does not depend on the worker processes
    dm2.setup("fit")
    resumed = dm2.train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    rest = [(1, b["ids"], b["mix"]) for b in resumed]
    assert len(rest) == 2
    for (e, ids, mix), (e2, ids2, mix2) in zip(full[4:], rest, strict=True):
        assert e == e2 and ids == ids2 and torch.equal(mix, mix2)


def test_worker_init_keeps_lightning_seeding(monkeypatch) -> None:
    """With seed_everything(workers=True) the workers are seeded as Lightning seeds them."""
    import random
    import signal

    from lightning.fabric.utilities.seed import pl_worker_init_function

    from usgm.data.datamodule import worker_ignores_sigterm

    def draws() -> tuple:
        return tuple(np.random.rand(3)), random.random(), tuple(torch.rand(2).tolist())

    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        monkeypatch.setenv("PL_SEED_WORKERS", "1")
        torch.manual_seed(123)
        worker_ignores_sigterm(1)
        ours = draws()
        torch.manual_seed(123)
        pl_worker_init_function(1)
        assert ours == draws()
        monkeypatch.delenv("PL_SEED_WORKERS")
        np.random.seed(7)
        worker_ignores_sigterm(1)  # no seeding asked for: the generators are left alone
        after = np.random.rand(3)
        np.random.seed(7)
        assert np.array_equal(after, np.random.rand(3))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


# A loader whose workers are still alive when the interpreter exits: multiprocessing then
# terminates (SIGTERM) and joins them. A group SIGTERM from elsewhere must not end them.
WORKERS_AT_EXIT = """
import multiprocessing, subprocess, sys, time
from torch.utils.data import DataLoader
from usgm.data.datamodule import LibriMixDataModule
if __name__ == "__main__":
  multiprocessing.set_start_method(sys.argv[2])
  dm = LibriMixDataModule(root=sys.argv[1], n_src=2, segment=0.5, batch_size=2, num_workers=2)
  dm.setup("fit")
  it = DataLoader.__iter__(dm.train_dataloader())  # the worker-owning iterator itself
  next(it), next(it)  # batches alternate between the workers: both are set up now
  pids = [w.pid for w in it._workers]
  subprocess.run(["kill", "-TERM", *map(str, pids)], check=True)  # another sender: dropped
  time.sleep(0.5)
  next(it)  # the workers still serve
  print("alive", all(w.is_alive() for w in it._workers), flush=True)
  # exit with the iterator alive: multiprocessing's exit handler terminates and joins them
"""


def test_workers_drop_foreign_sigterm_and_end_with_the_main_process(libri2mix: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", WORKERS_AT_EXIT, str(libri2mix), "fork"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alive True" in proc.stdout


def test_collate_pads_to_a_multiple() -> None:
    """``pad_multiple`` rounds the batch length up; lengths and the zero padding stay exact."""

    def item(n: int, value: float) -> dict:
        return {
            "mix": torch.full((n,), value),
            "sources": torch.full((2, n), value / 2),
            "mix_clean": torch.full((n,), value),
            "id": str(n),
        }

    out = collate_batch([item(5, 1.0), item(9, 2.0)], pad_multiple=4)
    assert out["mix"].shape == (2, 12) and out["sources"].shape == (2, 2, 12)
    assert out["lengths"].tolist() == [5, 9]
    expected = torch.zeros(2, 12)
    expected[0, :5], expected[1, :9] = 1.0, 2.0
    assert torch.equal(out["mix"], expected) and torch.equal(out["mix_clean"], expected)
    assert torch.equal(out["sources"], expected[:, None].expand(2, 2, 12) / 2)
    assert collate_batch([item(8, 1.0)], pad_multiple=4)["mix"].shape == (1, 8)  # already on it
    assert collate_batch([item(7, 1.0)])["mix"].shape == (1, 7)  # default: the longest item
