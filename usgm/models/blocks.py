"""Sequence models used inside the dual-path blocks (intra-chunk and inter-chunk).

* :class:`TransformerStack`: the SepFormer intra/inter "SBTransformer" (Subakan et al. 2021,
  "Attention is all you need in speech separation"): sinusoidal positional encoding added at the
  input, ``n_layers`` pre-LayerNorm encoder layers (multi-head self-attention + ReLU FFN), and a
  final LayerNorm. Attention goes through ``F.scaled_dot_product_attention`` (fused flash /
  memory-efficient kernels on GPU) with one fused QKV projection.
* :class:`BiLSTMBlock`: the DPRNN step (Luo et al. 2020): one bidirectional LSTM layer followed by
  a linear projection 2H → D.

Both map (batch, length, D) → (batch, length, D), batch-first.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

#: Initialisations of the fused QKV projection: ``mha`` as ``nn.MultiheadAttention`` (used by
#: SpeechBrain's SepFormer and so by the paper's code: Xavier-uniform over the stacked
#: (3D, D) weight, zero biases of QKV and output), ``linear`` PyTorch's ``nn.Linear`` default.
ATTENTION_INITS = ("mha", "linear")


def sinusoidal_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoidal positional encoding of Vaswani et al. (2017), as used by SepFormer.

    PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim)).

    Args:
        length: Sequence length.
        dim: Feature size (even).
        device: Where to build it.

    Returns:
        float32 tensor, shape (length, dim).
    """
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    angles = pos * inv_freq  # (length, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)


@lru_cache(maxsize=64)
def _cached_encoding(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    # Built outside inference mode, so an entry first made during validation stays usable in
    # training; bounded, since whole-utterance evaluation sees many lengths.
    with torch.inference_mode(False):
        return sinusoidal_encoding(length, dim, device).to(dtype)


def positional_encoding(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """:func:`sinusoidal_encoding` in ``dtype``, cached per shape (computed in-graph when compiled).

    Returns:
        Shape (length, dim).
    """
    if torch.compiler.is_compiling():  # inductor folds it into the graph; no cache lookups
        return sinusoidal_encoding(length, dim, device).to(dtype)
    return _cached_encoding(length, dim, device, dtype)


class TransformerLayer(nn.Module):
    """Pre-LayerNorm transformer encoder layer with fused QKV and SDPA attention.

    x ← x + Drop(MHSA(LN1(x))); x ← x + Drop(W2 · Drop(ReLU(W1 · LN2(x)))).

    Args:
        d_model: Feature size D.
        n_heads: Number of attention heads (divides D).
        d_ffn: Hidden size of the feed-forward network.
        dropout: Dropout on attention weights, FFN hidden units and both residual branches.
        attn_init: Initialisation of the attention projections, one of :data:`ATTENTION_INITS`.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ffn: int, dropout: float = 0.0, attn_init: str = "mha"
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if attn_init not in ATTENTION_INITS:
            raise ValueError(f"attn_init must be one of {ATTENTION_INITS}, got {attn_init!r}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model, eps=1e-6)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-6)
        self.ffn_in = nn.Linear(d_model, d_ffn)
        self.ffn_out = nn.Linear(d_ffn, d_model)
        if attn_init == "mha":  # as nn.MultiheadAttention._reset_parameters
            nn.init.xavier_uniform_(self.qkv.weight)
            nn.init.zeros_(self.qkv.bias)
            nn.init.zeros_(self.out_proj.bias)

    def attention(self, x: Tensor) -> Tensor:
        """Multi-head self-attention (no mask), the replaceable part of the layer.

        Args:
            x: Normalised input, shape (B, L, D).

        Returns:
            Attention output before the residual, shape (B, L, D).
        """
        b, n, d = x.shape
        h = self.n_heads
        # (B, L, 3, H, Dh) → three (B, H, L, Dh) strided views; no copies before the kernel.
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, H, L, Dh)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer.

        Args:
            x: Shape (B, L, D).

        Returns:
            Shape (B, L, D).
        """
        x = x + F.dropout(self.attention(self.norm1(x)), self.dropout, self.training)
        h = F.dropout(F.relu(self.ffn_in(self.norm2(x))), self.dropout, self.training)
        return x + F.dropout(self.ffn_out(h), self.dropout, self.training)


class TransformerStack(nn.Module):
    """SepFormer intra- or inter-chunk transformer: PE at the input, N layers, final LayerNorm.

    Args:
        n_layers: Number of :class:`TransformerLayer`.
        d_model: Feature size D (even, for the positional encoding).
        n_heads: Attention heads.
        d_ffn: FFN hidden size.
        dropout: Dropout probability.
        attn_init: See :class:`TransformerLayer`.
        checkpoint: Recompute each layer's activations in the backward pass instead of storing
            them (activation checkpointing: about a third more compute, memory of one layer).
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ffn: int,
        dropout: float = 0.0,
        attn_init: str = "mha",
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even for the positional encoding, got {d_model}")
        self.checkpoint = checkpoint
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, n_heads, d_ffn, dropout, attn_init) for _ in range(n_layers)
        )
        # Pre-LN layers leave the residual stream unnormalised: close it with a LayerNorm.
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stack.

        Args:
            x: Shape (B, L, D).

        Returns:
            Shape (B, L, D).
        """
        x = x + positional_encoding(x.shape[1], x.shape[2], x.device, x.dtype)
        for layer in self.layers:
            if self.checkpoint and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.norm(x)


class BiLSTMBlock(nn.Module):
    """DPRNN intra/inter step: one BiLSTM layer (H per direction) + Linear 2H → D.

    Args:
        d_model: Input/output feature size D.
        hidden: LSTM hidden size per direction H.
        checkpoint: Recompute the block's activations in the backward pass (see
            :class:`TransformerStack`).
    """

    def __init__(self, d_model: int, hidden: int, checkpoint: bool = False) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.lstm = nn.LSTM(d_model, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Shape (B, L, D).

        Returns:
            Shape (B, L, D).
        """
        if self.checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        y, _ = self.lstm(x)
        return self.proj(y)
