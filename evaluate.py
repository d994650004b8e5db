"""Evaluate a usgm checkpoint the way the paper does: `python evaluate.py ckpt_path=PATH`.

Examples:
    python evaluate.py ckpt_path=logs/train/runs/.../checkpoints/best.ckpt
    python evaluate.py ckpt_path=model.pt data.root=/data/Libri2Mix data.split=dev eval.pesq=true
    python evaluate.py ckpt_path=best.ckpt results_dir=results/gm logger=wandb
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from usgm.training.factory import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from usgm.data.errors import DataError
    from usgm.evaluation.export import ModelFileError
    from usgm.evaluation.runner import EvaluationError, run
    from usgm.training.factory import build_loggers

    try:
        result = run(
            ckpt_path=cfg.ckpt_path,
            data=OmegaConf.to_container(cfg.data, resolve=True),
            split=str(cfg.data.split),
            results_dir=cfg.results_dir,
            eval_opts=OmegaConf.to_container(cfg.eval, resolve=True),
            loggers=build_loggers(cfg),
        )
    # User errors (bad model file, bad data, a model that outputs NaN): one clear message, no
    # traceback; nothing is written into results_dir before the last utterance is scored.
    except (ModelFileError, DataError, EvaluationError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        sys.exit(1)
    return result.stats["si_snr_i"]["mean"]


if __name__ == "__main__":
    main()
