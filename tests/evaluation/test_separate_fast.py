"""usgm-separate's device path against references computed here, and ``--compile``.

The references are written independently of :mod:`usgm.evaluation.separate`: a plain forward of
the tiny model, and a NumPy overlap-add (brute-force speaker alignment, raised-cosine cross-fade)
of per-window forwards.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from usgm.evaluation import separate as sep
from usgm.models import build_model
from usgm.models.presets import tiny_config

SR = 8000  # the tiny checkpoints' rate: no resampling, so the references are plain forwards


def _write(path: Path, seconds: float, seed: int = 5) -> np.ndarray:
    x = (0.1 * np.random.default_rng(seed).standard_normal(round(SR * seconds))).astype(np.float32)
    sf.write(path, x, SR, subtype="FLOAT")
    return x


def _read(paths: list[Path]) -> np.ndarray:
    return np.stack([sf.read(p, dtype="float32")[0] for p in paths])


@torch.inference_mode()
def _forward(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Plain eager forward of one signal (T,) → (C, T)."""
    return model(torch.from_numpy(x)[None]).est[0].numpy()


def _reference_overlap_add(
    model: torch.nn.Module, x: np.ndarray, window: int, overlap: int
) -> np.ndarray:
    """Windows [k·hop, k·hop + window) until one reaches the end, each separated alone, put in
    the order that best matches the previous window over the overlap, cross-faded with
    w(i) = ½ − ½·cos(π (i + ½) / overlap)."""
    hop, n = window - overlap, len(x)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
    out: np.ndarray | None = None
    start = 0
    while True:
        est = _forward(model, x[start : start + window]).astype(np.float64)
        if out is None:
            out = est
        else:
            prev = out[:, -overlap:]
            cur = est[:, :overlap]
            best = max(
                itertools.permutations(range(len(est))),
                key=lambda p: sum(prev[c] @ cur[p[c]] for c in range(len(p))),
            )
            est = est[list(best)]
            mixed = prev * (1 - ramp) + est[:, :overlap] * ramp
            out = np.concatenate([out[:, :-overlap], mixed, est[:, overlap:]], axis=1)
        if start + window >= n:
            return out
        start += hop


def test_file_shorter_than_a_window_is_one_plain_forward(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(tiny_config(n_src=2)).eval()
    x = _write(tmp_path / "short.wav", 0.43)
    fn = sep.model_separator(model, SR, SR, "cpu")
    got = _read(sep.separate_file(tmp_path / "short.wav", tmp_path / "o", fn, 2, SR, 0.5, 0.1))
    np.testing.assert_allclose(got, _forward(model, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("n_batch", "pad"), [(1, False), (3, False), (3, True), (7, True)])
def test_long_file_equals_independent_overlap_add(tmp_path: Path, n_batch: int, pad: bool) -> None:
    """3 speakers (6 orders to choose from), 11 windows: 10 full ones in batches of ``n_batch``
    (the short batch, 1 of 3 or 3 of 7, filled with zero windows to a power of two when
    ``pad``: 3 of 7 run as 4) and the last, shorter window."""
    torch.manual_seed(2)
    model = build_model(tiny_config(n_src=3)).eval()
    x = _write(tmp_path / "long.wav", 4.33)
    window, overlap = 4000, 800  # 0.5 s, 0.1 s
    ref = _reference_overlap_add(model, x, window, overlap)
    fn = sep.model_separator(model, SR, SR, "cpu")
    out = sep.separate_file(
        tmp_path / "long.wav", tmp_path / "o", fn, 3, SR, 0.5, 0.1, batch_windows=n_batch,
        pad_batches=pad,
    )  # fmt: skip
    got = _read(out)
    assert got.shape == ref.shape == (3, len(x))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_padded_batch_sizes_are_powers_of_two_up_to_the_batch() -> None:
    assert [sep.padded_batch_size(n, 4) for n in range(1, 5)] == [1, 2, 4, 4]
    assert [sep.padded_batch_size(n, 6) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]
    assert sep.compiled_batch_sizes(4) == [1, 2, 4]
    assert sep.compiled_batch_sizes(6) == [1, 2, 4, 6]
    assert sep.compiled_batch_sizes(1) == [1]
    with pytest.raises(ValueError, match="n_real"):
        sep.padded_batch_size(5, 4)


def test_best_permutation_stays_on_device_and_picks_the_first_of_ties() -> None:
    prev = torch.randn(3, 40, dtype=torch.float64)
    perm = sep.best_permutation(prev, prev[[1, 2, 0]])
    assert perm.tolist() == [2, 0, 1] and perm.dtype == torch.long
    same = torch.ones(2, 10)  # both orders score the same: the identity (first) wins
    assert sep.best_permutation(same, same).tolist() == [0, 1]


def test_auto_batch_windows_keeps_to_the_budget() -> None:
    assert sep.default_batch_windows("cpu") == 1
    assert sep.default_batch_windows("cpu", 5.0) == 1
    assert sep.default_batch_windows("cuda") == 4  # 30 s windows at 8 kHz
    assert sep.default_batch_windows("cuda", 10.0) == 4  # never more than the measured 4
    assert sep.default_batch_windows("cuda", 60.0) == 2
    assert sep.default_batch_windows("cuda", 30.0, 16000) == 2
    assert sep.default_batch_windows("cuda", 600.0) == 1


def test_cli_compile_equals_eager(tmp_path: Path, tiny_ckpt, monkeypatch) -> None:
    """``--compile`` (inductor on the CPU) gives the eager output; the compiled forward only
    sees full windows in batches of 3 and of 2 (the short batch of 2 stays 2: padded to a power
    of two, at most 3), the last window runs eager."""
    inp = tmp_path / "talk.wav"
    _write(inp, 2.3)  # 0.5 s windows, hop 0.4 s: 5 full windows and a 0.3 s one
    real = sep.compile_forward
    seen: list[tuple[int, ...]] = []

    def spy(model: torch.nn.Module, precision: str = "32"):
        compiled = real(model, precision)

        def call(y: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(y.shape))
            return compiled(y)

        return call

    monkeypatch.setattr(sep, "compile_forward", spy)
    base = [str(tiny_ckpt[0]), str(inp), "--device", "cpu", "--window", "0.5", "--overlap", "0.1"]
    base += ["--batch-windows", "3"]
    assert sep.main([*base, "--out", str(tmp_path / "eager")]) == 0
    assert seen == []
    assert sep.main([*base, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    assert seen == [(3, 4000), (2, 4000)]
    names = [f"talk_s{k}.wav" for k in (1, 2)]
    eager = _read([tmp_path / "eager" / n for n in names])
    compiled = _read([tmp_path / "compiled" / n for n in names])
    np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=0)
