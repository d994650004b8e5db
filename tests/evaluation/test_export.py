"""Export / load round trip and every kind of bad model file."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import usgm
from usgm.evaluation.export import EXPORT_FORMAT, ModelFileError, export_model, load_model
from usgm.evaluation.export import main as export_main


@pytest.mark.parametrize("method", ["ss_only", "mtl", "gm", "gm_released"])
def test_round_trip_identical_outputs(tmp_path: Path, method: str, checkpoint_factory) -> None:
    ckpt = tmp_path / "m.ckpt"
    original = checkpoint_factory(ckpt, method=method)
    out = tmp_path / "shared" / "model.pt"
    assert export_main([str(ckpt), str(out)]) == 0
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == EXPORT_FORMAT and raw["version"] == 1
    assert set(raw) == {"format", "version", "model", "sample_rate", "state_dict", "meta"}
    assert raw["meta"]["method"] == method and raw["sample_rate"] == 8000

    m_ckpt, meta_ckpt = usgm.load_model(ckpt)
    m_exp, meta_exp = usgm.load_model(out)
    x = torch.randn(2, 1234)
    with torch.inference_mode():
        ref = original(x).est
        assert torch.equal(m_ckpt(x).est, ref)
        assert torch.equal(m_exp(x).est, ref)
    for meta in (meta_ckpt, meta_exp):
        assert meta["sample_rate"] == 8000 and meta["n_src"] == 2 and meta["method"] == method
    assert meta_ckpt["format"] == "lightning-checkpoint" and meta_ckpt["epoch"] == 1
    assert meta_exp["format"] == EXPORT_FORMAT
    assert not m_exp.training
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


def test_import_usgm_stays_light() -> None:
    code = "import sys, usgm; print('torch' in sys.modules, callable(usgm.load_model))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


class Evil:
    def __reduce__(self):  # would run code under a plain pickle load
        return (print, ("pwned",))


def _bad_files(tmp_path: Path, good_ckpt: Path) -> dict[str, Path]:
    files = {}
    files["text"] = tmp_path / "notes.pt"
    files["text"].write_text("hello")
    files["empty"] = tmp_path / "empty.ckpt"
    files["empty"].write_bytes(b"")
    files["list"] = tmp_path / "list.pt"
    torch.save([1, 2, 3], files["list"])
    files["dict"] = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, files["dict"])
    files["version"] = tmp_path / "future.pt"
    torch.save({"format": EXPORT_FORMAT, "version": 99, "model": {}}, files["version"])
    files["nohp"] = tmp_path / "nohp.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, files["nohp"])
    files["code"] = tmp_path / "evil.pt"
    with open(files["code"], "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    files["mismatch"] = tmp_path / "mismatch.ckpt"
    ck = torch.load(good_ckpt, weights_only=True)
    ck["hyper_parameters"]["model"]["d_model"] = 32
    torch.save(ck, files["mismatch"])
    files["badcfg"] = tmp_path / "badcfg.ckpt"
    ck["hyper_parameters"]["model"]["colour"] = "blue"
    torch.save(ck, files["badcfg"])
    files["missing"] = tmp_path / "nope.ckpt"
    files["dir"] = tmp_path
    return files


def test_bad_model_files(tmp_path: Path, tiny_ckpt, capsys: pytest.CaptureFixture) -> None:
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for kind, path in _bad_files(bad_dir, tiny_ckpt[0]).items():
        with pytest.raises(ModelFileError, match=path.name) as info:
            load_model(path)
        assert "\n" not in str(info.value), kind
    assert "pwned" not in capsys.readouterr().out  # the pickle payload never ran


def test_export_cli_error_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_text("garbage")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert export_main([str(bad), str(out_dir / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("usgm-export: error:") and "bad.ckpt" in err and err.count("\n") == 1
    assert list(out_dir.iterdir()) == []


def test_export_of_an_export(tmp_path: Path, tiny_ckpt) -> None:
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    export_model(tiny_ckpt[0], first)
    export_model(first, second)
    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    assert a["model"] == b["model"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
