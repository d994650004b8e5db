"""usgm-separate with batched windows (--batch-windows) and bfloat16 (--precision bf16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from usgm.evaluation.separate import (
    SeparationError,
    group_windows,
    iter_windows,
    main,
    model_separator,
    separate_file,
)
from usgm.losses import si_snr

# The bf16 output of the tiny random model stays above this SI-SNR against its fp32 output
# (measured about 35–40 dB; the paper-size figure is the benchmark's to state).
BF16_MIN_SI_SNR_DB = 25.0


def _reader(x: torch.Tensor):
    pos = 0

    def read(k: int) -> torch.Tensor:
        nonlocal pos
        out = x[pos : pos + k]
        pos += out.shape[-1]
        return out

    return read


def test_group_windows_equal_lengths_in_order() -> None:
    x = torch.arange(1030.0)
    wins = list(iter_windows(_reader(x), 100, 80))  # 50 windows, the last one shorter
    groups = list(group_windows(iter(wins), 4))
    assert [w for g in groups for w, _ in g] == [w for w, _ in wins]  # order kept, none lost
    assert all(1 <= len(g) <= 4 for g in groups)
    assert all(len({w.shape[-1] for w, _ in g}) == 1 for g in groups)
    assert groups[-1] == [wins[-1]] and wins[-1][0].shape[-1] < 100
    with pytest.raises(ValueError, match=">= 1"):
        list(group_windows(iter(wins), 0))


def _mix_16k(path: Path, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal(round(16000 * seconds))).astype(np.float32)
    sf.write(path, x, 16000, subtype="FLOAT")
    return x


def _read_outputs(paths: list[Path]) -> np.ndarray:
    return np.stack([sf.read(p, dtype="float32")[0] for p in paths])


@pytest.mark.parametrize("n_batch", [2, 3, 8])
def test_batched_equals_unbatched_fp32(tmp_path: Path, tiny_ckpt, n_batch: int) -> None:
    """Batches of 2/3/8 windows (with a short last window, 16 kHz through the 8 kHz model)."""
    _, model = tiny_ckpt
    inp = tmp_path / "long.wav"
    x = _mix_16k(inp, 3.37)
    fn = model_separator(model, 8000, 16000, "cpu")
    ref = _read_outputs(separate_file(inp, tmp_path / "one", fn, 2, 16000, 0.5, 0.1))
    calls: list[tuple[int, ...]] = []

    def spy(w: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(w.shape))
        return fn(w)

    out = separate_file(inp, tmp_path / "batched", spy, 2, 16000, 0.5, 0.1, batch_windows=n_batch)
    got = _read_outputs(out)
    assert got.shape == ref.shape == (2, x.shape[0])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # Really batched: all calls are (B, n), at most n_batch windows, fewer calls than windows.
    assert all(len(c) == 2 and 1 <= c[0] <= n_batch for c in calls)
    assert max(c[0] for c in calls) == min(n_batch, 8) and len(calls) < sum(c[0] for c in calls)


def test_batched_nan_names_the_window_and_writes_nothing(tmp_path: Path) -> None:
    sr = 8000
    sf.write(tmp_path / "a.wav", np.full(sr * 2, 0.1, dtype=np.float32), sr)

    def nan_in_fifth(w: torch.Tensor) -> torch.Tensor:  # (B, n) → (B, 2, n)
        est = torch.stack([w, w], dim=1).clone()
        nan_in_fifth.seen += w.shape[0]
        if nan_in_fifth.seen >= 5 > nan_in_fifth.seen - w.shape[0]:
            est[4 - (nan_in_fifth.seen - w.shape[0]), 1, 7] = float("nan")
        return est

    nan_in_fifth.seen = 0
    out = tmp_path / "out"
    # window 0.2 s, hop 0.15 s: the fifth window (index 4) starts at 0.60 s.
    with pytest.raises(SeparationError, match=r"a\.wav.*starting at 0\.60 s"):
        separate_file(tmp_path / "a.wav", out, nan_in_fifth, 2, sr, 0.2, 0.05, batch_windows=3)
    assert list(out.iterdir()) == []


def test_bf16_close_to_fp32_on_cpu(tmp_path: Path, tiny_ckpt) -> None:
    _, model = tiny_ckpt
    inp = tmp_path / "long.wav"
    _mix_16k(inp, 2.1)
    outs = {}
    for precision in ("32", "bf16"):
        fn = model_separator(model, 8000, 16000, "cpu", precision)
        outs[precision] = _read_outputs(
            separate_file(inp, tmp_path / precision, fn, 2, 16000, 0.5, 0.1, batch_windows=4)
        )
    fp32, bf16 = torch.from_numpy(outs["32"]), torch.from_numpy(outs["bf16"])
    assert not torch.equal(fp32, bf16)  # bf16 really ran
    assert float(si_snr(bf16, fp32).min()) > BF16_MIN_SI_SNR_DB


def test_model_separator_rejects_unknown_precision(tiny_ckpt) -> None:
    with pytest.raises(ValueError, match="precision"):
        model_separator(tiny_ckpt[1], 8000, 8000, "cpu", "fp16")


def test_cli_batch_and_precision_flags(tmp_path: Path, tiny_ckpt, capsys) -> None:
    inp = tmp_path / "talk.wav"
    x = _mix_16k(inp, 1.3)
    base = [str(tiny_ckpt[0]), str(inp), "--device", "cpu", "--window", "0.5", "--overlap", "0.1"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--batch-windows", "3"]) == 0
    a = _read_outputs([tmp_path / "a" / f"talk_s{k}.wav" for k in (1, 2)])
    b = _read_outputs([tmp_path / "b" / f"talk_s{k}.wav" for k in (1, 2)])
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert main([*base, "--out", str(tmp_path / "c"), "--precision", "bf16"]) == 0
    assert sf.info(tmp_path / "c" / "talk_s2.wav").frames == x.shape[0]
    capsys.readouterr()
    for bad in (["--batch-windows", "0"], ["--batch-windows", "x"], ["--precision", "fp16"]):
        with pytest.raises(SystemExit) as exc:
            main([*base, "--out", str(tmp_path / "d"), *bad])
        assert exc.value.code == 2
        assert "error" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
