"""Shared fixtures: tiny corpora made by usgm's own generator, once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


def _make(tmp_path_factory: pytest.TempPathFactory, n_src: int) -> Path:
    from usgm.data.synth import make_dataset

    out = tmp_path_factory.mktemp(f"tiny{n_src}mix") / f"Libri{n_src}Mix"
    return make_dataset(out, n_src=n_src, n_train=6, n_dev=2, n_test=2, seed=123, num_workers=1)


@pytest.fixture(scope="session")
def tiny_2mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated 2-speaker corpus (6/2/2 mixtures) in the LibriMix layout."""
    return _make(tmp_path_factory, 2)


@pytest.fixture(scope="session")
def tiny_3mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated 3-speaker corpus (6/2/2 mixtures) in the LibriMix layout."""
    return _make(tmp_path_factory, 3)
