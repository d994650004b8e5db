"""The evaluate loop's pieces: length batching, memory fallbacks, options, report statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from usgm.evaluation import report
from usgm.evaluation.runner import EvalOptions, Separator, example_indices, length_batches


def test_length_batches() -> None:
    lengths = [100, 300, 300, 299, 100, 100, 50]
    exact = length_batches(lengths, batch_size=2, max_pad_ratio=0.0, max_batch_samples=10_000)
    assert sorted(i for b in exact for i in b) == list(range(len(lengths)))
    assert all(len({lengths[i] for i in b}) == 1 and len(b) <= 2 for b in exact)
    assert exact[0] == [1, 2]  # longest first
    loose = length_batches(lengths, batch_size=8, max_pad_ratio=0.01, max_batch_samples=10_000)
    assert [1, 2, 3] in loose
    capped = length_batches(lengths, batch_size=8, max_pad_ratio=0.0, max_batch_samples=250)
    assert all(len(b) * max(lengths[i] for i in b) <= 300 for b in capped)


def test_example_indices() -> None:
    assert example_indices(10, 3) == {0, 4, 9} or example_indices(10, 3) == {0, 5, 9}
    assert example_indices(2, 5) == {0, 1}
    assert example_indices(5, 0) == set()


def test_options_unknown_key() -> None:
    with pytest.raises(ValueError, match="bacth_size"):
        EvalOptions.from_mapping({"bacth_size": 2})


class Tiny(nn.Module):
    """Deterministic per-sample 'separator' that fails like a full GPU on big inputs."""

    def __init__(self, max_samples: int | None = None) -> None:
        super().__init__()
        self.max_samples = max_samples
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, mix: torch.Tensor) -> SimpleNamespace:
        self.shapes.append(tuple(mix.shape))
        if self.max_samples is not None and mix.numel() > self.max_samples:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return SimpleNamespace(est=torch.stack([mix, -2 * mix], dim=1))


def test_separator_batches_and_cuts_to_length() -> None:
    model = Tiny()
    sep = Separator(model, torch.device("cpu"), 8000, EvalOptions())
    mix = torch.randn(3, 100)
    outs = sep(mix, torch.tensor([100, 100, 100]))
    assert model.shapes == [(3, 100)]
    assert all(torch.equal(o, torch.stack([mix[i], -2 * mix[i]])) for i, o in enumerate(outs))
    outs = sep(mix, torch.tensor([100, 90, 80]))
    assert [o.shape[-1] for o in outs] == [100, 90, 80]


def test_separator_falls_back_on_oom_and_long_inputs() -> None:
    opts = EvalOptions(long_threshold_s=0.05, window_s=0.02, overlap_s=0.005)  # 400 / 160 / 40
    model = Tiny(max_samples=250)
    sep = Separator(model, torch.device("cpu"), 8000, opts)
    mix = torch.randn(2, 200)
    outs = sep(mix, torch.tensor([200, 200]))  # (2, 200) "OOMs" → one by one
    assert model.shapes[0] == (2, 200) and model.shapes[1:] == [(1, 200), (1, 200)]
    assert torch.allclose(outs[1], torch.stack([mix[1], -2 * mix[1]]))
    model.shapes.clear()
    long = torch.randn(1, 1000)
    out = sep(long, torch.tensor([1000]))[0]  # above the threshold → windows of 160
    assert max(s[-1] for s in model.shapes) == 160 and sep.n_windowed == 1
    assert torch.allclose(out, torch.stack([long[0], -2 * long[0]]), atol=1e-6)


def test_separator_reraises_other_errors() -> None:
    class Broken(nn.Module):
        def forward(self, mix: torch.Tensor) -> None:
            raise RuntimeError("shape mismatch")

    sep = Separator(Broken(), torch.device("cpu"), 8000, EvalOptions())
    with pytest.raises(RuntimeError, match="shape mismatch"):
        sep(torch.randn(2, 10), torch.tensor([10, 10]))


def test_column_stats_and_json(tmp_path: Path) -> None:
    from scipy.stats import t

    values = [1.0, 2.0, 4.0, math.nan, 7.0]
    s = report.column_stats(values)
    x = np.array([1.0, 2.0, 4.0, 7.0])
    half = t.ppf(0.975, 3) * x.std(ddof=1) / 2
    assert s["n"] == 4 and s["mean"] == pytest.approx(3.5)
    assert s["ci95_halfwidth"] == pytest.approx(half)
    assert report.column_stats([3.0])["ci95_low"] is None
    report.write_json({"a": math.inf, "b": [math.nan, 1.0]}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.0]}
    table = report.format_table({"si_snr_i": s})
    assert "SI-SNRi" in table and "3.500" in table


def test_plots_written(tmp_path: Path) -> None:
    rows = [{"si_snr_i": float(i), "input_snr": float(-i)} for i in range(20)]
    paths = report.make_plots(rows, tmp_path)
    assert [p.name for p in paths] == ["si_snr_i_hist.png", "si_snr_i_vs_input_snr.png"]
    clean = [{"si_snr_i": 1.0, "input_snr": math.inf}] * 3  # sep_clean: no scatter plot
    (tmp_path / "c").mkdir()
    assert [p.name for p in report.make_plots(clean, tmp_path / "c")] == ["si_snr_i_hist.png"]


def test_log_to_loggers_csv_and_wandb_payload(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    rows = [{"mixture_ID": f"u{i}", "si_snr": float(i), "si_snr_i": float(i + 1)} for i in range(3)]
    stats = report.summarize(rows, ["si_snr", "si_snr_i"])
    ex = tmp_path / "examples" / "u0"
    report.write_example(ex, 8000, np.zeros(80), np.ones((2, 80)), np.ones((2, 80)))
    plots = report.make_plots([{**r, "input_snr": 0.0} for r in rows], tmp_path)

    class WandbLogger:  # stands in for Lightning's (same class name), records the payload
        def __init__(self) -> None:
            self.metrics: dict = {}
            self.payload: dict = {}
            self.experiment = SimpleNamespace(log=self.payload.update)

        def log_metrics(self, m: dict) -> None:
            self.metrics.update(m)

        def finalize(self, status: str) -> None:
            pass

    csv_logger = CSVLogger(tmp_path, name="csv", version="")
    wb = WandbLogger()
    report.log_to_loggers([csv_logger, wb], stats, rows, ["si_snr", "si_snr_i"], [ex], plots)
    assert "eval/si_snr_i" in (tmp_path / "csv" / "metrics.csv").read_text()
    assert wb.metrics["eval/si_snr_i"] == pytest.approx(2.0)
    assert "eval/per_utterance" in wb.payload and "eval/si_snr_i_hist" in wb.payload
    assert "eval/examples/u0/s1_est" in wb.payload and "eval/examples/u0/mixture" in wb.payload


class NanOnSecond(nn.Module):
    """Finite outputs, except NaN for the second forward call (a network that overflows)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, mix: torch.Tensor) -> SimpleNamespace:
        self.calls += 1
        est = torch.stack([mix, 0.5 * mix], dim=1)
        if self.calls == 2:
            est[:, 0, 3] = float("nan")
        return SimpleNamespace(est=est)


def _batches(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        src = torch.randn(1, 2, 800, generator=g)
        out.append(
            {
                "mix": src.sum(1),
                "sources": src,
                "mix_clean": src.sum(1),
                "lengths": torch.tensor([800]),
                "ids": [f"u{i}"],
            }
        )
    return out


def test_nan_output_is_an_error_and_leaves_no_results(tmp_path: Path) -> None:
    from usgm.evaluation.runner import EvaluationError, evaluate

    out = tmp_path / "results"
    opts = EvalOptions(device="cpu", progress=False, n_examples=3)
    with pytest.raises(EvaluationError, match="utterance 'u1' holds NaN/Inf") as err:
        # u0 is an example and scored before the failure: still nothing may be written.
        evaluate(
            NanOnSecond(),
            _batches(3),
            n_batches=3,
            n_utterances=3,
            sample_rate=8000,
            out_dir=out,
            opts=opts,
            example_ids={"u0", "u1", "u2"},
            print_fn=lambda _: None,
        )
    assert "\n" not in str(err.value)
    assert not out.exists()
    # The same model and batches without the overflow write the whole report.
    model = NanOnSecond()
    model.calls = 5
    res = evaluate(
        model,
        _batches(3),
        n_batches=3,
        n_utterances=3,
        sample_rate=8000,
        out_dir=out,
        opts=opts,
        example_ids={"u0", "u2"},
        print_fn=lambda _: None,
    )
    assert sorted(p.name for p in (out / "examples").iterdir()) == ["u0", "u2"]
    assert (out / "all_metrics.csv").exists() and res.summary["n_utterances"] == 3
