"""usgm-separate: stitching, streaming, rates, channels, long files and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from usgm.evaluation.separate import (
    OverlapStitcher,
    best_permutation,
    iter_windows,
    main,
    separate_file,
    separate_in_windows,
)


class FlippingOracle:
    """Stub separator that knows the true sources and returns each window's slice of them in a
    different speaker order every call (what a real model may do between windows)."""

    def __init__(self, sources: torch.Tensor, hop: int) -> None:
        self.sources, self.hop, self.calls = sources, hop, 0

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        start = self.calls * self.hop
        out = self.sources[:, start : start + window.shape[-1]]
        assert out.shape[-1] == window.shape[-1]
        shift = self.calls % self.sources.shape[0]
        self.calls += 1
        return out.roll(shift, dims=0)


@pytest.mark.parametrize("n_src", [2, 3])
def test_stitching_keeps_speaker_order(n_src: int) -> None:
    torch.manual_seed(n_src)
    sources = torch.randn(n_src, 1000)
    window, overlap = 240, 60
    oracle = FlippingOracle(sources, window - overlap)
    out = separate_in_windows(oracle, sources.sum(0), window, overlap)
    assert oracle.calls >= 5
    assert out.shape == sources.shape
    assert torch.allclose(out, sources, atol=1e-6)


def test_best_permutation_and_crossfade() -> None:
    torch.manual_seed(0)
    prev = torch.randn(3, 50)
    assert best_permutation(prev, prev[[2, 0, 1]]).tolist() == [1, 2, 0]
    st = OverlapStitcher(4)
    first = st.push(torch.ones(1, 10), final=False)
    assert first.shape == (1, 6)
    last = st.push(torch.zeros(1, 6), final=True)
    # Raised-cosine fade from the previous window (ones) into the new one (zeros).
    assert torch.all(last[0, :4].diff() < 0) and torch.all(last[0, 4:] == 0)
    assert 0.5 < float(last[0, 0]) < 1.0


def test_iter_windows_covers_input_once() -> None:
    x = torch.arange(1003.0)
    pos = 0

    def read(k: int) -> torch.Tensor:
        nonlocal pos
        out = x[pos : pos + k]
        pos += out.shape[-1]
        return out

    wins = list(iter_windows(read, 100, 80))
    assert wins[-1][1] and not any(f for _, f in wins[:-1])
    assert all(w.shape[-1] == 100 for w, _ in wins[:-1]) and wins[-1][0].shape[-1] >= 20
    rebuilt = torch.cat([wins[0][0]] + [w[20:] for w, _ in wins[1:]])
    assert torch.equal(rebuilt, x)


def test_streamed_file_long_stereo_16k(tmp_path: Path) -> None:
    """A 16 kHz stereo file longer than the window, through the streaming file path."""
    sr, n = 16000, 16000 * 3 + 123
    rng = np.random.default_rng(0)
    sources = torch.from_numpy(rng.standard_normal((2, n)).astype(np.float32) * 0.1)
    stereo = np.stack([sources.sum(0).numpy()] * 2, axis=1)
    inp = tmp_path / "talk.flac"
    sf.write(inp, stereo, sr, subtype="PCM_24")
    window_s, overlap_s = 0.5, 0.1
    oracle = FlippingOracle(sources, round((window_s - overlap_s) * sr))
    written = separate_file(inp, tmp_path / "out", oracle, 2, sr, window_s, overlap_s)
    assert [p.name for p in written] == ["talk_s1.wav", "talk_s2.wav"]
    for k, p in enumerate(written):
        data, rate = sf.read(p, dtype="float32")
        assert rate == sr and data.shape == (n,)
        np.testing.assert_allclose(data, sources[k].numpy(), atol=1e-6)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["talk_s1.wav", "talk_s2.wav"]


def test_failure_mid_file_leaves_nothing(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32) + 0.1, 8000)
    calls = 0

    def broken(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("device fell over")
        return torch.stack([x, x])

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="fell over"):
        separate_file(tmp_path / "a.wav", out, broken, 2, 8000, 0.2, 0.05)
    assert list(out.iterdir()) == []


def _stereo_16k(path: Path, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    n = round(16000 * seconds)
    x = (0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    sf.write(path, x, 16000, subtype="FLOAT")
    return x


def test_cli_real_model_stereo_16k_and_windowed(tmp_path: Path, tiny_ckpt, capsys) -> None:
    ckpt, model = tiny_ckpt  # an 8 kHz model
    x = _stereo_16k(tmp_path / "meeting.wav", 1.3)
    out = tmp_path / "sep"
    args = [str(ckpt), str(tmp_path / "meeting.wav"), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--window", "0.5", "--overlap", "0.1"]) == 0
    err = capsys.readouterr().err
    assert "2 channels downmixed to mono" in err
    s1, sr1 = sf.read(out / "meeting_s1.wav", dtype="float32")
    s2, _ = sf.read(out / "meeting_s2.wav", dtype="float32")
    assert sr1 == 16000 and s1.shape == s2.shape == (x.shape[0],)
    assert np.isfinite(s1).all() and np.abs(s1).max() > 0
    # Before the first overlap the output is the model's own output for the first window
    # (resampled 16k → 8k → model → 16k), in some speaker order.
    import torchaudio.functional as AF

    win = torch.from_numpy(x[:8000].mean(1))
    with torch.inference_mode():
        ref = AF.resample(model(AF.resample(win, 16000, 8000)[None]).est[0], 8000, 16000)
    head = np.stack([s1, s2])[:, :6400]
    ok = [np.allclose(head, ref.numpy()[p, :6400], atol=1e-5) for p in ([0, 1], [1, 0])]
    assert any(ok)
    # Whole file in one window: the same length, 16 kHz output.
    out2 = tmp_path / "sep2"
    assert main([*args[:-4], "--out", str(out2), "--device", "cpu"]) == 0
    assert sf.info(out2 / "meeting_s1.wav").frames == x.shape[0]


def test_cli_folder_input(tmp_path: Path, tiny_ckpt, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "a.wav", np.zeros(4000, dtype=np.float32) + 0.01, 8000)
    sf.write(folder / "b.flac", 0.1 * np.ones(3000, dtype=np.float32), 8000)
    (folder / "readme.txt").write_text("not audio")
    out = tmp_path / "out"
    assert main([str(tiny_ckpt[0]), str(folder), "--out", str(out), "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_s1.wav", "a_s2.wav", "b_s1.wav", "b_s2.wav"]
    assert sf.info(out / "b_s2.wav").frames == 3000


def _bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    d = tmp_path / "bad"
    d.mkdir()
    sf.write(d / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    (d / "garbage.wav").write_bytes(b"RIFF....WAVEfmt nonsense" * 10)
    (d / "notes.txt").write_text("hello")
    (d / "nofolder").mkdir()
    return {
        "empty.wav": [str(d / "empty.wav")],
        "garbage.wav": [str(d / "garbage.wav")],
        "notes.txt": [str(d / "notes.txt")],
        "missing.wav": [str(d / "missing.wav")],
        "nofolder": [str(d / "nofolder")],
    }


def test_cli_bad_inputs(tmp_path: Path, tiny_ckpt, capsys) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(4000, dtype=np.float32) + 0.01, 8000)
    out = tmp_path / "out"
    for name, inputs in _bad_inputs(tmp_path).items():
        code = main([str(tiny_ckpt[0]), str(good), *inputs, "--out", str(out), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 1, name
        assert err.startswith("usgm-separate: error:") and name in err, err
        assert err.count("\n") == 1, err
        assert not out.exists() or list(out.iterdir()) == [], name


def test_cli_bad_model_file(tmp_path: Path, capsys) -> None:
    model = tmp_path / "model.pt"
    model.write_text("I am not a model")
    sf.write(tmp_path / "a.wav", np.zeros(800, dtype=np.float32), 8000)
    out = tmp_path / "out"
    assert main([str(model), str(tmp_path / "a.wav"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "model.pt" in err and "not a usgm model" in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_bad_options(tmp_path: Path, tiny_ckpt, capsys) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(800, dtype=np.float32), 8000)
    base = [str(tiny_ckpt[0]), str(tmp_path / "a.wav"), "--out", str(tmp_path / "o")]
    assert main([*base, "--window", "1", "--overlap", "2"]) == 2
    assert main([*base, "--subtype", "MP3ISH"]) == 2
    assert "error" in capsys.readouterr().err
