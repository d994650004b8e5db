"""Config → objects: one-time default-data generation and its staleness check."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from usgm.data.errors import DataError
from usgm.data.synth import read_info
from usgm.data.synth import recorded as rec
from usgm.training.factory import ensure_default_data


def _data_cfg(root: Path, seed: int = 0):
    return OmegaConf.create(
        {
            "root": str(root),
            "n_src": 2,
            "sample_rate": 8000,
            "generate": {"n_train": 2, "n_dev": 1, "n_test": 1, "seed": seed},
        }
    )


def test_generates_once_then_reuses_then_rebuilds_when_stale(tmp_path: Path) -> None:
    root = tmp_path / "default_2mix"
    ensure_default_data(_data_cfg(root))
    first = read_info(root)
    assert first and first["counts"] == {"train-360": 2, "dev": 1, "test": 1}
    marker_time = (root / "DONE").stat().st_mtime_ns

    ensure_default_data(_data_cfg(root))  # same settings: nothing rebuilt
    assert (root / "DONE").stat().st_mtime_ns == marker_time

    ensure_default_data(_data_cfg(root, seed=1))  # other settings: rebuilt in place
    assert read_info(root)["seed"] == 1


def test_never_overwrites_a_folder_it_did_not_generate(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("my data")
    with pytest.raises(DataError):
        ensure_default_data(_data_cfg(root))
    assert (root / "notes.txt").read_text() == "my data"


def test_where_the_recordings_come_from_does_not_make_data_stale(tmp_path: Path) -> None:
    root = tmp_path / "default_2mix"
    cfg = _data_cfg(root)
    ensure_default_data(cfg)
    stamp = (root / "DONE").stat().st_mtime_ns
    cfg.generate.recorded_dir = str(tmp_path / "elsewhere")  # a location, not content
    cfg.generate.cache_dir = str(tmp_path / "cache")
    ensure_default_data(cfg)
    assert (root / "DONE").stat().st_mtime_ns == stamp
    cfg.generate.recorded_fraction = 0.0  # content: rebuilt
    ensure_default_data(cfg)
    assert read_info(root)["options"]["recorded_fraction"] == 0.0


def _rewrite_done(root: Path, **changes) -> None:
    """Make the corpus at ``root`` look as if an older generator had written it."""
    import json

    (root / "DONE").write_text(json.dumps({**read_info(root), **changes}))


def _options_without(root: Path, key: str) -> dict:
    return {k: v for k, v in read_info(root)["options"].items() if k != key}


def test_a_corpus_from_an_older_voice_catalogue_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "default_2mix"
    ensure_default_data(_data_cfg(root))
    info = read_info(root)
    assert info["recorded_speakers"] and info["recorded_catalogue"] == rec.catalogue_key()
    _rewrite_done(root, recorded_catalogue="older")
    ensure_default_data(_data_cfg(root))
    assert read_info(root)["recorded_catalogue"] == rec.catalogue_key()


def test_a_corpus_from_before_an_option_existed_is_reused(tmp_path: Path) -> None:
    from usgm.data.synth.options import ADDED_LATER

    root = tmp_path / "default_2mix"
    cfg = _data_cfg(root)
    cfg.generate.shared_channel = ADDED_LATER["shared_channel"]
    ensure_default_data(cfg)
    _rewrite_done(root, options=_options_without(root, "shared_channel"))
    stamp = (root / "DONE").stat().st_mtime_ns
    ensure_default_data(cfg)  # the value that reproduces the older output: nothing to rebuild
    assert (root / "DONE").stat().st_mtime_ns == stamp
    cfg.generate.shared_channel = 1.0  # asked for, but the old corpus was built without it
    ensure_default_data(cfg)
    assert read_info(root)["options"]["shared_channel"] == 1.0


def test_a_corpus_missing_an_option_of_unknown_history_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "default_2mix"
    ensure_default_data(_data_cfg(root))
    _rewrite_done(root, options=_options_without(root, "codec"))
    ensure_default_data(_data_cfg(root))
    assert "codec" in read_info(root)["options"]


# -- module and trainer ------------------------------------------------------------------------
def _train_cfg(**model):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    # paths.output_dir is set by Hydra's runtime in train.py; compose() has none.
    overrides = ["debug=smoke", "paths.output_dir=unused"]
    overrides += [f"{k}={v}" for k, v in model.items()]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("method", ["ss_only", "mtl", "gm"])
def test_16_mixed_is_refused(method: str) -> None:
    from usgm.training.factory import build_trainer

    cfg = _train_cfg(**{"model.method": method, "trainer.precision": "16-mixed"})
    with pytest.raises(ValueError, match="16-mixed is not supported"):
        build_trainer(cfg, callbacks=[], loggers=[])


def test_module_keys_and_partial_optimizer_from_the_config() -> None:
    from usgm.training.factory import build_module

    cfg = _train_cfg(
        **{"model.optimizer._target_": "torch.optim.AdamW", "model.optimizer.lr": 3e-4}
    )
    module = build_module(cfg)
    opt = module.configure_optimizers()["optimizer"]
    assert type(opt).__name__ == "AdamW" and opt.param_groups[0]["lr"] == 3e-4
    with pytest.raises(ValueError, match=r"model\.optim was replaced by model\.optimizer"):
        build_module(_train_cfg(**{"+model.optim.lr": 1e-3}))
    with pytest.raises(ValueError, match=r"model\.optimizer: .*learning rate"):
        build_module(_train_cfg(**{"model.optimizer.lr": -1}))


def test_compile_dynamic_follows_batch_seconds_unless_set() -> None:
    """A null ``model.compile_dynamic`` is true for duration-budgeted whole utterances only."""
    from usgm.training.factory import build_module

    assert build_module(_train_cfg()).hparams["compile_dynamic"] is None
    whole = {"data.segment": "null", "data.batch_seconds": 64}
    assert build_module(_train_cfg(**whole)).hparams["compile_dynamic"] is True
    fixed = build_module(_train_cfg(**whole, **{"model.compile_dynamic": "false"}))
    assert fixed.hparams["compile_dynamic"] is False
    with pytest.raises(ValueError, match=r"model\.compile_mode"):
        build_module(_train_cfg(**{"model.compile_mode": "fastest"}))
