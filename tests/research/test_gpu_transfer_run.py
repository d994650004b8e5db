"""research/realism/gpu_transfer_run.sh: the device-call stages, dry-run on the CPU (tiny data and model).

Stage 1 trains for what is left of its call, ``resume`` continues for one more call's worth up to
TOTAL_TRAIN_S, stage 2 finishes and scores; the running total lives in ``trained_s.txt``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "research" / "realism" / "gpu_transfer_run.sh"


def _stage(stage: str, env: dict[str, str], call_limit: int) -> str:
    # Every device call starts with an empty $OUT of its own.
    out = Path(env["RUN"]) / f"out_{stage}"
    r = subprocess.run(
        ["bash", str(SCRIPT), stage],
        cwd=ROOT,
        env={**env, "CALL_LIMIT": str(call_limit), "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f"stage {stage} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _snapshot(folder: Path) -> list[tuple[str, int, int]] | None:
    """Every file under ``folder`` with its size and mtime, or None where it does not exist."""
    if not folder.exists():
        return None
    return sorted(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    )


@pytest.mark.skipif(sys.platform != "linux", reason="bash script for the Linux device machine")
def test_stages_one_resume_two_train_the_total_and_score(tmp_path: Path, speech_dir: Path) -> None:
    run = tmp_path / "run"
    env = {
        **os.environ,
        "GPU_TRANSFER_TINY": "1",
        "GPU_TRANSFER_NO_INSTALL": "1",
        "PYTHON": sys.executable,
        "RUN": str(run),
        "SPEECH_DIR": str(speech_dir),
        "USGM_CACHE": str(tmp_path / "cache"),
        "TOTAL_TRAIN_S": "24",
        "MARGIN_S": "0",
        "CURVE": "1",
        "CURVE_EVERY": "1000",
        "CHANNEL_PROBE": "1",
        # eSpeak speakers only: no recorded-speech bank on a CI machine. A recipe variant
        # (every utterance reverberant) for training; REF_TEST scores the plain recipe's test split too.
        "EXTRA_OVERRIDES": "data.generate.recorded_fraction=0 +data.generate.reverb=1.0",
        "REF_TEST": "1",
        "REF_OVERRIDES": "data.generate.recorded_fraction=0",
    }
    real_set = ROOT / "data" / "real_speech" / "mix"
    before = _snapshot(real_set)
    # A call limit below what stage 1 already spent: it trains the 10 s minimum.
    _stage("1", env, call_limit=1)
    assert (run / "trained_s.txt").read_text().strip() == "10"
    first = (run / "last_ckpt.txt").read_text().strip()

    out = _stage("resume", env, call_limit=8)
    total = int((run / "trained_s.txt").read_text())
    assert total in (17, 18)  # 10 + what is left of an 8 s call (its start-up may take 1 s)
    assert f"from 10 s to {total} s of training" in out
    assert (run / "last_ckpt.txt").read_text().strip() != first

    out = _stage("2", env, call_limit=600)
    assert "until 00:00:00:24 of training" in out
    outdir = run / "out_2"
    back = [p for p in outdir.rglob("*") if p.is_file()]
    assert len(back) <= 8, f"a device call returns at most 8 files: {sorted(p.name for p in back)}"
    res = json.loads((outdir / "real_speech_transfer.json").read_text())
    assert res["real"]["2spk"]["n"] > 0 and np.isfinite(res["real_over_synthetic"])
    assert set(res["real"]["2spk"]["channel_probe"]) == {
        "one_eq",
        "both_eq",
        "one_codec",
        "both_codec",
    }
    # REF_TEST: the same best checkpoint on the default recipe's test split (a corpus of its own,
    # without the variant), beside the variant's own test split; the real set is the same.
    ref = json.loads((outdir / "real_speech_transfer_default_test.json").read_text())
    ref_done = json.loads((run / "ref_data" / "default_2mix" / "DONE").read_text())
    var_done = json.loads((run / "data" / "default_2mix" / "DONE").read_text())
    assert ref_done != var_done
    assert ref["synthetic"]["si_snri"] != res["synthetic"]["si_snri"]
    assert ref["real"]["2spk"]["si_snri"] == pytest.approx(res["real"]["2spk"]["si_snri"], abs=1e-4)
    with tarfile.open(outdir / "csv.tgz") as tar:
        # Every call's csv/ folder comes back (a short resumed call may stop before its first row).
        runs = {Path(n).parts[-2] for n in tar.getnames() if n.endswith("hparams.yaml")}
    assert len(runs) == 3  # stage 1, resume, stage 2: one run directory each
    with tarfile.open(outdir / "curve.tgz") as tar:
        assert any(n.endswith(".json") for n in tar.getnames())
    assert "curve: checkpoint, real SI-SNRi" in out
    # The dry run's smoke set went under $RUN, not over the repo's built real-speech set.
    assert _snapshot(real_set) == before
    assert (run / "real_mix").is_dir()

    # The best model comes back in parts under the per-file limit and rejoins into a loadable export.
    _stage("weights", {**env, "PART_BYTES": "20000"}, call_limit=600)
    parts = sorted((run / "out_weights").glob("best_model.pt.part*"))
    assert len(parts) >= 2 and all(p.stat().st_size <= 20000 for p in parts)
    joined = tmp_path / "best_model.pt"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    from usgm.evaluation.export import load_model

    model, meta = load_model(joined)
    assert meta["n_src"] == 2
    best = (outdir / "best_checkpoint.txt").read_text().strip()
    # The best by the exact score each checkpoint was saved with, over all three calls' runs.
    exact = {}
    for p in run.glob("logs/default_gpu/runs/*/checkpoints/epoch*.ckpt"):
        cbs = torch.load(p, map_location="cpu", weights_only=False)["callbacks"]
        exact[str(p)] = next(float(v["current_score"]) for k, v in cbs.items() if "Checkpoint" in k)
    assert exact[best] == max(exact.values())
    ref, _ = load_model(best)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
