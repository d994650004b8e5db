"""Is one DDP step of a method equal to one single-process step over the concatenated batch?

GM is not linear in the gradients, so it must project the *global* g_SE and g_SS; averaging
per-rank projections gives a different update. Likewise the loss threshold's kept-utterance mean
must be the global one. This script trains ``--steps`` steps either on one
process over batches of ``2·B`` utterances or with Lightning DDP on ``--devices`` processes of
``B`` each, and saves the resulting parameters; compare two runs with ``--compare``.

Examples:
    # CPU (gloo), what the test suite runs:
    python benchmarks/ddp_gm_equivalence.py --mode single --out /tmp/single.pt
    python benchmarks/ddp_gm_equivalence.py --mode ddp --devices 2 --out /tmp/ddp.pt
    python benchmarks/ddp_gm_equivalence.py --compare /tmp/single.pt /tmp/ddp.pt
    # 2 GPUs (NCCL): add --accelerator gpu [--size paper]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from usgm.losses import pit_si_snr
from usgm.models.presets import tiny_config
from usgm.training.module import METHODS, SeparationModule

TINY = tiny_config(n_src=2)
PAPER = {"n_src": 2, "backbone": "sepformer", "dropout": 0.0}


class FixedUtterances(Dataset):
    """``n`` seeded random 2-speaker noisy utterances of equal length."""

    def __init__(self, n: int, length: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.sources = torch.randn(n, 2, length, generator=g) * 0.1
        self.noise = torch.randn(n, length, generator=g) * 0.05

    def __len__(self) -> int:
        return self.sources.shape[0]

    def __getitem__(self, i: int) -> dict:
        clean = self.sources[i].sum(0)
        return {
            "mix": clean + self.noise[i],
            "sources": self.sources[i],
            "mix_clean": clean,
            "lengths": torch.tensor(clean.shape[-1]),
            "ids": str(i),
        }


class StepBatches(Dataset):
    """Item ``k`` is this process's share of global batch ``k`` (already collated).

    Global batch k holds utterances ``[k·G, (k+1)·G)`` of ``data`` (G = ``global_batch``); a DDP
    rank takes its contiguous slice, read at iteration time, when the process group exists. So
    one process and N ranks see the same global batches in the same order (a sampler would
    shuffle or interleave them).
    """

    def __init__(self, data: FixedUtterances, global_batch: int) -> None:
        self.data, self.global_batch = data, global_batch

    def __len__(self) -> int:
        return len(self.data) // self.global_batch

    def __getitem__(self, k: int) -> dict:
        world, rank = 1, 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        share = self.global_batch // world
        start = k * self.global_batch + rank * share
        items = [self.data[i] for i in range(start, start + share)]
        out = {key: torch.stack([it[key] for it in items]) for key in items[0] if key != "ids"}
        return {**out, "ids": [it["ids"] for it in items]}


def _threshold(args: argparse.Namespace, module: SeparationModule, data: Dataset) -> float | None:
    """``--threshold``: a number, ``none``, or ``auto``.

    ``auto`` keeps exactly one utterance of the first global batch (the one with the lowest
    initial SI-SNR), so in a DDP run one rank has a kept utterance and the other none: a
    per-rank mean of the kept utterances would then differ from the global one.
    """
    if args.threshold == "none":
        return None
    if args.threshold != "auto":
        return float(args.threshold)
    batch = [data[i] for i in range(args.devices * args.batch)]
    mix = torch.stack([b["mix"] for b in batch])
    ref = torch.stack([b["sources"] for b in batch])
    with torch.no_grad():
        best, _ = pit_si_snr(module.model(mix).est, ref)
    low = best.sort().values
    return float((low[0] + low[1]) / 2)


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    module = SeparationModule(
        model=PAPER if args.size == "paper" else TINY,
        method=args.method,
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": args.lr},
        clip_grad_norm=None,
    )
    data = FixedUtterances(args.devices * args.batch * args.steps, args.length)
    module.hparams["loss"]["threshold"] = _threshold(args, module, data)
    module.sync_task_grads = not args.naive
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    ddp = args.mode == "ddp"
    loader = DataLoader(StepBatches(data, args.devices * args.batch), batch_size=None)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices if ddp else 1,
        strategy="ddp" if ddp else "auto",
        precision=args.precision,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
    )
    trainer.fit(module, train_dataloaders=loader)
    if trainer.is_global_zero:
        state = {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
        torch.save(state, args.out)
        changed = sum(not torch.equal(initial[k], v) for k, v in module.state_dict().items())
        print(json.dumps({"changed_tensors": changed, "global_step": trainer.global_step}))


def compare(a: str, b: str, rtol: float, atol: float) -> int:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    worst = max(float((sa[k] - sb[k]).abs().max()) for k in sa)
    ok = all(torch.allclose(sa[k], sb[k], rtol=rtol, atol=atol) for k in sa)
    print(
        json.dumps(
            {"max_abs_diff": worst, "equal_within_tolerance": ok, "rtol": rtol, "atol": atol}
        )
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=["single", "ddp"], default="single")
    p.add_argument("--method", choices=sorted(METHODS), default="gm")
    p.add_argument("--steps", type=int, default=1, help="optimizer steps (a new batch each)")
    p.add_argument(
        "--threshold", default="none", help="loss threshold in dB, 'none', or 'auto' (see code)"
    )
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--precision", default="32")
    p.add_argument("--size", choices=["tiny", "paper"], default="tiny")
    p.add_argument("--batch", type=int, default=2, help="utterances per rank")
    p.add_argument("--length", type=int, default=1600, help="samples per utterance")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument(
        "--naive",
        action="store_true",
        help="negative control: combine each rank's gradients, then average",
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"))
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=2e-5)
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare, rtol=args.rtol, atol=args.atol)
    if args.out is None:
        p.error("--out is required unless --compare is given")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
