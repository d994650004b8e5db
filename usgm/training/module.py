"""The LightningModule: one network, a gradient combiner, manual optimization.

Methods (``model.method``), after Hu et al., "Unifying Speech Enhancement and Separation with
Gradient Modulation for End-to-End Noise-Robust Speech Separation", ICASSP 2023
(arXiv 2302.11131):

- ``ss_only``: the separator alone (no SE module); loss L_SS.
- ``mtl``: unified SE+SS network, update g_SS + w·g_SE (combiner ``sum``).
- ``gm``: gradient modulation (paper, Sec. 2.3): on encoder and SE-module parameters a
  conflicting SE gradient is projected onto the normal plane of the SS gradient.
- ``gm_released``: what the authors' released GM computes under its pinned torch 1.8
  (2·g_SS on encoder and SE: the SE loss is lost). A reproduction ablation.
- ``pcgrad``, ``upgrad``: other two-task gradient combiners (:mod:`usgm.gm.combiners`).

The training step is split at the enhanced latent w_e (paper Fig. 1):

1. ``w = Encoder(mix)``, ``w_e = SE(w)``: the small shared graph.
2. The separation graph (SS mask net and decoder, about 85 % of the compute) runs on a detached
   copy of w_e and is differentiated once, without ``retain_graph``: g_SS of its own parameters
   and dL_SS/dw_e. It can therefore be compiled freely.
3. The shared parameters get g_SS by pushing dL_SS/dw_e through the small graph, and g_SE from
   w·L_SE = w·MSE(w_e, Encoder(Σ sources)); a linear combiner (``sum``) needs one backward for
   both. Every gradient is computed with ``torch.autograd.grad`` and, under data parallelism,
   averaged over the ranks in one flat all-reduce *before* the combiner, whose projection is not
   linear: projecting per rank and averaging would be another update.

A step whose loss or gradient is not finite anywhere, or in which no utterance counts (all above
the loss threshold or with a silent reference), is skipped on every rank together (the decision
rides on the all-reduced gradients); skipped steps are counted and logged, and training stops
after ``max_bad_steps`` consecutive ones. With a fused optimizer on the GPU the skip costs no host
synchronisation (the fused kernels read a ``found_inf`` flag on the device).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor

from usgm.gm import Combiner, build_combiner
from usgm.losses import pit_si_snr, se_loss, si_snr, ss_loss_terms
from usgm.models import build_model
from usgm.models.compile import allow_symbolic_sizes
from usgm.models.encoder import n_frames
from usgm.training import optim

#: ``model.method`` → gradient combiner (None: no SE module, nothing to combine).
METHODS: dict[str, str | None] = {
    "ss_only": None,
    "mtl": "sum",
    "gm": "gm",
    "gm_released": "gm_released",
    "pcgrad": "pcgrad",
    "upgrad": "upgrad",
}

#: Optimizers whose fused kernels honour ``found_inf`` with zero-initialised state.
_FOUND_INF_SAFE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad)

DEFAULT_LOSS: dict[str, Any] = {"se_weight": 0.1, "se_reduction": "sum", "threshold": None}

#: ``model.compile_mode`` values (besides None, torch's default): ``torch.compile``'s modes.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class NonFiniteTrainingError(RuntimeError):
    """Training cannot go on: too many consecutive non-finite steps, or non-finite weights."""


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, key: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in model.{key}; expected {sorted(defaults)}")
    return {**defaults, **given}


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class SeparationModule(pl.LightningModule):
    """Trains a :class:`usgm.models.UnifiedSeparator` with one of :data:`METHODS`.

    All hyperparameters are plain data (dicts, numbers, strings) so checkpoints load with
    ``torch.load(weights_only=True)``; the network is rebuilt from ``hparams.model``.

    Args:
        model: Network config for :func:`usgm.models.build_model`. ``use_se`` is derived from
            ``method`` (``ss_only`` has no SE module).
        method: A key of :data:`METHODS`.
        sample_rate: Audio rate in Hz (stored for evaluation and export).
        optimizer: Hydra ``_partial_`` mapping of a torch optimizer (default: the paper's Adam
            1.5e-4); ``fused`` left unset means fused on CUDA.
        scheduler: Hydra ``_partial_`` mapping of an LR scheduler, or None. A
            ``ReduceLROnPlateau`` steps on the validation SI-SNRi (so ``mode: max``), any other
            scheduler once per training epoch.
        scheduler_start_epoch: No scheduler step before this (0-based) epoch (the paper's recipe:
            5).
        loss: ``se_weight`` (paper 0.1), ``se_reduction`` (paper ``sum``), ``threshold`` (dB;
            utterances already above it are left out of the SS mean, paper recipe 30).
        clip_grad_norm: L2 clipping of the final update (paper 5); None or 0 disables.
        compile: ``torch.compile`` the two mask networks for training (validation, testing and
            inference stay eager).
        compile_dynamic: ``dynamic`` of ``torch.compile`` (only with ``compile``). None: torch's
            automatic dynamic shapes (a static graph for the first shape; the first change of
            batch or time size recompiles once with those sizes symbolic, then no more). True:
            batch and time symbolic from the first call (one graph per mask net for every
            whole-utterance batch; what ``build_module`` picks with ``data.batch_seconds``).
            False: one static graph per shape (fixed segments only: varying whole-utterance
            shapes would recompile every batch up to torch's recompile limit, then run eager).
        compile_mode: ``mode`` of ``torch.compile`` (None: torch's default), one of
            :data:`COMPILE_MODES`, e.g. ``max-autotune-no-cudagraphs``.
        max_bad_steps: Stop after this many consecutive skipped (non-finite) steps.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        method: str = "gm",
        sample_rate: int = 8000,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = optim.DEFAULT_SCHEDULER,
        scheduler_start_epoch: int = 0,
        loss: Mapping[str, Any] | None = None,
        clip_grad_norm: float | None = 5.0,
        compile: bool = False,
        max_bad_steps: int = 20,
        compile_dynamic: bool | None = None,
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"model.method={method!r} is not one of {list(METHODS)}")
        model = {**dict(model), "use_se": method != "ss_only"}
        optimizer = dict(optimizer or optim.DEFAULT_OPTIMIZER)
        scheduler = None if scheduler is None else dict(scheduler)
        optim.check(optimizer, scheduler)
        loss = _merge(DEFAULT_LOSS, loss, "loss")
        if loss["se_reduction"] not in ("sum", "mean"):
            raise ValueError(
                f"model.loss.se_reduction must be 'sum' or 'mean', got {loss['se_reduction']!r}"
            )
        if clip_grad_norm is not None and clip_grad_norm < 0:
            raise ValueError(f"model.clip_grad_norm must be ≥ 0 or null, got {clip_grad_norm}")
        if int(max_bad_steps) < 1:
            raise ValueError(f"model.max_bad_steps must be ≥ 1, got {max_bad_steps}")
        if compile_dynamic is not None and not isinstance(compile_dynamic, bool):
            raise ValueError(
                f"model.compile_dynamic must be true, false or null, got {compile_dynamic!r}"
            )
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"model.compile_mode must be null or one of {list(COMPILE_MODES)}, "
                f"got {compile_mode!r}"
            )
        self.save_hyperparameters(
            {
                "model": model,
                "method": method,
                "sample_rate": int(sample_rate),
                "optimizer": optimizer,
                "scheduler": scheduler,
                "scheduler_start_epoch": int(scheduler_start_epoch),
                "loss": loss,
                "clip_grad_norm": clip_grad_norm,
                "compile": bool(compile),
                "max_bad_steps": int(max_bad_steps),
                "compile_dynamic": compile_dynamic,
                "compile_mode": compile_mode,
            }
        )
        self.automatic_optimization = False
        # False only for the negative control of the DDP equivalence check: combine each rank's
        # own gradients, then average (wrong for a non-linear combiner).
        self.sync_task_grads = True
        self.model = build_model(model)
        name = METHODS[method]
        self.combiner: Combiner | None = None if name is None else build_combiner(name)
        self._param_roles: tuple[list[Tensor], list[str], list[Tensor]] | None = None
        # Compiled training callables, kept out of the module tree (state_dict keys unchanged).
        self._compiled: dict[str, Any] = {}
        # Step counters on the device (no per-step host sync): consecutive non-finite steps,
        # their longest streak since the last check, totals of non-finite and empty steps.
        self._bad_run: Tensor | None = None
        self._bad_max: Tensor | None = None
        self._bad_total: Tensor | None = None
        self._empty_total: Tensor | None = None

    # ------------------------------------------------------------------ properties
    @property
    def method(self) -> str:
        return self.hparams["method"]

    def forward(self, mix: Tensor) -> Tensor:
        """Separate. mix (B, T) → estimates (B, C, T)."""
        return self.model(mix).est

    # ------------------------------------------------------------------ compilation
    def _stage(self, name: str):
        """The mask net ``name`` for training: compiled when ``compile`` is on."""
        module = getattr(self.model, name)
        if not self.hparams["compile"]:
            return module
        if name not in self._compiled:
            if self.combiner is not None:
                # The SE graph is differentiated twice whenever the two task gradients are taken
                # apart (g_SE, then g_SS through w_e; for `sum` on logging steps): a compiled
                # backward must not donate its saved buffers to the first call. The flag is read
                # at compile and at backward time, so it is set for the whole process.
                torch._functorch.config.donated_buffer = False
            # Whole-utterance batches vary in batch and time size: `compile_dynamic` (see the
            # class docstring) decides whether that costs one graph or one per shape. The mask
            # nets themselves are shape-uniform (DualPathMaskNet has no branch on L modulo the
            # hop once compiled), so a symbolic L needs no further recompiles.
            if self.hparams.get("compile_dynamic"):
                allow_symbolic_sizes()  # process-wide, as `donated_buffer` above
            kwargs: dict[str, Any] = {"dynamic": self.hparams.get("compile_dynamic")}
            if self.hparams.get("compile_mode") is not None:
                kwargs["mode"] = self.hparams["compile_mode"]
            self._compiled[name] = torch.compile(module, **kwargs)
        return self._compiled[name]

    def _enhance(self, latent: Tensor) -> Tensor:
        if self.model.se_masknet is None:
            return latent
        return latent * self._stage("se_masknet")(latent)[:, 0]

    # ------------------------------------------------------------------ training step
    def _should_log(self) -> bool:
        """True on the steps where Lightning writes logs (telemetry is only computed then)."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def _all_reduce_mean(self, tensors: list[Tensor]) -> list[Tensor]:
        """Average ``tensors`` over the data-parallel ranks in one flat collective."""
        world = _world_size()
        if world == 1 or not tensors:
            return tensors
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= world
        return [
            f.view_as(t).to(t.dtype)
            for f, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)
        ]

    def _roles(self) -> tuple[list[Tensor], list[str], list[Tensor]]:
        """Trainable shared parameters, their module labels, trainable separation parameters.

        Built once (the network's parameters do not change during training), not every step.
        """
        if self._param_roles is None:
            named = [(n, p) for n, p in self.model.shared_parameters() if p.requires_grad]
            self._param_roles = (
                [p for _, p in named],
                ["se" if n.startswith("se_masknet.") else "encoder" for n, _ in named],
                [p for _, p in self.model.separation_parameters() if p.requires_grad],
            )
        return self._param_roles

    def _gradients(
        self, batch: Mapping[str, Any], with_stats: bool
    ) -> tuple[list[tuple[Tensor, Tensor]], dict[str, Tensor]]:
        """Global gradients of every parameter and step statistics (see module docstring).

        Returns:
            ``(pairs, info)``: ``(parameter, gradient)`` for every trainable parameter, and 0-d
            tensors: ``skip`` (bool), ``loss_ss``, ``si_snr``, ``loss_se`` (with SE),
            ``silent`` (utterances left out for a silent reference), GM telemetry if asked.
        """
        mix, ref = batch["mix"], batch["sources"]
        shared, groups, separation = self._roles()
        world = _world_size()

        # 1. Shared graph: encoder and SE mask net.
        latent = self.model.encode(mix)
        enhanced = self._enhance(latent)

        # 2. Separation graph on a detached w_e: one backward, no retain_graph.
        w_e = enhanced.detach().requires_grad_(True)
        masks = self._stage("ss_masknet")(w_e)
        est = self.model.decode(w_e, masks, mix.shape[-1])
        # Whole-utterance batches are zero-padded: the losses cover each item's valid part
        # (`lengths`, on the device: no host sync); full lengths give the unpadded bits.
        lengths = batch.get("lengths")
        sisnr, keep, silent = ss_loss_terms(
            est, ref, self.hparams["loss"]["threshold"], lengths=lengths
        )
        counts = torch.stack((keep.sum(), silent.sum(), (~silent).sum())).float()
        if world > 1:  # the kept-utterance mean is the global one
            dist.all_reduce(counts)
        n_keep = counts[0]
        kept_sum = torch.where(keep, sisnr, torch.zeros_like(sisnr)).sum()
        # Averaging gradients over ranks divides by `world`: scale so the result is the
        # gradient of the global mean over kept utterances.
        l_ss = -kept_sum * world / n_keep.clamp(min=1)
        g_sep_and_w = torch.autograd.grad(l_ss, [*separation, w_e], allow_unused=True)
        g_sep = [
            torch.zeros_like(p) if g is None else g
            for g, p in zip(g_sep_and_w[:-1], separation, strict=True)
        ]
        g_w = g_sep_and_w[-1]

        # 3. Shared parameters: g_SS through w_e, and g_SE.
        info: dict[str, Tensor] = {}
        combined: list[Tensor]
        task_pair: tuple[list[Tensor], list[Tensor]] | None = None
        if self.combiner is None:
            combined = self._grad(enhanced, shared, g_w)
        else:
            w = self.hparams["loss"]["se_weight"]
            clean_latent = self.model.encode(batch["mix_clean"])  # target branch not detached,
            # as in the paper's recipe: the encoder also learns an easy-to-reach clean latent.
            enc = self.model.encoder  # the SE loss skips padded latent frames
            frames = None if lengths is None else n_frames(lengths, enc.kernel_size, enc.stride)
            l_se = se_loss(
                enhanced, clean_latent, self.hparams["loss"]["se_reduction"], frames=frames
            )
            info["loss_se"] = l_se.detach()
            if self.combiner.linear and not with_stats:
                combined = self._grad([enhanced, w * l_se], shared, [g_w, torch.ones_like(l_se)])
            elif self.combiner.ignores_se and not with_stats:  # gm_released: 2·g_SS, exactly
                combined = self._grad(enhanced, shared, 2.0 * g_w)
            else:
                g_se = self._grad(w * l_se, shared, None, retain=True)
                g_ss = self._grad(enhanced, shared, g_w)
                task_pair = (g_ss, g_se)

        # 4. Global gradients, then the (non-linear) combiner.
        heard = torch.where(silent, torch.zeros_like(sisnr), sisnr).detach().sum()  # no host sync
        scalars = torch.stack((kept_sum.detach(), heard))
        if task_pair is not None:
            g_ss, g_se = task_pair
            if self.sync_task_grads:
                reduced = self._all_reduce_mean([*g_sep, *g_ss, *g_se, scalars])
                k, n = len(g_sep), len(g_ss)
                g_sep, g_ss, g_se = reduced[:k], reduced[k : k + n], reduced[k + n : k + 2 * n]
                scalars = reduced[-1]
                combined, stats = self.combiner.combine(g_ss, g_se, groups, with_stats)
            else:  # negative control: combine per rank, then average
                combined, stats = self.combiner.combine(g_ss, g_se, groups, with_stats)
                reduced = self._all_reduce_mean([*g_sep, *combined, scalars])
                g_sep, combined = reduced[: len(g_sep)], reduced[len(g_sep) : -1]
                scalars = reduced[-1]
            info.update({f"gm/{k}": v for k, v in stats.items() if "/" in k})
        else:
            reduced = self._all_reduce_mean([*g_sep, *combined, scalars])
            g_sep, combined, scalars = reduced[: len(g_sep)], reduced[len(g_sep) : -1], reduced[-1]

        grads = [*combined, *g_sep]
        params = [*shared, *separation]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        # NaN/Inf anywhere on any rank reaches every rank through the all-reduce.
        info["nonfinite"] = ~torch.isfinite(norm)
        info["empty"] = n_keep == 0  # every utterance above the threshold or silent
        info["skip"] = info["nonfinite"] | info["empty"]
        info["grad_norm"] = norm
        info["loss_ss"] = -scalars[0] * world / n_keep.clamp(min=1)
        info["si_snr"] = scalars[1] * world / counts[2].clamp(min=1)
        info["silent"] = counts[1]
        return list(zip(params, grads, strict=True)), info

    @staticmethod
    def _grad(outputs, inputs: list[Tensor], grad_outputs, retain: bool = False) -> list[Tensor]:
        """``torch.autograd.grad`` with zeros for unreached inputs (and no DDP hooks fired)."""
        grads = torch.autograd.grad(
            outputs, inputs, grad_outputs=grad_outputs, retain_graph=retain, allow_unused=True
        )
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, inputs, strict=True)]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        opt = self.optimizers()
        log_now = self._should_log()
        pairs, info = self._gradients(batch, with_stats=log_now)
        opt.zero_grad(set_to_none=True)
        for p, g in pairs:
            p.grad = g
        clip = self.hparams["clip_grad_norm"]
        if clip:
            torch.nn.utils.clip_grads_with_norm_(
                [p for p, _ in pairs], clip, info["grad_norm"], foreach=True
            )
        self._step(opt, info["skip"])
        self._count_bad_steps(info["nonfinite"], info["empty"], check=log_now)
        if log_now:
            self._log_train(info, batch["mix"].shape[0])

    def _step(self, opt, skip: Tensor) -> None:
        """``opt.step()`` unless ``skip``: on the device for fused optimizers, else on the host."""
        inner = opt.optimizer
        if inner.defaults.get("fused") and isinstance(inner, _FOUND_INF_SAFE):
            # Their fused kernels leave parameters, zero-initialised moments and step counts
            # untouched where found_inf is non-zero: no host synchronisation. (Fused SGD is not
            # in the list: a skipped first step would keep uninitialised momentum buffers.)
            inner.found_inf = skip.float()
            try:
                opt.step()
            finally:
                inner.found_inf = None
            return
        if bool(skip):  # host decision (free on the CPU; one sync a step on the GPU)
            for group in inner.param_groups:
                for p in group["params"]:
                    p.grad = None  # torch optimizers leave gradient-less parameters alone
        opt.step()  # still counts as a step for Lightning (max_steps, schedules)

    def _count_bad_steps(self, nonfinite: Tensor, empty: Tensor, check: bool) -> None:
        """Count skipped steps; stop after ``max_bad_steps`` non-finite ones in a row.

        On the GPU the streak is read on logging steps and at epoch ends only (no per-step host
        sync); a running maximum keeps a streak that ended between two reads.
        """
        bad = nonfinite.float()
        if self._bad_run is None or self._bad_run.device != bad.device:
            zero = torch.zeros_like(bad)
            self._bad_run, self._bad_max, self._bad_total, self._empty_total = (zero,) * 4
        self._bad_run = (self._bad_run + bad) * bad  # resets to 0 on a good step
        self._bad_max = torch.maximum(self._bad_max, self._bad_run)
        self._bad_total = self._bad_total + bad
        self._empty_total = self._empty_total + empty.float()
        if check or bad.device.type == "cpu":
            self._check_bad_steps()

    def _check_bad_steps(self) -> None:
        if self._bad_max is None:
            return
        limit = self.hparams["max_bad_steps"]
        worst = int(self._bad_max)
        self._bad_max = self._bad_run.clone()
        if worst >= limit:
            raise NonFiniteTrainingError(
                f"training stopped at step {self.global_step}: {worst} consecutive steps had a "
                "non-finite loss or gradient and were skipped; check the data and lower "
                "model.optimizer.lr (the limit is model.max_bad_steps). The weights were not "
                "changed by those steps."
            )

    def _log_train(self, info: Mapping[str, Tensor], batch_size: int) -> None:
        log = dict(batch_size=batch_size, sync_dist=False)  # already global
        self.log("train/loss_ss", info["loss_ss"], prog_bar=True, **log)
        self.log("train/si_snr", info["si_snr"], prog_bar=True, **log)
        if "loss_se" in info:
            self.log("train/loss_se", info["loss_se"], **log)
        self.log("train/grad_norm", info["grad_norm"], **log)
        self.log("train/skipped_steps", self._bad_total, **log)
        self.log("train/empty_steps", self._empty_total, **log)
        self.log("train/silent_refs", info["silent"], **log)
        self.log("train/lr", self.optimizers().optimizer.param_groups[0]["lr"], **log)
        for key, value in info.items():
            if key.startswith("gm/"):  # gm/<group>/conflict_frac → gm/<group>_conflict_frac
                group, stat = key[3:].split("/")
                name = "cosine" if stat == "cos_mean" else stat
                self.log(f"gm/{group}_{name}", value, **log)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Never write non-finite weights (a skipped step cannot make them, an overflow could)."""
        finite = torch.stack([torch.isfinite(p).all() for p in self.parameters()])
        if not bool(finite.all()):  # one host sync, not one per tensor
            raise NonFiniteTrainingError(
                "refusing to write a checkpoint: the model weights are not finite"
            )

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> None:
        est = self(batch["mix"]).float()
        ref = batch["sources"].float()
        mix = batch["mix"].float()
        lengths = batch.get("lengths")
        sisnr_list, sisnri_list = [], []
        for b in range(est.shape[0]):
            n = int(lengths[b]) if lengths is not None else est.shape[-1]
            e, r = est[b : b + 1, :, :n], ref[b : b + 1, :, :n]
            s, _ = pit_si_snr(e, r)
            base = si_snr(mix[b, :n].expand_as(r[0]), r[0]).mean()
            sisnr_list.append(s[0])
            sisnri_list.append(s[0] - base)
        bs = est.shape[0]
        sisnr = torch.stack(sisnr_list).mean()
        sisnri = torch.stack(sisnri_list).mean()
        self.log(f"{stage}/si_snr", sisnr, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log(f"{stage}/si_snri", sisnri, prog_bar=True, batch_size=bs, sync_dist=True)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _scheduler_due(self) -> bool:
        return self.current_epoch >= self.hparams["scheduler_start_epoch"]  # 0-based epochs

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        sched = self.lr_schedulers()
        metric = self.trainer.callback_metrics.get("val/si_snri")
        if not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) or metric is None:
            return
        if self._scheduler_due() and math.isfinite(float(metric)):
            sched.step(float(metric))

    def on_train_epoch_end(self) -> None:
        self._check_bad_steps()
        sched = self.lr_schedulers()
        if sched is None or isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return
        if self._scheduler_due():
            sched.step()

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        opt = optim.build_optimizer(self.hparams["optimizer"], self.parameters())
        sched = optim.build_scheduler(self.hparams["scheduler"], opt)
        if sched is None:
            return {"optimizer": opt}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
