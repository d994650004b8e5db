"""The SpeechBrain-built peer: the same unified SE+SS SepFormer from SpeechBrain's own blocks.

Used by the benchmarks to put usgm's numbers beside what a researcher gets by assembling the
paper's model from SpeechBrain (``pip install 'usgm[bench]'``): SpeechBrain's ``Encoder``,
``Dual_Path_Model`` with ``SBTransformerBlock`` intra/inter models (pre-LN, sinusoidal positional
encoding, ``nn.MultiheadAttention``), and ``Decoder``, at the shapes of usgm's paper-size model;
the same losses (usgm's PIT SI-SNR and latent MSE) and the GM step as the paper's released code
structures it (SE backward kept, SS backward into ``.grad``, a per-tensor projection loop),
with the SE gradients kept apart so that the step is the correct GM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from usgm.losses import se_loss, ss_loss


def _masknet(n_spk: int, n_blocks: int, n_layers: int) -> nn.Module:
    from speechbrain.lobes.models.dual_path import Dual_Path_Model, SBTransformerBlock

    def block() -> nn.Module:
        return SBTransformerBlock(
            num_layers=n_layers,
            d_model=256,
            nhead=8,
            d_ffn=1024,
            dropout=0.0,
            use_positional_encoding=True,
            norm_before=True,
        )

    return Dual_Path_Model(
        num_spks=n_spk,
        in_channels=256,
        out_channels=256,
        num_layers=n_blocks,
        K=250,
        intra_model=block(),
        inter_model=block(),
        norm="ln",
        linear_layer_after_inter_intra=False,
        skip_around_intra=True,
    )


class SpeechBrainUnified(nn.Module):
    """Encoder → SE Dual_Path_Model (1 mask) → SS Dual_Path_Model (C masks) → shared decoder.

    Args:
        n_src: Speakers C.
    """

    def __init__(self, n_src: int = 2) -> None:
        super().__init__()
        from speechbrain.lobes.models.dual_path import Decoder, Encoder

        self.n_src = n_src
        self.encoder = Encoder(kernel_size=16, out_channels=256)
        self.se_masknet = _masknet(1, 2, 1)
        self.ss_masknet = _masknet(n_src, 2, 8)
        self.decoder = Decoder(
            in_channels=256, out_channels=1, kernel_size=16, stride=8, bias=False
        )

    def forward(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        """mix (B, T) → (estimates (B, C, T), enhanced latent (B, N, L))."""
        w = self.encoder(mix)
        w_e = w * self.se_masknet(w)[0]
        masks = self.ss_masknet(w_e)  # (C, B, N, L)
        est = torch.stack([self.decoder(w_e * m) for m in masks], dim=1)
        t = mix.shape[-1]
        est = est[..., :t] if est.shape[-1] >= t else nn.functional.pad(est, (0, t - est.shape[-1]))
        return est, w_e

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.se_masknet.parameters()]


def gm_step(
    model: SpeechBrainUnified,
    opt: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    autocast: torch.dtype | None,
    se_weight: float = 0.1,
    clip: float = 5.0,
) -> Tensor:
    """One GM training step, structured as the paper's released code (correct GM).

    Returns:
        The SS loss (detached).
    """
    shared = model.shared_parameters()
    with torch.autocast("cuda", dtype=autocast, enabled=autocast is not None):
        est, w_e = model(batch["mix"])
        l_ss = ss_loss(est, batch["sources"])
        l_se = se_weight * se_loss(w_e, model.encoder(batch["mix_clean"]))
    g_se = torch.autograd.grad(l_se, shared, retain_graph=True, allow_unused=True)
    opt.zero_grad(set_to_none=True)
    l_ss.backward()
    for p, a in zip(shared, g_se, strict=True):  # per-tensor projection, as released
        if a is None or p.grad is None:
            continue
        b = p.grad
        dot = torch.sum(a * b)
        if dot < 0:
            a = a - dot / torch.sum(b * b) * b
        p.grad = b + a
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return l_ss.detach()
