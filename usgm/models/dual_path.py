"""Dual-path processing: chunking, overlap-add, dual-path blocks and the mask network.

The structure follows DPRNN (Luo et al. 2020, "Dual-path RNN") as generalised by SepFormer
(Subakan et al. 2021) and used twice, as SE and SS mask networks, by Hu et al. (2023,
arXiv 2302.11131):

    GroupNorm → 1×1 conv → chunk (K, hop K/2) → N × [intra model, norm, residual;
    inter model, norm, residual] → PReLU → 1×1 conv to D·C → overlap-add → tanh·sigmoid gate
    → 1×1 conv → mask (ReLU, or a softmax across the C outputs).

Everything here is channels-last: chunked tensors are (B, S, K, D) (S chunks of K frames, D
features), so the intra model sees a free view (B·S, K, D) and only the inter step transposes.
1×1 convolutions over channels are written as ``nn.Linear`` on the last dim (same weights and
parameter count). The per-utterance norm ("ln" = GroupNorm(1, D) in SepFormer) is
:class:`GlobalLayerNorm`, computed with multi-dim reductions in float32.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Mask activations of :class:`DualPathMaskNet`: ``relu`` (SepFormer) or ``softmax`` across the
#: C outputs (masks sum to one, so the masked latents add up to the input).
MASK_ACTIVATIONS = ("relu", "softmax")


class GlobalLayerNorm(nn.Module):
    """Global layer norm (= GroupNorm with one group) for channels-last tensors.

    Mean and variance are taken over every dim but the batch; the affine is per channel (last
    dim). Statistics are computed in float32 (safe under bf16 autocast); the result has the
    promoted dtype of input and weight (float32 for an fp32 model under autocast).

    Args:
        dim: Channel count D.
        eps: Added to the variance.
    """

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise.

        Args:
            x: Shape (B, ..., D).

        Returns:
            Same shape as ``x``.
        """
        out_dtype = torch.promote_types(x.dtype, self.weight.dtype)
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=tuple(range(1, x.dim())), keepdim=True, correction=0)
        scale = self.weight.float() * torch.rsqrt(var + self.eps)  # (B, 1, ..., D)
        shift = self.bias.float() - mean * scale
        return torch.addcmul(shift, xf, scale).to(out_dtype)


def chunk(x: Tensor, size: int) -> Tensor:
    """Split a sequence into chunks of ``size`` frames with 50 % overlap (hop = size / 2).

    The sequence is zero-padded by one hop on the left and by at least one hop on the right, so
    every frame lies in exactly two chunks (as in DPRNN's segmentation).

    Args:
        x: Shape (B, L, D).
        size: Chunk length K (even).

    Returns:
        Chunks, shape (B, S, K, D) with S = ceil(L / (K/2)) + 1.
    """
    b, n, d = x.shape
    hop = size // 2
    n_chunks = -(-n // hop) + 1
    right = n_chunks * hop - n  # total padded length (S + 1)·hop
    v = F.pad(x, (0, 0, hop, right)).view(b, n_chunks + 1, hop, d)
    # chunk s = hop-blocks s and s+1
    return torch.cat((v[:, :-1], v[:, 1:]), dim=2)


def overlap_add(y: Tensor, length: int) -> Tensor:
    """Inverse of :func:`chunk` up to a factor 2: overlap-add chunks with hop K/2.

    Because the hop is half a chunk, hop-block j of the padded sequence is the first half of
    chunk j plus the second half of chunk j − 1; the first and last blocks are padding only.

    Args:
        y: Chunks, shape (B, S, K, D) as produced by :func:`chunk` for a sequence of ``length``.
        length: Original sequence length L.

    Returns:
        Shape (B, L, D) (a view with the batch stride of the padded sequence).
    """
    b, _, k, d = y.shape
    hop = k // 2
    blocks = y[:, 1:, :hop] + y[:, :-1, hop:]  # (B, S-1, hop, D), starts at sample 0
    if torch.compiler.is_compiling():
        # (S-1)·hop equals L when L is a multiple of the hop: the slice below is then the whole
        # (contiguous) tensor, otherwise a strided view, and torch.compile guards on which (two
        # graphs for varying whole-utterance lengths). One more zero block makes it always a
        # strict slice, one graph for every L; inductor fuses the pad into the add. Eager runs
        # skip it (the values are the same either way).
        blocks = F.pad(blocks, (0, 0, 0, 0, 0, 1))
    return blocks.reshape(b, -1, d)[:, :length]


class DualPathBlock(nn.Module):
    """One dual-path block: intra-chunk model, norm, residual; inter-chunk model, norm, residual.

    x ← x + gLN(intra(x)) over chunks (length K); x ← x + gLN(inter(x)) across chunks (length S).

    Args:
        intra: Sequence model (b, K, D) → (b, K, D).
        inter: Sequence model (b, S, D) → (b, S, D).
        d_model: Feature size D.
    """

    def __init__(self, intra: nn.Module, inter: nn.Module, d_model: int) -> None:
        super().__init__()
        self.intra = intra
        self.intra_norm = GlobalLayerNorm(d_model)
        self.inter = inter
        self.inter_norm = GlobalLayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Shape (B, S, K, D).

        Returns:
            Shape (B, S, K, D).
        """
        b, s, k, d = x.shape
        y = self.intra(x.reshape(b * s, k, d)).reshape(b, s, k, d)
        x = x + self.intra_norm(y)
        z = self.inter(x.transpose(1, 2).reshape(b * k, s, d)).reshape(b, k, s, d)
        return x + self.inter_norm(z).transpose(1, 2)


class DualPathMaskNet(nn.Module):
    """Dual-path mask estimator producing ``n_outputs`` non-negative masks.

    Args:
        n_filters: Encoder channels N (mask size).
        d_model: Feature size D inside the dual-path blocks.
        n_outputs: Number of masks C (speakers for SS; 1 for the SE mask).
        chunk_size: Chunk length K (even; hop K/2).
        blocks: The dual-path blocks, applied in order.
        activation: ``relu`` (SepFormer's masks) or ``softmax`` across the C outputs, so that
            the masks sum to one in every bin and the masked latents add up to the input.
    """

    def __init__(
        self,
        n_filters: int,
        d_model: int,
        n_outputs: int,
        chunk_size: int,
        blocks: Iterable[DualPathBlock],
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if chunk_size < 2 or chunk_size % 2:
            raise ValueError(f"chunk_size must be an even integer ≥ 2, got {chunk_size}")
        if activation not in MASK_ACTIVATIONS:
            raise ValueError(
                f"mask activation must be one of {MASK_ACTIVATIONS}, got {activation!r}"
            )
        self.activation = activation
        self.d_model = d_model
        self.n_outputs = n_outputs
        self.chunk_size = chunk_size
        self.norm = GlobalLayerNorm(n_filters)  # GroupNorm(1, N)
        self.in_proj = nn.Linear(n_filters, d_model, bias=False)  # 1×1 conv N → D
        self.blocks = nn.ModuleList(blocks)
        self.prelu = nn.PReLU()
        self.out_proj = nn.Linear(d_model, d_model * n_outputs)  # 1×1 conv D → D·C
        # tanh branch and sigmoid branch (two 1×1 convs D → D with bias) in one matmul
        self.gate = nn.Linear(d_model, 2 * d_model)
        self.mask_proj = nn.Linear(d_model, n_filters, bias=False)  # 1×1 conv D → N

    def forward(self, w: Tensor) -> Tensor:
        """Estimate masks.

        Args:
            w: Encoder output, shape (B, N, L).

        Returns:
            Masks ≥ 0, shape (B, C, N, L) (a permuted view of a (B, L, C, N) tensor).
        """
        n_frames = w.shape[-1]
        x = self.in_proj(self.norm(w.transpose(1, 2)))  # (B, L, D)
        x = chunk(x, self.chunk_size)  # (B, S, K, D)
        for block in self.blocks:
            x = block(x)
        x = self.out_proj(self.prelu(x))  # (B, S, K, C·D)
        # Split only the feature dim: a reshape across the sliced time dim of overlap_add's view
        # would be a view when L is a multiple of the hop and a copy otherwise, a branch that
        # torch.compile guards on (two graphs, and a recompile, for varying whole-utterance L).
        x = overlap_add(x, n_frames).unflatten(-1, (self.n_outputs, self.d_model))  # (B, L, C, D)
        t, g = self.gate(x).chunk(2, dim=-1)
        m = self.mask_proj(torch.tanh(t) * torch.sigmoid(g))  # (B, L, C, N)
        m = F.softmax(m, dim=2) if self.activation == "softmax" else F.relu(m)
        return m.permute(0, 2, 3, 1)
