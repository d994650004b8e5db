"""Train a usgm model: `python train.py [experiment=NAME] [key=value ...]`.

Examples:
    python train.py                                  # default experiment on the generated data
    python train.py experiment=libri3mix_gm data.root=/data/Libri3Mix
    python train.py -m experiment=libri2mix_ss_only,libri2mix_mtl,libri2mix_gm seed=1,2,3
    python train.py experiment=libri2mix_gm debug=smoke
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from usgm.training.factory import register_resolvers

register_resolvers()

# Exit status after a SIGTERM stop: 128 + 15, what a shell reports for a process killed by it.
PREEMPTED_EXIT = 143


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from usgm.data.errors import DataError
    from usgm.training.module import NonFiniteTrainingError
    from usgm.training.pipeline import ConfigError, Preempted, train

    try:
        metrics = train(cfg)
    except (ConfigError, DataError, NonFiniteTrainingError) as err:  # one clear line
        print(f"usgm: error: {err}", file=sys.stderr)
        sys.exit(1)
    except Preempted as err:  # SIGTERM: checkpoint saved; a scheduler must not read "done"
        if err.report:
            print(f"usgm: {err}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    # Returned for Hydra sweepers that optimise a value.
    return metrics.get("test/si_snri", metrics.get("val/si_snri"))


if __name__ == "__main__":
    main()
