"""Under DDP (2 CPU processes, gloo) every rank draws its own training items, reproducibly."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from usgm.data.datamodule import LibriMixDataModule


class _Recorder(L.LightningModule):
    """Trains one scalar; writes what each rank's batches held to ``<out>/rank<r>.json``."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[list] = []

    def training_step(self, batch, _):
        mix = batch["mix"]
        self.seen.append(
            [self.current_epoch, batch["ids"], [round(float(m.sum()), 6) for m in mix]]
        )
        return (self.w * mix).pow(2).mean()

    def on_train_end(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _draws(root: Path, out: Path, seed: int, **data) -> list[list]:
    out.mkdir()
    dm = LibriMixDataModule(
        root, batch_size=1, num_workers=0, segment=0.25, validate="none", seed=seed, **data
    )
    trainer = L.Trainer(
        accelerator="cpu",
        strategy="ddp_fork",  # gloo; forked: no re-import per rank
        devices=2,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=out,
    )
    trainer.fit(_Recorder(str(out)), datamodule=dm)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _items(rank_draws: list[list]) -> list[tuple]:
    return [(e, i, s) for e, ids, sums in rank_draws for i, s in zip(ids, sums, strict=True)]


def test_ranks_draw_different_mixtures_reproducibly(tiny_2mix: Path, tmp_path: Path) -> None:
    kw = {"dynamic_mixing": True, "speed_perturb": True}
    rank0, rank1 = _draws(tiny_2mix, tmp_path / "a", seed=5, **kw)
    items0, items1 = _items(rank0), _items(rank1)
    assert len(items0) == len(items1) == 6  # 6 mixtures / 2 ranks x 2 epochs
    # Every rank trains on its own mixtures (before: the same mixtures on both ranks).
    assert {i for _, i, _ in items0}.isdisjoint({i for _, i, _ in items1})
    assert {s for *_, s in items0}.isdisjoint({s for *_, s in items1})
    # ... new ones each epoch ...
    assert {i for e, i, _ in items0 if e == 0} != {i for e, i, _ in items0 if e == 1}
    # ... and the same seed gives the same draws on each rank; another seed others.
    assert _draws(tiny_2mix, tmp_path / "b", seed=5, **kw) == [rank0, rank1]
    assert _draws(tiny_2mix, tmp_path / "c", seed=6, **kw)[0] != rank0
