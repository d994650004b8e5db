"""Every benchmark script runs in its --smoke mode (numbers are not checked here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> ARGS``, which must succeed (else its stderr is shown)."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _load(script: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/<script>`` imported in-process (in sys.modules: its dataclasses need it)."""
    name = f"bench_{Path(script).stem}"
    spec = importlib.util.spec_from_file_location(name, BENCH / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_train_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    _run("train_throughput.py", "--smoke", "--out", str(out))
    row = json.loads((out / "train_throughput.jsonl").read_text().splitlines()[-1])
    assert row["audio_s_per_s"] > 0 and row["method"] == "gm" and row["n_params"] > 0
    md = (out / "train_throughput.md").read_text().splitlines()[-1]
    assert md.startswith("| ") and "| usgm | gm | eager |" in md


def test_train_throughput_whole_utterances_smoke(tmp_path: Path) -> None:
    """``--batch-seconds``: a segment row, then a whole-utterance row built by the project's
    BucketBatchSampler and collate_batch (tiny model, CPU; no timing checked)."""
    out = tmp_path / "results"
    _run("train_throughput.py", "--smoke", "--batch-seconds", "4", "--out", str(out))
    seg, whole = [json.loads(x) for x in (out / "train_throughput.jsonl").read_text().splitlines()]
    assert seg["batch_seconds"] is None and seg["batch"] * seg["seconds"] == 4
    assert whole["batch_seconds"] == 4 and whole["audio_s_per_s"] > 0
    for key in ("padded_audio_s_per_s", "distinct_shapes", "graphs_timed", "ratio_to_segments"):
        assert key in whole, key
    assert 0 <= whole["padding_frac"] < 1 and 0 <= whole["epoch_padding_frac"] < 1
    assert whole["distinct_shapes"] >= 1 and whole["timed_batches"] == 2
    md = (out / "train_throughput.md").read_text().splitlines()
    assert len(md) == 2 and "| 8 × 0.5 s |" in md[0] and "| whole, ≤ 4 s/batch |" in md[1]


def test_whole_batches_pad_rules_and_warm_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pad_to="bucket"`` ends each batch at its bucket's edge (as the DataModule does),
    ``"longest"`` at its longest item; ``warm_shapes`` adds one batch of every epoch shape."""
    bench = _load("train_throughput.py", monkeypatch)
    monkeypatch.setattr(bench, "CORPUS_UTTERANCES", 300)
    s = bench.Setting(size="tiny", batch_seconds=4.0, bucket_width=0.05, length_range=(0.3, 2.0))
    width = round(0.05 * 8000)
    batches, shape_batches, stats = bench.whole_batches(bench.replace(s, warm_shapes=True), 6)
    assert len(batches) == 6 and len(shape_batches) == stats["epoch_shapes"] > 6
    for b in batches + shape_batches:
        n, t = b["mix"].shape
        longest = int(b["lengths"].max())
        assert t % width == 0 and t - width < longest <= t and n * t <= 4 * 8000
    shapes = [tuple(b["mix"].shape) for b in shape_batches]
    assert len(set(shapes)) == len(shapes)  # one of each
    assert {tuple(b["mix"].shape) for b in batches} <= set(shapes)
    longest_rule, none, stats2 = bench.whole_batches(bench.replace(s, pad_to="longest"), 6)
    assert none == [] and stats2["epoch_shapes"] > stats["epoch_shapes"]
    assert stats2["epoch_padding_frac"] < stats["epoch_padding_frac"]
    for b, b2 in zip(batches, longest_rule, strict=True):  # the same items, padded less
        assert b["ids"] == b2["ids"] and b2["mix"].shape[-1] == int(b2["lengths"].max())


def test_train_throughput_records_a_compile_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting whose compilation fails is a row with the error (the trace goes to stderr),
    not the end of the run: the suite's next settings still get measured."""
    import torch._dynamo.exc

    bench = _load("train_throughput.py", monkeypatch)

    def fails(s):
        inner = AssertionError("symbolic sizes")
        raise torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, inner, None)

    monkeypatch.setattr(bench, "_measure_usgm", fails)
    row = bench.measure(bench.Setting(compile=True, size="tiny"))
    assert row["error"] == (
        "compile failed: BackendCompilerFailed (AssertionError: symbolic sizes)"
    ), row
    assert "audio_s_per_s" not in row and row["compile"] is True
    assert "| compile failed: BackendCompilerFailed" in bench.markdown_row({**row, "impl": "usgm"})


def test_inference_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI smoke (usgm fp32 + bf16; --no-peer: the paper-size peer is ~10 s/audio-s on a CPU),
    then the peer rows in-process with stand-in peers: one that separates, one out of memory."""
    import torch

    out = tmp_path / "results"
    _run("inference.py", "--smoke", "--no-peer", "--out", str(out))
    rows = [json.loads(line) for line in (out / "inference.jsonl").read_text().splitlines()]
    assert [(r["impl"], r["precision"]) for r in rows] == [("usgm", "32"), ("usgm", "bf16")]
    assert all(r["rtf"] > 0 and r["batch_windows"] == 2 for r in rows)
    # 2 s in 0.5 s windows, 0.1 s overlap, 2 per call: full batches, then the 0.4 s last window.
    assert [c[:2] for c in rows[0]["calls_s"]] == [[2, 4000], [1, 3200]]
    assert all(c[2] > 0 for r in rows for c in r["calls_s"])
    assert rows[1]["si_snr_vs_fp32_db"] > 20  # tiny model: ~35 dB
    md = (out / "inference.md").read_text().splitlines()
    assert len(md) == 2 and "| usgm | bf16 | 2 s | 2 |" in md[1]

    bench = _load("inference.py", monkeypatch)

    class Peer(torch.nn.Module):  # (B, T) → ((B, 2, T), latent), like SpeechBrainUnified
        def forward(self, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.stack([mix, -0.5 * mix], dim=1), mix

    class OomPeer(torch.nn.Module):
        def forward(self, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if mix.shape[-1] > 8000:  # the warm-up (≤ 1 s) passes, the whole file does not
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
            return torch.stack([mix, mix], dim=1), mix

    from usgm.models import build_model
    from usgm.models.presets import tiny_config

    model = build_model(tiny_config(n_src=2)).eval()
    args = (model, 8000, torch.device("cpu"), ["32", "bf16"], 2, 0.5, 0.1)
    peer_rows = bench.measure_file(1.5, *args, Peer, tmp_path / "r2", {"device": "cpu"})
    assert [(r["impl"], r["precision"]) for r in peer_rows][2:] == [
        ("speechbrain", "32"),
        ("speechbrain", "bf16"),
    ]
    assert peer_rows[2]["rtf"] > 0 and peer_rows[3]["si_snr_vs_fp32_db"] > 20
    oom = bench.measure_file(1.5, *args[:3], ["32"], *args[4:], OomPeer, None, {"device": "cpu"})
    assert oom[-1]["impl"] == "speechbrain" and oom[-1]["error"].startswith("out of memory")
    assert "rtf" not in oom[-1] and "| speechbrain | 32 | 1.5 s | whole file | out of memory" in (
        bench.markdown_row(oom[-1])
    )


def test_data_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = _run("data_throughput.py", "--smoke", "--out", str(out))
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # e.g. worker shutdown at exit
    rows = [json.loads(x) for x in (out / "data_throughput.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["speed", "speed+dm"]
    for r in rows:
        assert r["audio_s_per_s"] > 0 and r["workers"] == 1 and r["persistent_workers"]
        assert r["epochs_crossed"] >= 1  # the tiny corpus makes the window span epochs
    md = (out / "data_throughput.md").read_text().splitlines()
    assert len(md) == 2 and md[1].startswith("| ") and "| speed+dm | 1 | 2 × 1 s |" in md[1]


@pytest.mark.parametrize(("seconds", "n_batch", "pad"), [(6.0, 4, True), (6.0, 4, False),
                                                        (2.3, 4, True), (4.33, 7, True)])  # fmt: skip
def test_inference_warms_exactly_the_shapes_separate_file_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float, n_batch: int, pad: bool
) -> None:
    """``call_shapes`` (the warm-up plan) against the shapes ``separate_file`` really sends."""
    import numpy as np
    import soundfile as sf
    import torch

    from usgm.evaluation.separate import separate_file

    bench = _load("inference.py", monkeypatch)
    sr, window_s, overlap_s = 8000, 0.5, 0.1
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros(round(seconds * sr), dtype=np.float32), sr)
    sent: list[tuple[int, ...]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) not in sent:
            sent.append(tuple(x.shape))
        return torch.stack([x, x], dim=-2)  # (B, 2, n)

    separate_file(path, tmp_path / "o", fn, 2, sr, window_s, overlap_s, batch_windows=n_batch,
                  pad_batches=pad)  # fmt: skip
    planned = bench.call_shapes(round(seconds * sr), 4000, 800, n_batch, pad)
    assert planned == sent


_COMPILE_TAIL_CHECK = """
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
import inference as bench
from usgm.evaluation.separate import compile_forward
from usgm.models import build_model
from usgm.models.presets import tiny_config

tmp = Path(sys.argv[2])
torch.manual_seed(0)
model = build_model(tiny_config(n_src=2)).eval()
path = tmp / "mix.wav"
# 0.5 s windows, hop 0.4 s: 5 full ones (batches of 2, 2, 1), then a 0.3 s one
bench.write_mixture(path, 2.3, 8000)
seen = {"static": [], "tail": []}


def spy(name, graph):
    def call(y):
        seen[name].append(tuple(y.shape))
        return graph(y)

    return call


args = (model, 8000, path, tmp / "o", torch.device("cpu"), "32", 2, 0.5, 0.1)
eager = bench.run_usgm(*args)
static = spy("static", compile_forward(model))
tail = spy("tail", compile_forward(model, dynamic=True))
both = bench.run_usgm(*args, static, 1, tail)
assert set(seen["static"]) == {(2, 4000), (1, 4000)}, seen
assert set(seen["tail"]) == {(1, 2400)}, seen
assert [c[:2] for c in both.calls] == [[2, 4000], [1, 4000], [1, 2400]], both.calls
np.testing.assert_allclose(both.est, eager.est, atol=1e-5, rtol=0)
"""


def test_inference_compile_tail_routes_the_last_window_and_keeps_the_output(
    tmp_path: Path,
) -> None:
    """``--compile-tail``: full windows go to the static graph, the last, shorter window to the
    dynamic one (inductor on the CPU), and the file's output equals the eager one. In a
    subprocess: compiling here would leave this process unable to fork for the DDP tests."""
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE_TAIL_CHECK, str(BENCH), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
