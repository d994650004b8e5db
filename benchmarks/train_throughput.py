"""Training throughput (audio-seconds per second) of the unified model with a chosen method.

Runs the real training step (``SeparationModule.training_step`` under a Lightning Trainer) on
random utterances held on the device, so the number measures model + losses + GM + optimizer,
not data loading. Writes one JSON line per configuration to ``--out`` as soon as it finishes.

Examples:
    python benchmarks/train_throughput.py --smoke                 # tiny model, CPU, seconds
    python benchmarks/train_throughput.py --size paper --batch 16 --seconds 4 --method gm \
        --precision bf16-mixed --accelerator gpu --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from usgm.models.presets import TINY
from usgm.training.module import SeparationModule


class RandomBatches(Dataset):
    """``steps`` identical-shape random batches (already batched: use ``batch_size=None``)."""

    def __init__(self, steps: int, batch: int, n_src: int, length: int) -> None:
        self.steps, self.batch, self.n_src, self.length = steps, batch, n_src, length
        g = torch.Generator().manual_seed(0)
        self.sources = torch.randn(batch, n_src, length, generator=g) * 0.1
        self.noise = torch.randn(batch, length, generator=g) * 0.05

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict:
        clean = self.sources.sum(1)
        return {
            "mix": clean + self.noise,
            "sources": self.sources,
            "mix_clean": clean,
            "lengths": torch.full((self.batch,), self.length),
            "ids": [str(k) for k in range(self.batch)],
        }


class Timer(pl.Callback):
    """Times training batches after ``warmup`` steps (synchronising the device)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t0 = warmup, [], 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t0)


def measure(args: argparse.Namespace) -> dict:
    net = {"n_src": args.n_src, "backbone": args.backbone, "dropout": 0.0}
    if args.size == "tiny":
        net.update(TINY)
    module = SeparationModule(model=net, method=args.method, optim={"name": "adam", "lr": 1e-4})
    n_params = sum(p.numel() for p in module.parameters())
    length = int(args.seconds * args.sample_rate)
    timer = Timer(args.warmup)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        use_distributed_sampler=False,
    )
    data = RandomBatches(args.warmup + args.steps, args.batch, args.n_src, length)
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=None))
    step = sum(timer.times) / max(1, len(timer.times))
    audio_per_step = args.batch * args.seconds * max(1, args.devices)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "size": args.size,
        "backbone": args.backbone,
        "method": args.method,
        "n_params": n_params,
        "precision": args.precision,
        "devices": args.devices,
        "batch_per_device": args.batch,
        "seconds": args.seconds,
        "step_s": step,
        "audio_s_per_s": audio_per_step / step,
        "peak_mem_gib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=["tiny", "paper"], default="paper")
    p.add_argument("--backbone", choices=["sepformer", "dprnn"], default="sepformer")
    p.add_argument("--method", choices=["ss_only", "mtl", "gm", "gm_released"], default="gm")
    p.add_argument("--n-src", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--sample-rate", type=int, default=8000)
    p.add_argument("--precision", default="32")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path)
    p.add_argument("--smoke", action="store_true", help="tiny model, 2 steps on the CPU")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.batch, args.seconds, args.warmup, args.steps = "tiny", 2, 0.5, 1, 2
    result = measure(args)
    line = json.dumps(result)
    print(line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
