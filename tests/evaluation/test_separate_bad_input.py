"""usgm-separate with non-finite inputs, a model that outputs NaN, odd rates and the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from usgm.evaluation.separate import (
    AudioInputError,
    SeparationError,
    check_audio,
    main,
    separate_file,
)


def _cli(model: Path, inputs: list[Path], out: Path) -> list[str]:
    return [str(model), *map(str, inputs), "--out", str(out), "--device", "cpu"]


@pytest.mark.parametrize(("value", "text"), [(np.nan, "is nan"), (-np.inf, "is -inf")])
def test_non_finite_input_stops_before_any_output(
    tmp_path: Path, tiny_ckpt, capsys, value: float, text: str
) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, np.full(4000, 0.01, np.float32), 8000)
    bad = tmp_path / "bad.wav"
    x = np.full(6000, 0.01, np.float32)
    x[4321] = value
    sf.write(bad, x, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    # The good file comes first: every input is checked before any is separated.
    assert main(_cli(tiny_ckpt[0], [good, bad], out)) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"usgm-separate: error: {bad}: sample 4321 {text} (float audio with NaN/Inf samples)\n"
    )
    assert not out.exists()


def test_stereo_double_inf_in_second_channel(tmp_path: Path) -> None:
    bad = tmp_path / "st.wav"
    x = np.zeros((3000, 2))
    x[2999, 1] = np.inf
    sf.write(bad, x, 16000, subtype="DOUBLE")
    with pytest.raises(AudioInputError, match="sample 2999 is inf"):
        check_audio(bad)


def test_model_output_nan_writes_nothing(tmp_path: Path) -> None:
    inp = tmp_path / "a.wav"
    sf.write(inp, np.full(8000, 0.1, np.float32), 8000)
    calls = 0

    def overflowing(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        est = torch.stack([x, x])
        if calls == 3:  # the third window: 2 × (0.2 − 0.05) s = 0.30 s into the file
            est[1, 5] = float("nan")
        return est

    out = tmp_path / "out"
    with pytest.raises(SeparationError, match=r"window starting at 0\.30 s"):
        separate_file(inp, out, overflowing, 2, 8000, 0.2, 0.05)
    assert list(out.iterdir()) == []


def test_input_checked_while_streaming(tmp_path: Path) -> None:
    """separate_file also checks each block (for callers that skip check_audio)."""
    inp = tmp_path / "a.wav"
    x = np.full(8000, 0.1, np.float32)
    x[5000] = np.nan
    sf.write(inp, x, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    with pytest.raises(AudioInputError, match="sample 5000 is nan"):
        separate_file(inp, out, lambda w: torch.stack([w, w]), 2, 8000, 0.2, 0.05)
    assert list(out.iterdir()) == []


def test_impractical_sample_rate_refused(tmp_path: Path, tiny_ckpt, capsys) -> None:
    odd = tmp_path / "odd.wav"
    sf.write(odd, np.full(800, 0.01, np.float32), 8001)  # 8001/8000 share no factor
    out = tmp_path / "out"
    assert main(_cli(tiny_ckpt[0], [odd], out)) == 1
    err = capsys.readouterr().err
    assert "sample rate 8001 Hz" in err and "ratio 8001/8000" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(tmp_path: Path, tiny_ckpt, umask: int) -> None:
    inp = tmp_path / "a.wav"
    sf.write(inp, np.full(1600, 0.01, np.float32), 8000)
    old = os.umask(umask)
    try:
        assert main(_cli(tiny_ckpt[0], [inp], tmp_path / "out")) == 0
    finally:
        os.umask(old)
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["a_s1.wav", "a_s2.wav"]
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
