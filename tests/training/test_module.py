"""One optimizer step of each method against gradients computed independently in the test.

SGD with lr 1 and no clipping makes the parameter change equal to minus the applied gradient,
so each method's update rule is checked exactly.
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from usgm.losses import se_loss, ss_loss
from usgm.models.presets import tiny_config
from usgm.training.module import SeparationModule

TINY = tiny_config(n_src=2)


def _batch(seed: int = 0, n_src: int = 2, length: int = 800) -> dict:
    g = torch.Generator().manual_seed(seed)
    sources = torch.randn(2, n_src, length, generator=g) * 0.1
    noise = torch.randn(2, length, generator=g) * 0.05
    mix_clean = sources.sum(1)
    return {
        "mix": mix_clean + noise,
        "sources": sources,
        "mix_clean": mix_clean,
        "lengths": torch.full((2,), length),
        "ids": ["a", "b"],
    }


def _module(method: str, seed: int = 0) -> SeparationModule:
    torch.manual_seed(seed)
    return SeparationModule(
        model=TINY, method=method, optim={"name": "sgd", "lr": 1.0}, clip_grad_norm=None
    )


def _quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _one_step(module: SeparationModule, batch: dict) -> dict[str, torch.Tensor]:
    before = copy.deepcopy(module.state_dict())
    trainer = _quiet_trainer(max_steps=1, limit_val_batches=0)
    loader = DataLoader([batch], batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    after = module.state_dict()
    return {k: before[k] - after[k] for k, _ in module.named_parameters()}


def _reference_grads(module: SeparationModule, batch: dict):
    """g_SS and g_SE for every named parameter, by plain autograd (no Lightning)."""
    named = list(module.named_parameters())
    params = [p for _, p in named]
    out = module.model(batch["mix"])
    l_ss = ss_loss(out.est, batch["sources"])
    grads_ss = torch.autograd.grad(l_ss, params, retain_graph=True, allow_unused=True)
    l_se = 0.1 * se_loss(out.enhanced, module.model.encode(batch["mix_clean"]), reduction="sum")
    grads_se = torch.autograd.grad(l_se, params, allow_unused=True)
    zero = torch.zeros_like
    g_ss = {n: zero(p) if g is None else g for (n, p), g in zip(named, grads_ss, strict=True)}
    g_se = {n: zero(p) if g is None else g for (n, p), g in zip(named, grads_se, strict=True)}
    return g_ss, g_se


def _is_shared(name: str) -> bool:
    return name.startswith(("model.encoder.", "model.se_masknet."))


def _project(g_se: torch.Tensor, g_ss: torch.Tensor) -> torch.Tensor:
    """Paper Eq. (5), written out independently of usgm.gm."""
    dot = float((g_se.double() * g_ss.double()).sum())
    if dot >= 0:
        return g_se
    return g_se - dot / float((g_ss.double() ** 2).sum()) * g_ss


@pytest.mark.parametrize("method", ["gm", "gm_released", "mtl", "ss_only"])
def test_update_rule_matches_reference(method: str) -> None:
    batch = _batch()
    module = _module(method)
    g_ss, g_se = _reference_grads(_module(method), batch)
    delta = _one_step(module, batch)
    for name, d in delta.items():
        if method == "ss_only":
            expected = g_ss[name]
        elif method == "mtl":
            expected = g_ss[name] + g_se[name]
        elif not _is_shared(name):
            expected = g_ss[name]
        elif method == "gm":
            expected = g_ss[name] + _project(g_se[name], g_ss[name])
        else:  # gm_released: the stored SE gradients became g_SS
            expected = 2 * g_ss[name]
        torch.testing.assert_close(d, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_ss_only_has_no_se_module() -> None:
    module = _module("ss_only")
    assert not any(n.startswith("model.se_masknet.") for n, _ in module.named_parameters())


def test_gm_applies_the_se_gradient() -> None:
    """The released code's trap: GM must differ from gm_released from the same state."""
    batch = _batch(seed=3)
    d_gm = _one_step(_module("gm", seed=1), batch)
    d_rel = _one_step(_module("gm_released", seed=1), batch)
    shared = [n for n in d_gm if _is_shared(n)]
    diff = sum(float((d_gm[n] - d_rel[n]).abs().sum()) for n in shared)
    assert diff > 1e-3
    # and the non-shared (SS mask net, decoder) updates are identical: g_SS in both
    for n in d_gm:
        if not _is_shared(n):
            torch.testing.assert_close(d_gm[n], d_rel[n])


def test_bad_method_and_keys_are_named() -> None:
    with pytest.raises(ValueError, match=r"model\.method"):
        SeparationModule(model=TINY, method="pcgrad")
    with pytest.raises(ValueError, match=r"model\.loss"):
        SeparationModule(model=TINY, loss={"se_wieght": 0.1})
    with pytest.raises(ValueError, match=r"model\.optim\.name"):
        SeparationModule(model=TINY, optim={"name": "lamb"}).configure_optimizers()


def test_hparams_are_plain_data() -> None:
    module = _module("gm")
    hp = dict(module.hparams)
    assert hp["model"]["use_se"] is True and hp["method"] == "gm"

    def plain(x) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list | tuple):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, bool | int | float | str)

    assert plain(hp)


@pytest.mark.parametrize("method", ["gm", "mtl"])
def test_update_is_clipped_to_the_configured_norm(method: str) -> None:
    torch.manual_seed(0)
    module = SeparationModule(
        model=TINY, method=method, optim={"name": "sgd", "lr": 1.0}, clip_grad_norm=1e-3
    )
    delta = _one_step(module, _batch())
    total = torch.sqrt(sum(d.double().square().sum() for d in delta.values()))
    assert float(total) == pytest.approx(1e-3, rel=1e-3)


class _Recorder(pl.Callback):
    def __init__(self) -> None:
        self.val: list[float] = []
        self.lrs: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val.append(float(trainer.callback_metrics["val/si_snri"]))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("start_epoch", [0, 3])
def test_plateau_scheduler_sees_this_epochs_validation(start_epoch: int, monkeypatch) -> None:
    """ReduceLROnPlateau (stepped by hand in manual mode) gets the current epoch's SI-SNRi."""
    seen: list[float] = []
    original = torch.optim.lr_scheduler.ReduceLROnPlateau.step

    def spy(self, metric, *args, **kwargs):
        seen.append(float(metric))
        return original(self, metric, *args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", spy)
    torch.manual_seed(0)
    module = SeparationModule(
        model=TINY,
        method="gm",
        optim={"name": "sgd", "lr": 1e-12},  # no real learning: validation never improves
        scheduler={"patience": 0, "factor": 0.5, "start_epoch": start_epoch},
    )
    rec = _Recorder()
    trainer = _quiet_trainer(max_epochs=4, num_sanity_val_steps=0, callbacks=[rec])
    batch = _batch()
    trainer.fit(module, DataLoader([batch], batch_size=None), DataLoader([batch], batch_size=None))
    assert seen == rec.val[start_epoch:]
    if start_epoch == 0:  # best set after epoch 0, then halved after epochs 1 and 2
        assert rec.lrs == pytest.approx([1e-12, 1e-12, 5e-13, 2.5e-13])
    else:  # first step at epoch 3 only records the best: no halving before start_epoch
        assert rec.lrs == pytest.approx([1e-12] * 4)
