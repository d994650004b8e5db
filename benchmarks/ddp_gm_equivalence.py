"""Is one DDP step of a method equal to one single-process step over the concatenated batch?

GM is not linear in the gradients, so it must project the *global* g_SE and g_SS; averaging
per-rank projections gives a different update. This script trains one step either on one
process over a batch of ``2·B`` utterances or with Lightning DDP on ``--devices`` processes of
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

from usgm.models.presets import tiny_config
from usgm.training.module import SeparationModule

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


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    module = SeparationModule(
        model=PAPER if args.size == "paper" else TINY,
        method=args.method,
        optim={"name": "sgd", "lr": args.lr},
        clip_grad_norm=None,
    )
    module.sync_se_grads = not args.naive
    data = FixedUtterances(2 * args.batch, args.length)
    ddp = args.mode == "ddp"
    per_rank = args.batch if ddp else 2 * args.batch
    loader = DataLoader(data, batch_size=per_rank, shuffle=False)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices if ddp else 1,
        strategy="ddp" if ddp else "auto",
        precision=args.precision,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=True,
    )
    trainer.fit(module, train_dataloaders=loader)
    if trainer.is_global_zero:
        state = {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
        torch.save(state, args.out)


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
    p.add_argument("--method", choices=["gm", "mtl", "gm_released", "ss_only"], default="gm")
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
        help="negative control: project per rank, no g_SE all-reduce",
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
