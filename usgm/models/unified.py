"""The unified speech enhancement + separation network of Hu et al. (2023, arXiv 2302.11131).

    w   = Encoder(mixture)                       (B, N, L)
    w_e = w ⊙ SE-mask(w)                         enhanced latent (the SE output stays latent)
    m_i = SS-mask(w_e)_i                         i = 1..C
    ŝ_i = Decoder(w_e ⊙ m_i)                     shared decoder

Both mask networks are :class:`~usgm.models.dual_path.DualPathMaskNet` with SepFormer
(Subakan et al. 2021) or DPRNN (Luo et al. 2020) blocks. The forward pass is split into
:meth:`UnifiedSeparator.encode`, :meth:`~UnifiedSeparator.enhance`,
:meth:`~UnifiedSeparator.separation_masks` and :meth:`~UnifiedSeparator.decode` so each stage can
be compiled or replaced on its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .blocks import ATTENTION_INITS, BiLSTMBlock, TransformerStack
from .dual_path import MASK_ACTIVATIONS, DualPathBlock, DualPathMaskNet
from .encoder import Decoder, Encoder

BACKBONES = ("sepformer", "dprnn")

#: Paper-size defaults (2-speaker SepFormer + SE). ``ss.n_blocks`` defaults to 6 for DPRNN.
DEFAULT_CONFIG: dict[str, Any] = {
    "n_src": 2,
    "backbone": "sepformer",
    "use_se": True,
    "n_filters": 256,
    "kernel_size": 16,
    "stride": 8,
    "chunk_size": 250,
    "se": {"n_blocks": 2, "n_intra": 1, "n_inter": 1},
    "ss": {"n_blocks": 2, "n_intra": 8, "n_inter": 8},
    "d_model": 256,
    "n_heads": 8,
    "d_ffn": 1024,
    "dropout": 0.0,
    "rnn_hidden": 256,
    "ss_mask": "relu",
    "attn_init": "mha",
    "activation_checkpointing": False,
}
#: SS mask activations: ``softmax`` over the speakers makes the separated latents a partition of
#: the enhanced latent (mixture consistency, Wisdom et al. 2019).
SS_MASKS = MASK_ACTIVATIONS
_DPRNN_SS_BLOCKS = 6
_STAGE_KEYS = ("n_blocks", "n_intra", "n_inter")


@dataclass
class SeparatorOutput:
    """What the losses need from one forward pass.

    Attributes:
        est: Separated waveforms, shape (B, C, T).
        latent: Encoder output w of the input mixture, shape (B, N, L).
        enhanced: SE output w_e = w ⊙ SE-mask, shape (B, N, L) (``latent`` itself without SE).
    """

    est: Tensor
    latent: Tensor
    enhanced: Tensor


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model config key {key!r} must be a positive integer, got {value!r}")
    return value


def resolve_config(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a model config and fill in defaults.

    Args:
        cfg: Partial config (plain dict or any Mapping, e.g. an OmegaConf DictConfig); keys as
            in :data:`DEFAULT_CONFIG`, nested ``se`` / ``ss`` may be partial.

    Returns:
        A complete plain-data dict (safe for ``torch.load(weights_only=True)``).

    Raises:
        ValueError: Unknown key or bad value; the message names the key.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; known: {sorted(DEFAULT_CONFIG)}")
    out = copy.deepcopy(DEFAULT_CONFIG)
    backbone = cfg.get("backbone", out["backbone"])
    if backbone not in BACKBONES:
        raise ValueError(
            f"model config key 'backbone' must be one of {BACKBONES}, got {backbone!r}"
        )
    if backbone == "dprnn":
        out["ss"]["n_blocks"] = _DPRNN_SS_BLOCKS
    for key, value in cfg.items():
        if key in ("se", "ss"):
            if not isinstance(value, Mapping):
                raise ValueError(f"model config key {key!r} must be a mapping, got {value!r}")
            bad = sorted(set(value) - set(_STAGE_KEYS))
            if bad:
                raise ValueError(f"unknown model config key(s) {[f'{key}.{b}' for b in bad]}")
            for sub, v in value.items():
                out[key][sub] = _positive_int(f"{key}.{sub}", v)
        elif key == "backbone":
            out[key] = str(value)
        elif key == "ss_mask":
            if value not in SS_MASKS:
                raise ValueError(
                    f"model config key 'ss_mask' must be one of {SS_MASKS}, got {value!r}"
                )
            out[key] = value
        elif key in ("use_se", "activation_checkpointing"):
            if not isinstance(value, bool):
                raise ValueError(f"model config key {key!r} must be a bool, got {value!r}")
            out[key] = value
        elif key == "attn_init":
            if value not in ATTENTION_INITS:
                raise ValueError(
                    f"model config key 'attn_init' must be one of {ATTENTION_INITS}, got {value!r}"
                )
            out[key] = value
        elif key == "dropout":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ValueError(f"model config key 'dropout' must be in [0, 1), got {value!r}")
            out[key] = float(value)
        else:
            out[key] = _positive_int(key, value)
    if out["chunk_size"] % 2 or out["chunk_size"] < 2:
        raise ValueError(f"model config key 'chunk_size' must be even, got {out['chunk_size']}")
    if out["backbone"] == "sepformer" and out["d_model"] % out["n_heads"]:
        raise ValueError(
            f"model config key 'd_model' ({out['d_model']}) must be divisible by "
            f"'n_heads' ({out['n_heads']})"
        )
    if out["backbone"] == "sepformer" and out["d_model"] % 2:
        raise ValueError(f"model config key 'd_model' must be even, got {out['d_model']}")
    return out


def _make_masknet(cfg: Mapping[str, Any], stage: str, n_outputs: int) -> DualPathMaskNet:
    """Build the SE (``stage='se'``) or SS (``'ss'``) mask network from a resolved config."""
    st, d = cfg[stage], cfg["d_model"]
    ckpt = cfg["activation_checkpointing"]

    def seq_model(n_layers: int) -> nn.Module:
        if cfg["backbone"] == "sepformer":
            return TransformerStack(
                n_layers, d, cfg["n_heads"], cfg["d_ffn"], cfg["dropout"], cfg["attn_init"], ckpt
            )
        return BiLSTMBlock(d, cfg["rnn_hidden"], ckpt)  # DPRNN: one BiLSTM layer per step

    blocks = [
        DualPathBlock(seq_model(st["n_intra"]), seq_model(st["n_inter"]), d)
        for _ in range(st["n_blocks"])
    ]
    act = cfg["ss_mask"] if stage == "ss" else "relu"  # one SE mask: a softmax would be all ones
    return DualPathMaskNet(cfg["n_filters"], d, n_outputs, cfg["chunk_size"], blocks, act)


class UnifiedSeparator(nn.Module):
    """Encoder → SE mask net → SS mask net → shared decoder (Hu et al. 2023, Fig. 1).

    Build it with :func:`build_model` (or pass a config mapping here). With ``use_se=False`` the
    SE stage is absent (``se_masknet is None``) and the model is plain SepFormer / DPRNN.

    Args:
        cfg: Model config, see :data:`DEFAULT_CONFIG`; validated by :func:`resolve_config`.

    Attributes:
        config: The resolved plain-dict config.
        n_src: Number of speakers C.
        encoder, se_masknet, ss_masknet, decoder: The four stages.
    """

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = resolve_config(cfg)
        c = self.config
        self.n_src: int = c["n_src"]
        self.use_se: bool = c["use_se"]
        self.encoder = Encoder(c["n_filters"], c["kernel_size"], c["stride"])
        # The SE mask net predicts a single mask (it enhances the mixture, not the speakers).
        self.se_masknet = _make_masknet(c, "se", 1) if self.use_se else None
        self.ss_masknet = _make_masknet(c, "ss", self.n_src)
        self.decoder = Decoder(c["n_filters"], c["kernel_size"], c["stride"])

    # -- stages -------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Encoder(x); also the SE target Encoder(Σ sources).

        Args:
            x: Waveforms, shape (B, T).

        Returns:
            Latent, shape (B, N, L).
        """
        return self.encoder(x)

    def enhance(self, latent: Tensor) -> Tensor:
        """SE stage in the latent space: w_e = w ⊙ SE-mask(w).

        Args:
            latent: Shape (B, N, L).

        Returns:
            Enhanced latent, shape (B, N, L) (``latent`` unchanged without SE).
        """
        if self.se_masknet is None:
            return latent
        return latent * self.se_masknet(latent)[:, 0]

    def separation_masks(self, enhanced: Tensor) -> Tensor:
        """SS masks m_i = SS-mask(w_e).

        Args:
            enhanced: Shape (B, N, L).

        Returns:
            Masks, shape (B, C, N, L).
        """
        return self.ss_masknet(enhanced)

    def decode(self, enhanced: Tensor, masks: Tensor, length: int) -> Tensor:
        """ŝ_i = Decoder(w_e ⊙ m_i), trimmed or padded to ``length``.

        Args:
            enhanced: Shape (B, N, L).
            masks: Shape (B, C, N, L).
            length: Output length T.

        Returns:
            Waveforms, shape (B, C, T).
        """
        return self.decoder(enhanced.unsqueeze(1) * masks, length)

    def forward(self, mix: Tensor) -> SeparatorOutput:
        """Separate a batch of mixtures.

        Args:
            mix: Mixtures, shape (B, T).

        Returns:
            :class:`SeparatorOutput` with est (B, C, T), latent and enhanced (B, N, L).
        """
        if mix.dim() != 2:
            raise ValueError(
                f"UnifiedSeparator expects mix of shape (B, T), got {tuple(mix.shape)}"
            )
        latent = self.encode(mix)
        enhanced = self.enhance(latent)
        est = self.decode(enhanced, self.separation_masks(enhanced), mix.shape[-1])
        return SeparatorOutput(est=est, latent=latent, enhanced=enhanced)

    # -- parameter roles (the two-task step) ---------------------------------------------------
    #: Stages both losses reach: the gradient combiner (GM, …) acts on their parameters.
    SHARED_STAGES = ("encoder", "se_masknet")
    #: Stages only the separation loss reaches: they get g_SS alone.
    SEPARATION_STAGES = ("ss_masknet", "decoder")

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Named parameters per stage, the one definition of which parameters GM treats as shared.

        Returns:
            ``{"encoder": [...], "se_masknet": [...], "ss_masknet": [...], "decoder": [...]}``,
            each a list of ``("<stage>.<name>", parameter)`` in registration order
            (``se_masknet`` empty without SE); together exactly ``named_parameters()``.
        """
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for stage in (*self.SHARED_STAGES, *self.SEPARATION_STAGES):
            module = getattr(self, stage)
            named = [] if module is None else list(module.named_parameters())
            groups[stage] = [(f"{stage}.{n}", p) for n, p in named]
        return groups

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Encoder + SE mask-net parameters (both tasks' gradients reach them), named."""
        groups = self.parameter_groups()
        return [item for stage in self.SHARED_STAGES for item in groups[stage]]

    def separation_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """SS mask-net + decoder parameters (the separation loss alone reaches them), named."""
        groups = self.parameter_groups()
        return [item for stage in self.SEPARATION_STAGES for item in groups[stage]]


def build_model(cfg: Mapping[str, Any] | None = None) -> UnifiedSeparator:
    """Build a :class:`UnifiedSeparator` from a plain config mapping (defaults = paper size)."""
    return UnifiedSeparator(cfg)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (optionally only those requiring grad)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
