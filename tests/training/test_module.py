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
from usgm.training.module import NonFiniteTrainingError, SeparationModule

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


SGD_LR1 = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1.0}


def _sgd(lr: float) -> dict:
    return {**SGD_LR1, "lr": lr}


def _module(method: str, seed: int = 0, **kwargs) -> SeparationModule:
    torch.manual_seed(seed)
    kwargs.setdefault("clip_grad_norm", None)
    kwargs.setdefault("optimizer", SGD_LR1)
    return SeparationModule(model=TINY, method=method, **kwargs)


def _quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _one_step(module: SeparationModule, batch: dict, **trainer_kw) -> dict[str, torch.Tensor]:
    before = copy.deepcopy(module.state_dict())
    trainer = _quiet_trainer(max_steps=1, limit_val_batches=0, **trainer_kw)
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


def _flat(grads: dict, names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n].double().reshape(-1) for n in names])


def _pcgrad_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PCGrad (Yu et al. 2020, Alg. 1) for two tasks over one flat vector, by the formula."""
    dot = float(a @ b)
    a_pc = a - dot / float(b @ b) * b if dot < 0 else a
    b_pc = b - dot / float(a @ a) * a if dot < 0 else b
    return a_pc + b_pc


def _upgrad_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """UPGrad with preference (1, 1): each row projected onto the dual cone {v: v·a ≥ 0, v·b ≥ 0}.

    The projection of g is found by enumerating the active sets of the two constraints (the
    feasible candidate closest to g), independently of torchjd's QP solver.
    """
    rows = torch.stack((a, b))

    def project(g: torch.Tensor) -> torch.Tensor:
        candidates = [g]
        for r in rows:  # one constraint active: v = g - (g·r)/‖r‖² r
            candidates.append(g - (g @ r) / (r @ r) * r)
        lam = torch.linalg.solve(rows @ rows.T, rows @ g)  # both active: R v = 0
        candidates.append(g - rows.T @ lam)
        tol = 1e-9 * float(a.norm() * b.norm())
        feasible = [v for v in candidates if bool((rows @ v >= -tol).all())]
        return min(feasible, key=lambda v: float((v - g).norm()))

    return project(a) + project(b)


@pytest.mark.parametrize("method", ["gm", "gm_released", "mtl", "ss_only", "pcgrad", "upgrad"])
def test_update_rule_matches_reference(method: str) -> None:
    batch = _batch()
    g_ss, g_se = _reference_grads(_module(method), batch)
    shared = [n for n in g_ss if _is_shared(n)]
    if method in ("pcgrad", "upgrad"):
        # These act on the whole shared vector: take the first batch on which the two tasks
        # conflict there (the test computes that itself), so the projection is exercised.
        for seed in range(1, 50):
            if float(_flat(g_ss, shared) @ _flat(g_se, shared)) < 0:
                break
            batch = _batch(seed=seed)
            g_ss, g_se = _reference_grads(_module(method), batch)
    delta = _one_step(_module(method), batch)
    if method == "gm":  # the batch must exercise the projection, not only the sum
        conflicts = [n for n in shared if float((g_se[n] * g_ss[n]).sum()) < 0]
        assert conflicts and len(conflicts) < len(shared)
    if method in ("pcgrad", "upgrad"):  # whole-vector rules, checked on the flat vector
        a, b = _flat(g_ss, shared), _flat(g_se, shared)
        assert float(a @ b) < 0  # the batch must exercise the projection
        expected = (_pcgrad_reference if method == "pcgrad" else _upgrad_reference)(a, b)
        torch.testing.assert_close(_flat(delta, shared), expected, rtol=2e-3, atol=1e-6)
    for name, d in delta.items():
        if method == "ss_only":
            expected = g_ss[name]
        elif method == "mtl":
            expected = g_ss[name] + g_se[name]
        elif not _is_shared(name):
            expected = g_ss[name]
        elif method == "gm":
            expected = g_ss[name] + _project(g_se[name], g_ss[name])
        elif method == "gm_released":  # the stored SE gradients became g_SS
            expected = 2 * g_ss[name]
        else:
            continue  # checked above as one vector
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
        SeparationModule(model=TINY, method="graddrop")
    with pytest.raises(ValueError, match=r"model\.loss"):
        SeparationModule(model=TINY, loss={"se_wieght": 0.1})
    with pytest.raises(ValueError, match=r"model\.optimizer: .*learning rate"):
        SeparationModule(model=TINY, optimizer=_sgd(-1.0))
    with pytest.raises(ValueError, match=r"model\.optimizer: cannot build torch\.optim\.Lamb"):
        SeparationModule(model=TINY, optimizer={"_target_": "torch.optim.Lamb"})
    with pytest.raises(ValueError, match=r"model\.scheduler"):
        SeparationModule(model=TINY, scheduler={"_target_": "torch.optim.lr_scheduler.StepLR"})


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
    module = SeparationModule(model=TINY, method=method, optimizer=SGD_LR1, clip_grad_norm=1e-3)
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
        optimizer=_sgd(1e-12),  # no real learning: validation never improves
        scheduler={
            "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
            "_partial_": True,
            "mode": "max",
            "patience": 0,
            "factor": 0.5,
        },
        scheduler_start_epoch=start_epoch,
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


# -- non-finite numbers and silent references ------------------------------------------------
ADAM_FUSED = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "fused": True}


class _Skips(pl.Callback):
    def __init__(self) -> None:
        self.skipped: list[float] = []
        self.silent: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.skipped.append(float(trainer.callback_metrics["train/skipped_steps"]))
        self.silent.append(float(trainer.callback_metrics["train/silent_refs"]))


def _fit(module: SeparationModule, batches: list[dict], **kwargs) -> _Skips:
    rec = _Skips()
    trainer = _quiet_trainer(
        max_steps=len(batches), limit_val_batches=0, log_every_n_steps=1, callbacks=[rec], **kwargs
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return rec


SGD_FUSED_MOMENTUM = {**SGD_LR1, "lr": 0.01, "momentum": 0.9, "fused": True}


@pytest.mark.parametrize(
    "optimizer",
    [SGD_LR1, ADAM_FUSED, SGD_FUSED_MOMENTUM],
    ids=["host_skip", "fused_skip", "fused_sgd_momentum"],
)
def test_non_finite_batch_is_skipped_and_counted(optimizer: dict) -> None:
    """A NaN sample leaves every weight untouched (fused: on the device) and is counted."""
    bad = _batch(seed=1)
    bad["mix"][1, 17] = float("nan")
    module = _module("gm", optimizer=optimizer)
    before = copy.deepcopy(module.state_dict())
    rec = _fit(module, [bad])
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    assert rec.skipped == [1.0]
    if optimizer is ADAM_FUSED:  # no Adam moment or step was advanced by the skipped step
        state = module.trainer.optimizers[0].state
        assert all(float(s["step"]) == 0 for s in state.values())
    rec = _fit(module, [_batch(seed=2)])  # a good batch still trains the same module
    assert any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())
    assert all(torch.isfinite(p).all() for p in module.parameters())  # no stale optimizer state


def test_training_stops_after_consecutive_bad_steps() -> None:
    bad = _batch(seed=1)
    bad["sources"][0, 0, 3] = float("inf")
    module = _module("mtl", max_bad_steps=2)
    with pytest.raises(NonFiniteTrainingError, match=r"2 consecutive steps.*model\.max_bad_steps"):
        _fit(module, [bad, bad, bad])
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_silent_reference_is_left_out_of_the_loss_and_counted() -> None:
    """The update equals the update of the batch without the utterance whose source is silent."""
    batch = _batch(seed=4)
    batch["sources"][0, 1] = 0.0  # utterance 0: its second speaker is digital silence
    batch["mix_clean"] = batch["sources"].sum(1)
    batch["mix"] = batch["mix_clean"] + 0.01
    rest = {k: v[1:] for k, v in batch.items() if k != "ids"}
    g_ss, _ = _reference_grads(_module("ss_only"), rest)
    module = _module("ss_only")
    before = copy.deepcopy(module.state_dict())
    rec = _fit(module, [batch])
    for name, _ in module.named_parameters():
        torch.testing.assert_close(before[name] - module.state_dict()[name], g_ss[name], msg=name)
    assert rec.silent == [1.0]


def test_non_finite_weights_are_never_written(tmp_path) -> None:
    module = _module("gm")
    trainer = _quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=DataLoader([_batch()], batch_size=None))
    with torch.no_grad():
        next(module.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteTrainingError, match="not finite"):
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


# -- compiled step ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gm", "mtl"])
def test_compiled_steps_equal_eager_steps(method: str) -> None:
    """Two steps with both mask nets compiled give the eager updates (to float tolerance).

    The ``aot_eager`` backend runs Dynamo's capture and AOTAutograd's joint graph (where the
    split step's double SE backward and donated buffers matter) without inductor's code
    generation, which would take minutes on a 2-core CPU; the benchmark checks inductor on the
    GPU (``train_throughput.py --check-compile``). The second step is a logging step: `mtl`
    then takes the two task gradients apart for the telemetry, which differentiates the
    compiled SE graph twice.
    """
    import functools

    torch._dynamo.reset()
    batches = [_batch(seed=5), _batch(seed=6)]
    sgd = _sgd(0.05)

    def run(compile: bool) -> tuple[SeparationModule, dict]:
        module = _module(method, compile=compile, optimizer=sgd)
        before = copy.deepcopy(module.state_dict())
        trainer = _quiet_trainer(max_steps=2, limit_val_batches=0, log_every_n_steps=2)
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
        return module, {k: before[k] - v for k, v in module.state_dict().items()}

    _, eager = run(False)
    original = torch.compile
    # torch's default: the module must turn buffer donation off itself (restored afterwards).
    with torch._functorch.config.patch(donated_buffer=True):
        torch.compile = functools.partial(original, backend="aot_eager")
        try:
            compiled_module, compiled = run(True)
        finally:
            torch.compile = original
    assert set(compiled_module._compiled) == {"se_masknet", "ss_masknet"}
    for name, d in eager.items():
        torch.testing.assert_close(compiled[name], d, rtol=1e-4, atol=1e-6, msg=name)


def _whole_batch(seed: int, lengths: list[int]) -> dict:
    """A zero-padded whole-utterance batch as ``collate_batch`` builds it (``lengths`` set)."""
    from usgm.data.datamodule import collate_batch

    g = torch.Generator().manual_seed(seed)
    items = []
    for i, n in enumerate(lengths):
        sources = torch.randn(2, n, generator=g) * 0.1
        clean = sources.sum(0)
        mix = clean + torch.randn(n, generator=g) * 0.05
        items.append({"mix": mix, "sources": sources, "mix_clean": clean, "id": f"u{i}"})
    return collate_batch(items)


@pytest.mark.parametrize(("dynamic", "graphs"), [(True, 1), (None, 2)])
def test_compiled_whole_utterance_steps_equal_eager_without_recompiles(
    dynamic: bool | None, graphs: int
) -> None:
    """Compiled ``gm`` steps on whole-utterance batches of three (batch, time) shapes give the
    eager updates, and each mask net compiles ``graphs`` times for all of them.

    ``compile_dynamic=True`` (what ``data.batch_seconds`` selects): one graph per mask net.
    None (torch's automatic dynamic shapes): a static graph for the first shape, then one
    symbolic graph. Latent lengths 99, 150 and 124 frames: 150 is a multiple of the tiny
    model's hop (5), which used to cost a third graph (a view-vs-copy guard in the mask net).
    A symbolic compile turns off Inductor's Triton coalescing analysis, which asserts on
    symbolic sizes (on the GPU; the CPU backend does not run it).
    """
    import functools

    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    batches = [
        _whole_batch(1, [800, 650]),  # T = 800 samples → 99 latent frames
        _whole_batch(2, [1208, 1100, 1000]),  # 150 frames
        _whole_batch(3, [1000, 990, 700, 640]),  # 124 frames
    ]
    sgd = _sgd(0.05)

    def run(compile: bool) -> dict:
        module = _module("gm", compile=compile, optimizer=sgd, compile_dynamic=dynamic)
        before = copy.deepcopy(module.state_dict())
        trainer = _quiet_trainer(max_steps=3, limit_val_batches=0, log_every_n_steps=3)
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
        return {k: before[k] - v for k, v in module.state_dict().items()}

    eager = run(False)
    torch._dynamo.reset()
    counters.clear()
    original = torch.compile
    torch.compile = functools.partial(original, backend="aot_eager")  # see the test above
    try:
        with inductor_config.patch({"triton.coalesce_tiling_analysis": True}):  # restored after
            compiled = run(True)
            assert inductor_config.triton.coalesce_tiling_analysis is (dynamic is not True)
    finally:
        torch.compile = original
    assert counters["stats"]["unique_graphs"] == 2 * graphs  # SE and SS mask nets
    for name, d in eager.items():
        torch.testing.assert_close(compiled[name], d, rtol=1e-4, atol=1e-6, msg=name)


def test_compile_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"model\.compile_mode"):
        _module("gm", compile=True, compile_mode="fastest")
    with pytest.raises(ValueError, match=r"model\.compile_dynamic"):
        _module("gm", compile=True, compile_dynamic="yes")
    module = _module("gm", compile_mode="max-autotune-no-cudagraphs", compile_dynamic=False)
    assert module.hparams["compile_mode"] == "max-autotune-no-cudagraphs"
