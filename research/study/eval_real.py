"""Score a finished study run on the real-speech dev set, where ``usgm-compare`` reads it.

Takes the run's best checkpoint (``best_checkpoint`` in ``<run>/results.json``, else its
``last_checkpoint``), scores it with ``research/realism/real_speech_transfer.py`` on the built
real-speech set (``--mix-dir``; 80 noisy 2-speaker mixtures of Debian's Asterisk prompts, built
on a machine with apt and carried), and writes

- ``<run>/eval/<set>/real_speech_transfer.json``: the transfer tool's full report;
- ``<run>/eval/<set>/final_metrics.json``: ``metrics.si_snr_i`` (mean, std, 95 % interval, n)
  in ``evaluate.py``'s layout. The tool measures no SDR, so there is no ``sdr_i``.

    python research/study/eval_real.py RUN_DIR --mix-dir data/real_speech/mix --device cuda

Options after ``--`` go to the transfer tool (the tests pass ``--smoke --speech-dir DIR``).
Exit status 0 also when the file already exists (nothing is redone; ``--force`` redoes it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "research" / "realism" / "real_speech_transfer.py"


def _tool():
    spec = importlib.util.spec_from_file_location("real_speech_transfer", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def checkpoint_of(run: Path) -> str:
    """The run's best checkpoint by validation (else its last one) as named in results.json."""
    res = json.loads((run / "results.json").read_text())
    for key in ("best_checkpoint", "last_checkpoint"):
        path = res.get(key)
        if path and Path(path).is_file():
            return str(path)
    raise FileNotFoundError(f"{run}/results.json names no existing checkpoint")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a finished training run folder (has results.json)")
    p.add_argument("--mix-dir", type=Path, default=Path("data/real_speech/mix"))
    p.add_argument("--set-name", default="real2mix_dev", help="folder name under <run>/eval/")
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="score again even if already scored")
    args = p.parse_args(argv)
    out = args.run / "eval" / args.set_name
    final = out / "final_metrics.json"
    if final.is_file() and not args.force:
        print(f"[eval-real] {final} exists: skipped", file=sys.stderr)
        return 0
    ckpt = checkpoint_of(args.run)
    report = out / "real_speech_transfer.json"
    rc = _tool().main(
        [
            "--model",
            ckpt,
            "--mix-dir",
            str(args.mix_dir),
            "--n-src",
            "2",
            "--device",
            args.device,
            # the synthetic test split is scored by train.py's test phase / evaluate.py already
            "--synthetic-root",
            str(out / "no_synthetic"),
            "--out",
            str(report),
            *extra,
        ]
    )
    if rc != 0:
        return rc
    r = json.loads(report.read_text())["real"]["2spk"]
    stats = dict(r.get("si_snri_stats") or {})
    stats["mean"] = r["si_snri"]
    final.write_text(
        json.dumps(
            {
                "split": args.set_name,
                "source": "research/realism/real_speech_transfer.py",
                "checkpoint": ckpt,
                "n_utterances": r["n"],
                "metrics": {"si_snr_i": stats},
                "input_si_snr": r.get("input_si_snr"),
                "denoise_only_si_snri": r.get("denoise_only_si_snri"),
            },
            indent=2,
        )
    )
    print(f"[eval-real] {args.run.name}: real SI-SNRi {r['si_snri']:+.2f} dB -> {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
