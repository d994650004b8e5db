"""Shared set-up of this folder's diagnostics: the model of argv[1] and the two sets to compare.

Run them from the repository root: ``python benchmarks/results/<this folder>/diag_*.py CKPT``.
"""
import importlib.util
import sys
from pathlib import Path

import torch

spec = importlib.util.spec_from_file_location("rst", "benchmarks/real_speech_transfer.py")
rst = importlib.util.module_from_spec(spec)
sys.modules["rst"] = rst
spec.loader.exec_module(rst)
from usgm import load_model  # noqa: E402

torch.set_num_threads(2)
model, _ = load_model(sys.argv[1])
model.eval()


def real_mixtures():
    """The 80-mixture real dev set as ``(id, mix (T,), sources (C, T))``."""
    return rst.mixtures_from_set(rst.load_set(Path("data/real_speech/mix/real2mix_dev")))


def sets():
    """``("real", mixtures)`` then ``("synth", the first 100 test mixtures of argv[2])``."""
    yield "real", real_mixtures()
    root = Path(sys.argv[2] if len(sys.argv) > 2 else "data/default_2mix")
    yield "synth", list(rst.synthetic_mixtures(root, 2, 100))
