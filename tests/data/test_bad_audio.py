"""Non-finite audio on every path that reads training/dev/test wavs, and DataError from workers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from torch.utils.data import DataLoader

from usgm.data.datamodule import LibriMixDataset, collate_batch
from usgm.data.errors import DataError
from usgm.data.librimix import load_split


def _poison(path: Path, length: int, value: float = np.nan) -> None:
    """Rewrite ``path`` as a float WAV of the same length whose every 50th sample is ``value``."""
    x = np.full(length, 0.01, np.float32)
    x[::50] = value
    sf.write(path, x, 8000, subtype="FLOAT")


def _dataset(root: Path, split: str, **kw) -> LibriMixDataset:
    # validate="none": the lazy check on read is under test, not the up-front one.
    return LibriMixDataset(root, split, validate="none", **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"train": False},
        {"train": True, "segment": 0.2},
        {"train": True, "segment": 0.2, "speed_perturb": True},
        {"train": True, "segment": 0.2, "dynamic_mixing": True},
        {"train": True, "segment": 0.2, "dynamic_mixing": True, "speed_perturb": True},
    ],
    ids=["whole", "crop", "speed", "dynmix", "dynmix+speed"],
)
@pytest.mark.parametrize("kind", ["mixture", "sources", "noise"])
def test_every_read_path_refuses_nan(libri2mix: Path, kw: dict, kind: str) -> None:
    split = "train-360" if kw["train"] else "dev"
    utts = load_split(libri2mix, split, validate="none")
    augmented = kw.get("speed_perturb") or kw.get("dynamic_mixing")
    if (kind == "noise" and not augmented) or (kind == "mixture" and augmented):
        pytest.skip(f"this path does not read the {kind} files")
    # Poison that kind of file in every utterance, so any item drawn (dynamic mixing picks at
    # random) reads one; the other files stay clean, so the error comes from this kind.
    bad = set()
    for u in utts:
        files = {"mixture": [u.mixture], "sources": list(u.sources), "noise": [u.noise]}[kind]
        for p in files:
            _poison(p, u.length)
            bad.add(str(p))
    ds = _dataset(libri2mix, split, **kw)
    with pytest.raises(DataError, match="is nan") as err:
        ds[0]
    named = re.match(r"(.+\.wav): sample \d+ is nan", str(err.value))
    assert named and named.group(1) in bad, str(err.value)


def test_clean_files_still_give_finite_items(libri2mix: Path) -> None:
    """The same paths on the untouched corpus: items load and are finite (the check is not a
    blanket refusal)."""
    for kw in ({"train": False}, {"train": True, "segment": 0.2, "dynamic_mixing": True}):
        split = "train-360" if kw["train"] else "dev"
        item = _dataset(libri2mix, split, **kw)[0]
        for key in ("mix", "sources", "mix_clean"):
            assert bool(item[key].isfinite().all())


def test_worker_error_keeps_its_one_line_message(libri2mix: Path) -> None:
    """A DataError raised in a DataLoader worker reaches the caller as the same DataError, without
    the worker traceback text torch wraps around it (train.py / evaluate.py print it as is)."""
    utts = load_split(libri2mix, "dev", validate="none")
    _poison(utts[0].mixture, utts[0].length, np.inf)
    ds = _dataset(libri2mix, "dev", train=False)
    loader = DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate_batch)
    with pytest.raises(DataError) as err:
        list(loader)
    msg = str(err.value)
    assert msg == f"{utts[0].mixture}: sample 0 is inf (float audio with NaN/Inf samples)"


def test_unwrap_leaves_other_messages_alone() -> None:
    text = "Caught DataError somewhere else\nno traceback here"
    assert str(DataError(text)) == text
    assert str(DataError("a", "b")) == "('a', 'b')"
