"""usgm-compare: run discovery, status, the table against independently computed statistics,
the paired interval, and the written files (fake run folders with known numbers)."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from usgm.evaluation import compare

ROOT = Path(__file__).resolve().parents[2]
T975_DF2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (tables)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def final_metrics(si: float, sd: float, split: str = "test") -> dict:
    """A ``final_metrics.json`` as ``usgm.evaluation.runner.evaluate`` writes it."""
    stat = lambda m: {"mean": m, "std": 1.0, "ci95_low": m - 1, "ci95_high": m + 1, "n": 2}  # noqa: E731
    return {
        "n_utterances": 2,
        "metrics": {
            "si_snr": stat(si + 5),
            "si_snr_i": stat(si),
            "sdr": stat(sd + 5),
            "sdr_i": stat(sd),
        },
        "improvements": {"si_snr_i": si, "sdr_i": sd},
        "split": split,
        "data": {"split": split},
    }


def make_run(
    run: Path,
    method: str,
    seed: int,
    *,
    results: dict | bool | None = True,
    evals: dict[str, tuple[float, float]] | None = None,
    val: list[tuple[int, float]] = (),
    gm: list[tuple[int, float, float]] = (),
    checkpoint: bool = True,
    log: str | None = None,
) -> Path:
    """Writes a fake training run folder the way train.py / evaluate.py lay it out.

    Args:
        results: True → a results.json with a test score of 0 (overridden by ``evals``); a dict →
            its ``metrics``; None/False → no results.json (a run still going or killed).
        evals: set → (SI-SNRi, SDRi), written as ``eval/<set>/final_metrics.json``.
        val: (step, val/si_snri) rows of the CSV log.
        gm: (step, encoder conflict fraction, encoder cosine) rows of the CSV log.
        checkpoint: record a best checkpoint (and write it).
        log: content of the Hydra job log ``train.log``.
    """
    (run / ".hydra").mkdir(parents=True)
    cfg = {
        "task_name": "study",
        "seed": seed,
        "model": {"method": method, "net": {"n_src": "${data.n_src}", "d_model": 16}},
        "data": {"n_src": 2, "root": "data/default_2mix", "seed": None},
        "paths": {"output_dir": "${hydra:runtime.output_dir}"},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"model.method={method}", f"seed={seed}"])
    )
    best = None
    if checkpoint:
        (run / "checkpoints").mkdir()
        best = run / "checkpoints" / "epoch001-sisnri1.00.ckpt"
        best.write_bytes(b"ckpt")
    if results:
        metrics = results if isinstance(results, dict) else {"test/si_snri": 0.0}
        summary = {"metrics": metrics, "method": method, "best_checkpoint": best and str(best),
                   "last_checkpoint": None}  # fmt: skip
        (run / "results.json").write_text(json.dumps(summary))
    for name, (si, sd) in (evals or {}).items():
        (run / "eval" / name).mkdir(parents=True)
        (run / "eval" / name / "final_metrics.json").write_text(json.dumps(final_metrics(si, sd)))
    if val or gm:
        (run / "csv").mkdir()
        cols = [
            "epoch",
            "gm/encoder_conflict_frac",
            "gm/encoder_cosine",
            "step",
            "train/loss_ss",
            "val/si_snri",
        ]
        with (run / "csv" / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for step, frac, cos in gm:
                w.writerow([0, frac, cos, step, 1.5, ""])
            for step, v in val:
                w.writerow([0, "", "", step, "", v])
    if log is not None:
        (run / "train.log").write_text(log)
    return run


# Known numbers: seed → (test SI-SNRi, test SDRi, real_dev SI-SNRi, real_dev SDRi)
SS = {
    1: (10.0, 10.5, 1.0, 2.0),
    2: (11.0, 11.2, 1.5, 2.1),
    3: (12.5, 13.0, 0.5, 1.0),
    4: (9.0, 9.5, 2.0, 2.5),
}
GM = {3: (14.0, 14.1, 1.0, 1.1), 1: (11.0, 11.9, 1.2, 2.6), 2: (11.5, 12.0, 2.5, 2.0)}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A multirun folder: ss_only seeds 1-4, gm seeds 1-3 (job numbers do not follow the seeds),
    pcgrad seed 1 complete + seed 2 crashed, mtl seed 1 with only results.json, a gm run still
    going, a diverged run and a job folder that never got its config."""
    sweep = tmp_path / "multirun"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {mode: MULTIRUN}\n")
    job = iter(range(100))
    steps = [(100, 2.0), (200, 4.0), (300, 5.0)]
    for seed, (si, sd, rsi, rsd) in SS.items():
        val = [(s, v - 1.0 + 0.1 * seed) for s, v in steps]
        make_run(
            sweep / str(next(job)),
            "ss_only",
            seed,
            evals={"test": (si, sd), "real_dev": (rsi, rsd)},
            val=val,
        )
    for seed, (si, sd, rsi, rsd) in GM.items():
        gm = [(10 * i, i / 30, -0.01 * i) for i in range(1, 30)]
        val = [(s, v + 0.1 * seed) for s, v in steps]
        make_run(
            sweep / str(next(job)),
            "gm",
            seed,
            evals={"test": (si, sd), "real_dev": (rsi, rsd)},
            val=val,
            gm=gm,
        )
    make_run(sweep / str(next(job)), "pcgrad", 1, evals={"test": (10.4, 10.0)})
    make_run(
        sweep / str(next(job)),
        "pcgrad",
        2,
        results=None,
        log="Traceback (most recent call last):\n  boom\n",
    )
    make_run(sweep / str(next(job)), "mtl", 1, results={"test/si_snri": 10.7, "test/si_snr": 5.0})
    make_run(
        sweep / str(next(job)), "gm", 5, results=None, val=[(100, 1.0), (200, 1.5)], checkpoint=True
    )
    make_run(sweep / str(next(job)), "mtl", 2, results={"test/si_snri": float("nan")})
    make_run(sweep / str(next(job)), "mtl", 3, evals={"test": (9.0, 9.0)}, checkpoint=False)
    (sweep / str(next(job))).mkdir()  # a job that never started
    return sweep


def _row(rows: list[compare.Row], set_name: str, method: str) -> compare.Row:
    [row] = [r for r in rows if r.set == set_name and r.method == method]
    return row


def _paired_ci(x: dict[int, float], ref: dict[int, float]) -> tuple[float, float, float, int]:
    """Paired 95 % interval by the textbook formula, for n = 3 pairs (t quantile from tables)."""
    d = [x[s] - ref[s] for s in sorted(set(x) & set(ref))]
    assert len(d) == 3
    mean = statistics.fmean(d)
    half = T975_DF2 * statistics.stdev(d) / math.sqrt(len(d))
    return mean, mean - half, mean + half, len(d)


def test_statuses_listed(study: Path) -> None:
    runs, notes = compare.collect([study])
    assert notes == []
    status = {(r.method, r.seed): r.status for r in runs}
    assert len(runs) == 14
    assert status[("pcgrad", 2)] == "failed"  # crash in the job log
    assert status[("mtl", 2)] == "failed"  # NaN test score
    assert status[("gm", 5)] == "incomplete"  # no results.json
    assert status[("mtl", 3)] == "incomplete"  # no checkpoint
    assert status[(None, None)] == "failed"  # job folder without config
    assert sum(r.complete for r in runs) == 9
    reasons = {(r.method, r.seed): "; ".join(r.reasons) for r in runs}
    assert "diverged" in reasons[("mtl", 2)]
    assert "last logged step 200" in reasons[("gm", 5)]
    assert "Traceback" in reasons[("pcgrad", 2)]
    assert "no checkpoint" in reasons[("mtl", 3)]


def test_table_matches_independent_statistics(study: Path) -> None:
    runs, _ = compare.collect([study])
    rows = compare.summarize(runs)
    assert [r.method for r in rows if r.set == "test"] == ["ss_only", "mtl", "gm", "pcgrad"]
    assert sorted({r.set for r in rows}) == ["real_dev", "test"]
    for set_name, idx in (("test", 0), ("real_dev", 2)):
        for metric, off in (("si_snri", 0), ("sdri", 1)):
            ss = {s: v[idx + off] for s, v in SS.items()}
            gm = {s: v[idx + off] for s, v in GM.items()}
            r_ss, r_gm = _row(rows, set_name, "ss_only"), _row(rows, set_name, "gm")
            assert r_ss.n[metric] == 4 and r_gm.n[metric] == 3
            assert r_ss.mean[metric] == pytest.approx(statistics.fmean(ss.values()))
            assert r_ss.std[metric] == pytest.approx(statistics.stdev(ss.values()))
            assert r_gm.mean[metric] == pytest.approx(statistics.fmean(gm.values()))
            assert r_gm.std[metric] == pytest.approx(statistics.stdev(gm.values()))
            # matched by seed: seed 4 of ss_only has no partner and is left out
            mean, low, high, n = _paired_ci(gm, ss)
            d = r_gm.diff[metric]
            assert (d.mean, d.low, d.high, d.n) == pytest.approx((mean, low, high, n))
            assert r_ss.diff[metric] is None
    # gm − ss_only on test SI-SNRi by hand: differences 1.0, 0.5, 1.5 → mean 1.0, sd 0.5
    d = _row(rows, "test", "gm").diff["si_snri"]
    assert d.mean == pytest.approx(1.0)
    assert d.high - d.mean == pytest.approx(T975_DF2 * 0.5 / math.sqrt(3))
    # one pair: a difference but no interval; one run: no std
    pc = _row(rows, "test", "pcgrad")
    assert (pc.n["si_snri"], pc.std["si_snri"]) == (1, None)
    assert pc.diff["si_snri"].mean == pytest.approx(0.4)
    assert pc.diff["si_snri"].n == 1 and pc.diff["si_snri"].low is None
    assert (pc.runs_total, pc.runs_complete) == (2, 1)
    # mtl: only the training job's test score (SI-SNRi), SDRi missing; absent from real_dev
    mtl = _row(rows, "test", "mtl")
    assert mtl.mean["si_snri"] == pytest.approx(10.7) and mtl.mean["sdri"] is None
    assert (mtl.runs_total, mtl.runs_complete) == (3, 1)
    assert _row(rows, "real_dev", "mtl").mean["si_snri"] is None
    assert _row(rows, "real_dev", "mtl").n["si_snri"] == 0


def test_paired_interval_against_scipy() -> None:
    """The interval equals the one scipy's paired t-test reports, for other n than the tables."""
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 1, 5), rng.normal(9, 1, 5)
    got = compare.paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (got.low, got.high, got.n) == pytest.approx((ci.low, ci.high, 5))
    assert compare.paired_difference({1: 2.0}, {2: 1.0}).n == 0  # no common seed


def test_cli_writes_table_files_and_plots(study: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert compare.main([str(study), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("summary.csv", "summary.md", "runs.csv", "val_si_snri.png", "gm_telemetry.png"):
        assert (out / name).is_file(), name
    for png in ("val_si_snri.png", "gm_telemetry.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC

    with (out / "summary.csv").open() as f:
        table = {(r["set"], r["method"]): r for r in csv.DictReader(f)}
    gm = table[("real_dev", "gm")]
    ss = {s: v[2] for s, v in SS.items()}
    g = {s: v[2] for s, v in GM.items()}
    mean, low, high, _ = _paired_ci(g, ss)
    assert float(gm["si_snri_mean"]) == pytest.approx(statistics.fmean(g.values()))
    assert float(gm["si_snri_std"]) == pytest.approx(statistics.stdev(g.values()))
    assert [
        float(gm[k]) for k in ("d_si_snri_mean", "d_si_snri_ci_low", "d_si_snri_ci_high")
    ] == pytest.approx([mean, low, high])
    assert gm["d_si_snri_n"] == "3" and gm["runs_complete"] == "3" and gm["runs_total"] == "4"
    assert table[("test", "pcgrad")]["d_si_snri_ci_low"] == ""  # n = 1: no interval
    assert table[("test", "mtl")]["sdri_mean"] == ""

    md = (out / "summary.md").read_text()
    expected = f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] (n=3)"
    assert expected in md and expected in printed
    assert "| real_dev | gm | 3/4 complete | 3 |" in md
    assert "+0.40 (n=1, no interval)" in md
    # every run that is not complete is listed, with where it is
    for r in (study / "8", study / "10", study / "11", study / "12", study / "13"):
        assert str(r) in md and str(r) in printed
    assert md.count("`failed`") == 3 and md.count("`incomplete`") == 2
    assert "some only by the training job's test" in md  # test set mixes both sources

    with (out / "runs.csv").open() as f:
        listed = list(csv.DictReader(f))
    assert len(listed) == 14
    assert sorted(r["status"] for r in listed).count("complete") == 9


def test_set_names_and_history_merge(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "gm", 0)
    # evaluate.py run with hydra.run.dir=<run>/eval/real_dev: its own Hydra folder, results/ below
    (run / "eval" / "real_dev" / "results").mkdir(parents=True)
    (run / "eval" / "real_dev" / "results" / "final_metrics.json").write_text(
        json.dumps(final_metrics(3.0, 4.0))
    )
    (run / "eval" / "real_dev" / ".hydra").mkdir()
    (run / "eval" / "real_dev" / ".hydra" / "config.yaml").write_text("results_dir: x\n")
    (run / "results").mkdir()
    (run / "results" / "final_metrics.json").write_text(json.dumps(final_metrics(7.0, 8.0, "dev")))
    for version, rows in (("version_0", [(1, 1.0), (2, 2.0)]), ("version_1", [(2, 5.0), (3, 6.0)])):
        d = run / "csv" / version
        d.mkdir(parents=True)
        (d / "metrics.csv").write_text(
            "epoch,step,val/si_snri\n" + "".join(f"0,{s},{v}\n" for s, v in rows)
        )
    runs, notes = compare.collect([tmp_path])
    assert len(runs) == 1 and notes == []  # the eval folder inside the run is not a run
    [r] = runs
    assert r.sets["real_dev"].si_snri == 3.0 and r.sets["real_dev"].sdri == 4.0
    assert r.sets["dev"].si_snri == 7.0
    # the training job's own test score still counts as "test" when no evaluated set is named so
    assert r.sets["test"].source == "results.json" and r.sets["test"].sdri is None
    steps, values = r.history["val/si_snri"]
    assert steps.tolist() == [1, 2, 3] and values.tolist() == [1.0, 5.0, 6.0]  # resumed: later wins


def test_no_runs_is_an_error(tmp_path: Path, capsys) -> None:
    assert compare.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no run folder" in capsys.readouterr().err


def test_by_key_splits_groups_and_pairs_within(tmp_path: Path) -> None:
    for n_src, base in ((2, 10.0), (3, 5.0)):
        for seed in (1, 2):
            for method, gain in (("ss_only", 0.0), ("gm", 1.0 + seed)):
                run = make_run(tmp_path / f"{n_src}_{method}_{seed}", method, seed,
                               evals={"test": (base + gain + seed, base)})  # fmt: skip
                cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
                cfg["data"]["n_src"] = n_src
                (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    runs, _ = compare.collect([tmp_path])
    assert any("data.n_src" in n for n in compare.consistency_notes(runs))  # mixed without --by
    rows = compare.summarize(runs, by=["data.n_src"])
    assert compare.consistency_notes(runs, by=["data.n_src"]) == []
    gm = [r for r in rows if r.method == "gm"]
    assert [r.by for r in gm] == [{"data.n_src": "2"}, {"data.n_src": "3"}]
    for r in gm:  # differences 2 and 3 within each n_src
        assert r.diff["si_snri"].mean == pytest.approx(2.5)
        assert r.diff["si_snri"].high - 2.5 == pytest.approx(
            12.706204736174696 * statistics.stdev([2, 3]) / math.sqrt(2)
        )


def test_console_script_end_to_end(tiny_2mix: Path, tmp_path: Path) -> None:
    """Two real smoke runs (ss_only, gm) from one multirun, compared by the installed script."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "USGM_ROOT": str(tmp_path), "WANDB_MODE": "offline"}
    args = ["-m", "experiment=libri2mix_ss_only,libri2mix_gm", "seed=1", "debug=smoke",
            f"data.root={tiny_2mix}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = Path(sys.executable).with_name("usgm-compare")
    cmd = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from usgm.cli import compare; sys.exit(compare())"]
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [*cmd, str(sweep), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert sorted((r["method"], r["status"]) for r in runs) == [
        ("gm", "complete"),
        ("ss_only", "complete"),
    ]
    with (out / "summary.csv").open() as f:
        [gm] = [r for r in csv.DictReader(f) if r["method"] == "gm" and r["set"] == "test"]
    assert gm["d_si_snri_n"] == "1" and gm["d_si_snri_mean"] != "" and gm["d_si_snri_ci_low"] == ""
    assert (out / "val_si_snri.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "gm_telemetry.png").read_bytes()[:8] == PNG_MAGIC


def test_same_seed_twice_counts_once(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "ss_only", 1, evals={"test": (10.0, 10.0)})
    make_run(tmp_path / "b", "ss_only", 1, evals={"test": (12.0, 12.0)})
    make_run(tmp_path / "c", "gm", 1, evals={"test": (13.0, 13.0)})
    runs, _ = compare.collect([tmp_path])
    rows = compare.summarize(runs)
    ss, gm = _row(rows, "test", "ss_only"), _row(rows, "test", "gm")
    assert (ss.n["si_snri"], ss.mean["si_snri"], ss.runs_complete) == (1, 11.0, 2)
    assert gm.diff["si_snri"].mean == pytest.approx(2.0) and gm.diff["si_snri"].n == 1
    assert any(
        "several complete runs for seed(s) [1]" in n for n in compare.consistency_notes(runs)
    )


def test_a_run_missing_a_set_is_named(tmp_path: Path) -> None:
    """Seed 1 evaluated on test only, seed 2 on test and real: real's n is 1, and a note says why."""
    for m in ("ss_only", "gm"):
        make_run(tmp_path / f"{m}_s1", m, 1, evals={"test": (10.0, 10.0)})
        make_run(tmp_path / f"{m}_s2", m, 2, evals={"test": (11.0, 11.0), "real": (1.0, 1.0)})
    runs, _ = compare.collect([tmp_path])
    rows = compare.summarize(runs)
    assert _row(rows, "real", "gm").n["si_snri"] == 1 and _row(rows, "test", "gm").n["si_snri"] == 2
    notes = compare.consistency_notes(runs)
    for m in ("ss_only", "gm"):
        assert f"{m}: 1 complete run(s) not scored on real (seed 1): left out" in " ".join(notes)
    assert not any("not scored on test" in n for n in notes)


def test_curves_on_a_common_grid() -> None:
    """Curves that stop at different steps: interpolated on the union of steps, NaN past the end."""
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([0.0, 20.0]), np.array([2.0, 4.0]))
    c = (np.array([0.0, 10.0]), np.array([1.0, 5.0]))
    grid, ys = compare._on_grid([a, b, c])
    assert grid.tolist() == [0.0, 10.0, 20.0]
    assert ys[1].tolist() == [2.0, 3.0, 4.0] and math.isnan(ys[2, 2])
    mean, std = compare._column_stats(ys)
    assert mean.tolist() == pytest.approx([1.0, 3.0, 3.0])
    assert std[:2].tolist() == pytest.approx([np.std([0, 2, 1], ddof=1), np.std([1, 3, 5], ddof=1)])
    assert std[2] == pytest.approx(np.std([2, 4], ddof=1))
    assert math.isnan(compare._column_stats(ys[:1])[1][0])  # one curve: no spread


def test_no_telemetry_no_telemetry_plot(tmp_path: Path, capsys) -> None:
    make_run(tmp_path / "runs" / "a", "ss_only", 1, evals={"test": (10.0, 10.0)}, val=[(1, 2.0)])
    assert compare.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "val_si_snri.png").is_file()
    assert not (tmp_path / "out" / "gm_telemetry.png").exists()
    assert "gm_telemetry.png not written" in capsys.readouterr().err


def test_crash_marker_next_to_results_is_a_remark(tmp_path: Path) -> None:
    """A crashed attempt that a resume finished keeps its scores, with the crash remarked on."""
    log = "Traceback (most recent call last):\n  killed\n...resumed...\n"
    make_run(tmp_path / "a", "gm", 1, evals={"test": (10.0, 10.0)}, log=log)
    [run], _ = compare.collect([tmp_path])
    assert run.status == "complete"
    assert "train.log contains 'Traceback" in "; ".join(run.reasons)
