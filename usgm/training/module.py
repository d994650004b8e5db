"""The LightningModule: one network, four training methods, manual optimization.

Methods (``method`` hyperparameter), after Hu et al., "Unifying Speech Enhancement and Separation
with Gradient Modulation for End-to-End Noise-Robust Speech Separation", ICASSP 2023
(arXiv 2302.11131):

- ``ss_only``: the separator alone (no SE module); loss L_SS.
- ``mtl``: unified SE+SS network, one backward of L_SS + w·L_SE.
- ``gm``: gradient modulation (paper, Sec. 2.3). On encoder and SE-module parameters the SE
  gradient is projected onto the normal plane of the SS gradient when they conflict; every other
  parameter gets g_SS only.
- ``gm_released``: what the authors' released code does under its pinned torch 1.8: the stored
  "SE gradients" are views of ``.grad`` that ``zero_grad`` zeroes in place and the SS backward
  overwrites, so encoder and SE parameters get 2·g_SS and the SE loss has no effect. A
  reproduction ablation, not a recommendation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn

from usgm.gm import modulate_and_stats
from usgm.losses import pit_si_snr, se_loss, si_snr, ss_loss
from usgm.models import build_model

METHODS = ("ss_only", "mtl", "gm", "gm_released")

DEFAULT_OPTIM: dict[str, Any] = {
    "name": "adam",
    "lr": 1.5e-4,
    "weight_decay": 0.0,
    "momentum": 0.0,
    "fused": None,
}
DEFAULT_SCHEDULER: dict[str, Any] = {"factor": 0.5, "patience": 2, "start_epoch": 0, "min_lr": 0.0}
DEFAULT_LOSS: dict[str, Any] = {"se_weight": 0.1, "se_reduction": "sum", "threshold": None}


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, key: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in model.{key}; expected {sorted(defaults)}")
    return {**defaults, **given}


class SeparationModule(pl.LightningModule):
    """Trains a :class:`usgm.models.UnifiedSeparator` with one of :data:`METHODS`.

    All hyperparameters are plain data (dicts, numbers, strings) so checkpoints load with
    ``torch.load(weights_only=True)``; the network is rebuilt from ``hparams.model``.

    Args:
        model: network config for :func:`usgm.models.build_model`. ``use_se`` is derived from
            ``method`` (``ss_only`` has no SE module).
        method: one of ``ss_only``, ``mtl``, ``gm``, ``gm_released``.
        sample_rate: audio rate in Hz (stored for evaluation and export).
        optim: ``name`` (``adam``, the paper's, or ``sgd``), ``lr``, ``weight_decay``,
            ``momentum`` (sgd only), ``fused`` (adam; None: fused on CUDA).
        scheduler: ReduceLROnPlateau on validation SI-SNRi: ``factor``, ``patience``,
            ``start_epoch`` (no halving before it), ``min_lr``.
        loss: ``se_weight`` (paper 0.1), ``se_reduction`` (paper ``sum``), ``threshold`` (dB;
            utterances already above it are left out of the SS mean, paper recipe 30).
        clip_grad_norm: L2 gradient clipping of the final update; None or 0 disables.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        method: str = "gm",
        sample_rate: int = 8000,
        optim: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        clip_grad_norm: float | None = 5.0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"model.method={method!r} is not one of {list(METHODS)}")
        model = {**dict(model), "use_se": method != "ss_only"}
        optim = _merge(DEFAULT_OPTIM, optim, "optim")
        scheduler = _merge(DEFAULT_SCHEDULER, scheduler, "scheduler")
        loss = _merge(DEFAULT_LOSS, loss, "loss")
        if loss["se_reduction"] not in ("sum", "mean"):
            raise ValueError(
                f"model.loss.se_reduction must be 'sum' or 'mean', got {loss['se_reduction']!r}"
            )
        self.save_hyperparameters(
            {
                "model": model,
                "method": method,
                "sample_rate": int(sample_rate),
                "optim": optim,
                "scheduler": scheduler,
                "loss": loss,
                "clip_grad_norm": clip_grad_norm,
            }
        )
        self.automatic_optimization = False
        # False only for the negative control of the DDP equivalence check (averaging
        # per-rank projections, which is wrong because the projection is not linear).
        self.sync_se_grads = True
        self.model = build_model(model)

    # ------------------------------------------------------------------ parameters
    @property
    def method(self) -> str:
        return self.hparams["method"]

    def shared_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Encoder + SE-module parameters: the ones both tasks update (GM applies here)."""
        for module_name in ("encoder", "se_masknet"):
            module = getattr(self.model, module_name, None)
            if module is None:
                continue
            for name, p in module.named_parameters():
                if p.requires_grad:
                    yield f"{module_name}.{name}", p

    # ------------------------------------------------------------------ steps
    def forward(self, mix: Tensor) -> Tensor:
        """Separate. mix (B, T) → estimates (B, C, T)."""
        return self.model(mix).est

    def _losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        out = self.model(batch["mix"])
        ref = batch["sources"]
        l_ss = ss_loss(out.est, ref, threshold=self.hparams["loss"]["threshold"])
        result = {"ss": l_ss, "est": out.est}
        if self.method != "ss_only":
            # Target branch not detached, as in the paper's recipe: the encoder also learns
            # to make the clean-mixture latent easy to reach.
            clean_latent = self.model.encode(batch["mix_clean"])
            result["se"] = se_loss(
                out.enhanced, clean_latent, reduction=self.hparams["loss"]["se_reduction"]
            )
        return result

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        opt = self.optimizers()
        losses = self._losses(batch)
        l_ss = losses["ss"]
        w = self.hparams["loss"]["se_weight"]
        opt.zero_grad(set_to_none=True)

        if self.method == "ss_only":
            self.manual_backward(l_ss)
        elif self.method == "mtl":
            self.manual_backward(l_ss + w * losses["se"])
        elif self.method == "gm":
            self._gm_backward(l_ss, w * losses["se"])
        else:
            self._gm_released_backward(l_ss, w * losses["se"])

        self._clip_gradients(opt)
        opt.step()

        bs = batch["mix"].shape[0]
        self.log("train/loss_ss", l_ss.detach(), prog_bar=True, batch_size=bs)
        if "se" in losses:
            self.log("train/loss_se", losses["se"].detach(), batch_size=bs)
        with torch.no_grad():
            sisnr, _ = pit_si_snr(losses["est"].detach().float(), batch["sources"].float())
        self.log("train/si_snr", sisnr.mean(), prog_bar=True, batch_size=bs)
        self.log("train/lr", opt.param_groups[0]["lr"], batch_size=bs)
        return l_ss.detach()

    def _clip_gradients(self, opt) -> None:
        """L2-norm clipping of the final (combined) update."""
        clip = self.hparams["clip_grad_norm"]
        if not clip:
            return
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            # fp32 / bf16-mixed: gradients are unscaled, so clip directly; this also works with
            # fused Adam, which Lightning's clip_gradients refuses under mixed precision.
            torch.nn.utils.clip_grad_norm_(self.parameters(), clip, foreach=True)
        else:  # 16-mixed: Lightning unscales before clipping
            self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def _gm_backward(self, l_ss: Tensor, l_se: Tensor) -> None:
        """g = g_SS + g_SE' on shared parameters, g_SS elsewhere (paper Eq. 5–6)."""
        names, shared = zip(*self.shared_named_parameters(), strict=True)
        # autograd.grad keeps g_SE apart from .grad and does not trigger DDP's all-reduce.
        g_se = torch.autograd.grad(l_se, shared, retain_graph=True, allow_unused=True)
        g_se = [torch.zeros_like(p) if g is None else g for g, p in zip(g_se, shared, strict=True)]
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed and self.sync_se_grads:
            # The projection is not linear: project the global gradients, never average
            # per-rank projections. One flat all-reduce keeps the collective count fixed.
            flat = torch.cat([g.reshape(-1) for g in g_se])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            g_se = list(torch.split(flat, [g.numel() for g in g_se]))
            g_se = [g.view_as(p) for g, p in zip(g_se, shared, strict=True)]
        self.manual_backward(l_ss)  # DDP all-reduces g_SS here
        g_ss = [p.grad for p in shared]
        combined, stats = modulate_and_stats(g_se, g_ss, groups=self._groups(names))
        for p, g in zip(shared, combined, strict=True):
            p.grad = g
        self._log_gm(stats)

    def _gm_released_backward(self, l_ss: Tensor, l_se: Tensor) -> None:
        """Replays the released code's mechanism under torch 1.8 (see module docstring).

        The SE gradients are placed in ``.grad`` and kept by reference; zeroing in place and the
        SS backward then turn the stored tensors into g_SS, so the projection sees two equal
        gradients and returns 2·g_SS.
        """
        opt = self.optimizers()
        names, shared = zip(*self.shared_named_parameters(), strict=True)
        # autograd.grad (not a second DDP backward) for the SE pass; same values in .grad.
        g_se = torch.autograd.grad(l_se, shared, retain_graph=True, allow_unused=True)
        for p, g in zip(shared, g_se, strict=True):
            p.grad = torch.zeros_like(p) if g is None else g.clone()
        stored = [p.grad for p in shared]  # references, as the released code keeps them
        opt.zero_grad(set_to_none=False)  # torch 1.8 semantics: zero in place
        self.manual_backward(l_ss)  # accumulates in place into the stored tensors
        if any(s is not p.grad for s, p in zip(stored, shared, strict=True)):
            raise RuntimeError("gm_released: .grad was replaced, not accumulated in place")
        g_ss = [g.clone() for g in stored]
        combined, stats = modulate_and_stats(stored, g_ss, groups=self._groups(names))
        for p, g in zip(shared, combined, strict=True):
            p.grad = g
        self._log_gm(stats)

    @staticmethod
    def _groups(names: tuple[str, ...]) -> list[str]:
        return ["se" if n.startswith("se_masknet.") else "encoder" for n in names]

    def _log_gm(self, stats: dict[str, Tensor]) -> None:
        """GM telemetry per module: fraction of tensors in conflict, mean cosine g_SE·g_SS."""
        for group in ("encoder", "se"):
            if f"{group}/conflict_frac" in stats:
                self.log(f"gm/{group}_conflict_frac", stats[f"{group}/conflict_frac"])
                self.log(f"gm/{group}_cosine", stats[f"{group}/cos_mean"])

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

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        sched = self.lr_schedulers()
        metric = self.trainer.callback_metrics.get("val/si_snri")
        if sched is None or metric is None:
            return
        if self.current_epoch >= self.hparams["scheduler"]["start_epoch"]:  # 0-based epochs
            sched.step(float(metric))

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        o, s = self.hparams["optim"], self.hparams["scheduler"]
        if o["name"] == "adam":
            fused = o["fused"]
            if fused is None:  # fused Adam on CUDA, except with a 16-bit loss scaler
                scaler = getattr(self._trainer, "precision", "") if self._trainer else ""
                fused = next(self.parameters()).is_cuda and not str(scaler).startswith("16")
            opt = torch.optim.Adam(
                self.parameters(),
                lr=o["lr"],
                weight_decay=o["weight_decay"],
                fused=bool(fused) or None,
            )
        elif o["name"] == "sgd":
            opt = torch.optim.SGD(
                self.parameters(),
                lr=o["lr"],
                momentum=o["momentum"],
                weight_decay=o["weight_decay"],
            )
        else:
            raise ValueError(f"model.optim.name must be 'adam' or 'sgd', got {o['name']!r}")
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=s["factor"], patience=s["patience"], min_lr=s["min_lr"]
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
