"""research/realism/best_checkpoint.py: the best epoch checkpoint by its exact validation score."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "research" / "realism" / "best_checkpoint.py"
KEY = "ModelCheckpoint{'monitor': 'val/si_snri', 'mode': 'max'}"


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("best_checkpoint", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ckpt(folder: Path, name: str, score: float | None) -> Path:
    cbs = {"Timer": {}}
    if score is not None:
        cbs[KEY] = {"current_score": torch.tensor(score), "best_model_score": torch.tensor(9.0)}
    path = folder / name
    torch.save({"state_dict": {}, "callbacks": cbs}, path)
    return path


def test_a_tie_in_the_file_names_is_decided_by_the_exact_score(bc, tmp_path) -> None:
    a = _ckpt(tmp_path, "epoch008-sisnri4.30.ckpt", 4.2961)
    b = _ckpt(tmp_path, "epoch010-sisnri4.30.ckpt", 4.3039)
    c = _ckpt(tmp_path, "epoch003-sisnri2.10.ckpt", 2.1)
    assert bc.best_checkpoint([a, b, c]) == b
    assert bc.best_checkpoint([b, a]) == b
    assert bc.checkpoint_score(a) == pytest.approx(4.2961, abs=1e-6)


def test_the_file_name_scores_a_checkpoint_without_callback_state(bc, tmp_path) -> None:
    a = _ckpt(tmp_path, "epoch001-sisnri-0.50.ckpt", None)
    b = _ckpt(tmp_path, "epoch002-sisnri1.25.ckpt", None)
    assert bc.checkpoint_score(a) == -0.5
    assert bc.best_checkpoint([a, b]) == b
    with pytest.raises(ValueError, match="no validation score"):
        bc.checkpoint_score(_ckpt(tmp_path, "last.ckpt", None))


def test_cli_prints_the_best_and_names_a_bad_file(bc, tmp_path, capsys) -> None:
    a = _ckpt(tmp_path, "epoch001-sisnri1.00.ckpt", 1.0)
    b = _ckpt(tmp_path, "epoch002-sisnri2.00.ckpt", 2.0)
    assert bc.main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == str(b)
    missing = tmp_path / "epoch003-sisnri3.00.ckpt"
    assert bc.main([str(a), str(missing)]) == 2
    assert "epoch003" in capsys.readouterr().err
    assert bc.main([]) == 2
