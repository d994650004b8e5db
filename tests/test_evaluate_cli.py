"""evaluate.py end to end on a tiny LibriMix-layout corpus written here with soundfile.

The CSV and JSON are checked against values recomputed from the saved example wavs with
independent code (mir_eval for SDR, a direct numpy SI-SNR / SNR formula).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from usgm.models.presets import tiny_config

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_config(n_src=2)
LENGTHS = {"test": [8000, 8000, 12000, 6000], "dev": [7000, 5000]}


def _speechlike(rng: np.random.Generator, n: int) -> np.ndarray:
    """Filtered noise with a syllable-rate envelope (a stand-in for speech)."""
    from scipy.signal import lfilter

    x = lfilter([1.0], [1.0, -1.5, 0.7], rng.standard_normal(n))
    env = np.abs(np.convolve(rng.standard_normal(n), np.ones(400) / 400, mode="same"))
    x = x * env
    return 0.1 * x / np.abs(x).max()


def write_corpus(root: Path, n_src: int = 2, sr: int = 8000, seed: int = 0) -> Path:
    """Tiny corpus in the LibriMix layout; CSV paths are absolute from 'another machine'."""
    rng = np.random.default_rng(seed)
    base = root / f"wav{sr // 1000}k" / "min"
    (base / "metadata").mkdir(parents=True)
    old = f"/old/host/Libri{n_src}Mix/wav{sr // 1000}k/min"
    for split, lengths in LENGTHS.items():
        rows_both, rows_clean = [], []
        for i, n in enumerate(lengths):
            uid = f"{split}{i}_a-{split}{i}_b"
            srcs = [np.round(_speechlike(rng, n) * 32767).astype(np.int16) for _ in range(n_src)]
            noise = np.round(0.03 * rng.standard_normal(n) * 32767).astype(np.int16)
            clean = np.sum([s.astype(np.int32) for s in srcs], axis=0)
            both = clean + noise
            files = {f"s{k + 1}": s for k, s in enumerate(srcs)}
            files |= {"noise": noise, "mix_clean": clean, "mix_both": both}
            for kind, data in files.items():
                (base / split / kind).mkdir(parents=True, exist_ok=True)
                sf.write(base / split / kind / f"{uid}.wav", data.astype(np.int16), sr, "PCM_16")
            src_cols = [f"{old}/{split}/s{k + 1}/{uid}.wav" for k in range(n_src)]
            rows_clean.append([uid, f"{old}/{split}/mix_clean/{uid}.wav", *src_cols, n])
            rows_both.append(
                [
                    uid,
                    f"{old}/{split}/mix_both/{uid}.wav",
                    *src_cols,
                    f"{old}/{split}/noise/{uid}.wav",
                    n,
                ]
            )
        src_hdr = [f"source_{k + 1}_path" for k in range(n_src)]
        for kind, rows, extra in (
            ("mix_both", rows_both, ["noise_path"]),
            ("mix_clean", rows_clean, []),
        ):
            with open(base / "metadata" / f"mixture_{split}_{kind}.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["mixture_ID", "mixture_path", *src_hdr, *extra, "length"])
                w.writerows(rows)
    return root


def write_checkpoint(path: Path, method: str = "gm", seed: int = 0) -> torch.nn.Module:
    """A Lightning-style checkpoint dict as train.py writes it (spec format)."""
    from usgm.models import build_model

    torch.manual_seed(seed)
    cfg = {**TINY, "use_se": method != "ss_only"}
    model = build_model(cfg).eval()
    torch.save(
        {
            "epoch": 3,
            "global_step": 12,
            "pytorch-lightning_version": "2.6.6",
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model": cfg, "method": method, "sample_rate": 8000},
        },
        path,
    )
    return model


def _si_snr_np(est: np.ndarray, ref: np.ndarray, eps: float = 1e-8) -> float:
    """The SI-SNR definition (with usgm.losses.si_snr's stabilisers), in float64 numpy."""
    est = est - est.mean()
    ref = ref - ref.mean()
    target = (est @ ref) / (ref @ ref + eps) * ref
    return 10 * math.log10((target @ target) / ((est - target) @ (est - target) + eps) + eps)


def _recompute(folder: Path, n_src: int) -> dict[str, float]:
    import mir_eval.separation

    def rd(name: str) -> np.ndarray:
        x, _ = sf.read(folder / name, dtype="float32")
        return x.astype(np.float64)

    mix, clean = rd("mixture.wav"), rd("mix_clean.wav")
    refs = np.stack([rd(f"s{k}.wav") for k in range(1, n_src + 1)])
    ests = np.stack([rd(f"s{k}_est.wav") for k in range(1, n_src + 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdr = mir_eval.separation.bss_eval_sources(refs, ests, compute_permutation=False)[0]
        sdr0 = mir_eval.separation.bss_eval_sources(
            refs, np.stack([mix] * n_src), compute_permutation=False
        )[0]
    si = np.array([_si_snr_np(e, r) for e, r in zip(ests, refs)])
    si0 = np.array([_si_snr_np(mix, r) for r in refs])
    return {
        "input_snr": 10 * math.log10((clean @ clean) / ((mix - clean) @ (mix - clean))),
        "si_snr": si.mean(),
        "si_snr_i": (si - si0).mean(),
        "sdr": sdr.mean(),
        "sdr_i": (sdr - sdr0).mean(),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "Libri2Mix")


def test_evaluate_py_end_to_end(corpus: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "epoch=3.ckpt"
    write_checkpoint(ckpt, method="gm")
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "evaluate.py",
        f"ckpt_path='{ckpt}'",  # quoted: Lightning-style names contain '='
        f"data.root={corpus}",
        f"results_dir={results}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "data.num_workers=0",
        "eval.device=cpu",
        "eval.progress=false",
        "eval.n_examples=4",
        # 12000 samples (1.5 s) > threshold: exercises the windowed path inside evaluate.
        "eval.long_threshold_s=1.2",
        "eval.window_s=0.8",
        "eval.overlap_s=0.2",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SI-SNRi" in proc.stdout and "results in" in proc.stdout

    with open(results / "all_metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["mixture_ID", "input_snr", "si_snr", "si_snr_i", "sdr", "sdr_i"]
    assert [r["mixture_ID"] for r in rows] == [f"test{i}_a-test{i}_b" for i in range(4)]
    for r in rows:  # every utterance is an example here: recompute all of them
        ref = _recompute(results / "examples" / r["mixture_ID"], 2)
        for key, value in ref.items():
            assert float(r[key]) == pytest.approx(value, abs=2e-3), (r["mixture_ID"], key)

    summary = json.loads((results / "final_metrics.json").read_text())
    assert summary["n_utterances"] == 4
    assert summary["method"] == "gm"
    assert summary["ckpt_path"] == str(ckpt.resolve())
    assert summary["data"]["root"] == str(corpus.resolve())
    assert summary["data"]["split"] == "test"
    assert summary["n_windowed"] == 1
    from scipy.stats import t

    for key in ("input_snr", "si_snr", "si_snr_i", "sdr", "sdr_i"):
        col = np.array([float(r[key]) for r in rows])
        stats = summary["metrics"][key]
        assert stats["mean"] == pytest.approx(col.mean(), abs=1e-9)
        half = t.ppf(0.975, 3) * col.std(ddof=1) / 2.0
        assert stats["ci95_halfwidth"] == pytest.approx(half, rel=1e-6)
        assert stats["ci95_low"] == pytest.approx(col.mean() - half, rel=1e-6, abs=1e-9)
        assert stats["n"] == 4
    assert summary["improvements"]["si_snr_i"] == summary["metrics"]["si_snr_i"]["mean"]
    assert (results / "si_snr_i_hist.png").stat().st_size > 1000
    assert (results / "si_snr_i_vs_input_snr.png").stat().st_size > 1000
    # The saved references are the corpus files (float32 copies of the PCM_16 sources).
    uid = rows[2]["mixture_ID"]
    saved, _ = sf.read(results / "examples" / uid / "s1.wav", dtype="float32")
    disk, _ = sf.read(corpus / "wav8k/min/test/s1" / f"{uid}.wav", dtype="float32")
    disk2, _ = sf.read(corpus / "wav8k/min/test/s2" / f"{uid}.wav", dtype="float32")
    assert np.array_equal(saved, disk) or np.array_equal(saved, disk2)


def test_evaluate_dev_split_export_and_pesq(corpus: Path, tmp_path: Path) -> None:
    """In-process run: dev split, an exported ss_only model, PESQ/STOI columns, batch size 1."""
    from usgm.evaluation.export import export_model
    from usgm.evaluation.runner import run

    ckpt = tmp_path / "ss.ckpt"
    write_checkpoint(ckpt, method="ss_only", seed=1)
    exported = tmp_path / "ss.pt"
    export_model(ckpt, exported)
    lines: list[str] = []
    res = run(
        exported,
        {"root": str(corpus), "n_src": 2, "sample_rate": 8000, "num_workers": 0, "validate": "all"},
        "dev",
        tmp_path / "res",
        {"device": "cpu", "progress": False, "pesq": True, "batch_size": 1, "n_examples": 1},
        print_fn=lines.append,
    )
    assert res.summary["n_utterances"] == 2
    assert res.summary["method"] == "ss_only"
    assert res.summary["data"]["split"] == "dev"
    with open(tmp_path / "res" / "all_metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[-2:] == ["pesq", "stoi"]
    for r in rows:
        assert -0.5 <= float(r["pesq"]) <= 4.6 and -1.0 <= float(r["stoi"]) <= 1.0
    assert len(list((tmp_path / "res" / "examples").iterdir())) == 1
    assert any("PESQ" in line for line in lines)


def test_evaluate_py_bad_checkpoint(corpus: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint")
    cmd = [
        sys.executable,
        "evaluate.py",
        f"ckpt_path={bad}",
        f"data.root={corpus}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "notes.ckpt" in proc.stderr and "not a usgm model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluate_py_nan_test_wav(tmp_path: Path) -> None:
    """A NaN sample in a test wav, read in a DataLoader worker: one line naming the file, exit 1,
    no traceback and no results folder (it used to end in torch.linalg.lstsq's internal assert)."""
    corpus = write_corpus(tmp_path / "Libri2Mix")
    bad = corpus / "wav8k/min/test/s2/test2_a-test2_b.wav"
    x, _ = sf.read(bad, dtype="float32")
    x[1000] = np.nan
    sf.write(bad, x, 8000, subtype="FLOAT")
    ckpt = tmp_path / "m.ckpt"
    write_checkpoint(ckpt)
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "evaluate.py",
        f"ckpt_path={ckpt}",
        f"data.root={corpus}",
        f"results_dir={results}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "data.num_workers=1",
        "data.validate=none",  # the lazy check on read, in the worker
        "eval.device=cpu",
        "eval.progress=false",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr == (
        f"evaluate.py: error: {bad}: sample 1000 is nan (float audio with NaN/Inf samples)\n"
    )
    assert not results.exists()


def test_run_refuses_nan_model_and_names_speaker_mismatch(corpus: Path, tmp_path: Path) -> None:
    from usgm.data.errors import DataError
    from usgm.evaluation.export import ModelFileError
    from usgm.evaluation.runner import run

    data = {"root": str(corpus), "num_workers": 0, "n_src": 2}
    opts = {"device": "cpu", "progress": False}
    ckpt = tmp_path / "nan.ckpt"
    write_checkpoint(ckpt)
    ck = torch.load(ckpt, weights_only=True)
    next(iter(ck["state_dict"].values())).view(-1)[0] = float("nan")
    torch.save(ck, ckpt)
    with pytest.raises(ModelFileError, match="weights are not finite"):
        run(ckpt, data, "test", tmp_path / "res", opts, print_fn=lambda _: None)
    assert not (tmp_path / "res").exists()

    three = tmp_path / "three.ckpt"
    torch.manual_seed(0)
    from usgm.models import build_model

    cfg = {**TINY, "n_src": 3}
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in build_model(cfg).state_dict().items()},
            "hyper_parameters": {"model": cfg, "method": "gm", "sample_rate": 8000},
        },
        three,
    )
    lines: list[str] = []
    with pytest.raises(DataError) as err:
        run(three, data, "test", tmp_path / "res", opts, print_fn=lines.append)
    msg = str(err.value)
    # data.n_src is taken from the model, so the hint must not suggest setting it.
    assert "data.n_src" not in msg and "model separates 3 speakers" in msg
    assert "lists 2 sources" in msg and "Libri3Mix" in msg
    assert not (tmp_path / "res").exists()
