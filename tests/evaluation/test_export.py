"""Export / load round trip and every kind of bad model file."""

from __future__ import annotations

import os
import pickle
import stat
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


def _poisoned_checkpoint(good: Path, dst: Path, value: float) -> str:
    """Copy of ``good`` with one weight set to ``value``; returns that tensor's name."""
    ck = torch.load(good, weights_only=True)
    name = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    ck["state_dict"][name] = ck["state_dict"][name].clone()
    ck["state_dict"][name].view(-1)[1] = value
    torch.save(ck, dst)
    return name[len("model.") :]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_refused_everywhere(
    tmp_path: Path, tiny_ckpt, capsys: pytest.CaptureFixture, value: float
) -> None:
    import numpy as np
    import soundfile as sf

    from usgm.evaluation.separate import main as separate_main

    bad = tmp_path / "diverged.ckpt"
    name = _poisoned_checkpoint(tiny_ckpt[0], bad, value)
    with pytest.raises(ModelFileError, match="weights are not finite") as err:
        load_model(bad)
    assert "1 of " in str(err.value) and repr(name) in str(err.value)
    assert "diverged.ckpt" in str(err.value) and "\n" not in str(err.value)

    out = tmp_path / "out"
    out.mkdir()
    assert export_main([str(bad), str(out / "m.pt")]) == 1
    err_text = capsys.readouterr().err
    assert err_text.startswith("usgm-export: error:") and "not finite" in err_text
    assert err_text.count("\n") == 1 and list(out.iterdir()) == []

    wav = tmp_path / "a.wav"
    sf.write(wav, np.full(800, 0.01, np.float32), 8000)
    assert separate_main([str(bad), str(wav), "--out", str(out), "--device", "cpu"]) == 1
    err_text = capsys.readouterr().err
    assert err_text.startswith("usgm-separate: error:") and "not finite" in err_text
    assert err_text.count("\n") == 1 and list(out.iterdir()) == []


def test_load_error_keeps_the_useful_part(tmp_path: Path) -> None:
    """The refused pickle names the global it refused, whole; no mid-word cut, no advice to
    load with weights_only=False."""
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"x": Evil()}, fh, protocol=2)  # torch's own protocol: refused by global
    with pytest.raises(ModelFileError) as err:
        load_model(evil)
    msg = str(err.value)
    assert "UnpicklingError: Unsupported global: GLOBAL print was not an allowed global" in msg
    assert "weights_only` set to `False`" not in msg and msg.endswith(")")

    trunc = tmp_path / "trunc.pt"
    torch.save({"a": torch.zeros(1000)}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:700])
    with pytest.raises(ModelFileError) as err:
        load_model(trunc)
    msg = str(err.value)
    assert "failed finding central directory)" in msg, msg  # the first sentence, whole


def test_load_failure_reason_reference() -> None:
    from usgm.evaluation.export import load_failure_reason

    long = "word " * 80  # 400 characters, no sentence end: kept whole
    assert (
        load_failure_reason(RuntimeError(long + "\nsecond line")) == "RuntimeError: " + long.strip()
    )
    assert load_failure_reason(EOFError()) == "EOFError"
    assert load_failure_reason(ValueError("First. Second.")) == "ValueError: First"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_respects_umask(tmp_path: Path, tiny_ckpt, umask: int) -> None:
    old = os.umask(umask)
    try:
        export_model(tiny_ckpt[0], tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o666 & ~umask
