"""Chunking / overlap-add, global layer norm, transformer and BiLSTM blocks, the mask net."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from usgm.models.blocks import BiLSTMBlock, TransformerLayer, TransformerStack, sinusoidal_encoding
from usgm.models.dual_path import (
    DualPathBlock,
    DualPathMaskNet,
    GlobalLayerNorm,
    chunk,
    overlap_add,
)


def test_chunk_of_seven_frames_written_out() -> None:
    # L = 7, K = 4, hop 2: one hop of zeros in front, then frames 1..7, then zeros up to
    # 0 0 | 1 2 | 3 4 | 5 6 | 7 0 | 0 0, read as 5 windows of 4 moving by 2.
    x = torch.arange(1.0, 8.0).reshape(1, 7, 1)
    expected = [[0, 0, 1, 2], [1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 0], [7, 0, 0, 0]]
    assert chunk(x, 4)[0, :, :, 0].tolist() == expected


# (L, K, chunks S, zeros in front, zeros behind), counted by hand: one hop (K/2) of zeros in
# front, and behind as many as fill the last hop-block plus one whole hop-block.
PADDING = [
    (1, 2, 2, 1, 1),  # 0 | a | 0
    (7, 4, 5, 2, 3),  # above
    (8, 4, 5, 2, 2),  # 8 frames fill 4 hop-blocks exactly: one block of zeros behind
    (9, 4, 6, 2, 3),
    (23, 10, 6, 5, 7),  # 23 = 4 blocks of 5 + 3: 2 zeros finish block 5, then 5 more
    (250, 250, 3, 125, 125),  # the paper's K at exactly one chunk of frames
]


@pytest.mark.parametrize(("length", "size", "n_chunks", "front", "back"), PADDING)
def test_chunk_padding_and_overlap_add(
    length: int, size: int, n_chunks: int, front: int, back: int
) -> None:
    x = torch.rand(2, length, 3) + 1.0  # no zeros inside the sequence
    c = chunk(x, size)
    assert c.shape == (2, n_chunks, size, 3)
    flat = torch.cat([c[:, 0], *[c[:, s, size // 2 :] for s in range(1, n_chunks)]], dim=1)
    assert flat.shape[1] == front + length + back
    assert (flat[:, :front] == 0).all() and (flat[:, front + length :] == 0).all()
    torch.testing.assert_close(flat[:, front : front + length], x)
    for s in range(1, n_chunks):  # 50 % overlap: each chunk starts with the last one's end
        torch.testing.assert_close(c[:, s, : size // 2], c[:, s - 1, size // 2 :])
    # every frame lies in exactly two chunks
    torch.testing.assert_close(overlap_add(c, length), 2 * x)


def test_overlap_add_matches_naive_loop() -> None:
    y = torch.randn(2, 5, 6, 3)  # S = 5 chunks of K = 6, hop 3
    length = 11
    hop = 3
    acc = torch.zeros(2, (5 + 1) * hop, 3)
    for s in range(5):
        acc[:, s * hop : s * hop + 6] += y[:, s]
    torch.testing.assert_close(overlap_add(y, length), acc[:, hop : hop + length])


def test_global_layer_norm_equals_groupnorm_one_group() -> None:
    x = torch.randn(3, 5, 4, 6)  # channels-last (B, S, K, D)
    gln = GlobalLayerNorm(6)
    gn = nn.GroupNorm(1, 6, eps=1e-8)
    with torch.no_grad():
        for m in (gln, gn):
            m.weight.copy_(torch.randn(6))
            m.bias.copy_(torch.randn(6))
        gn.weight.copy_(gln.weight)
        gn.bias.copy_(gln.bias)
    ref = gn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(gln(x), ref, rtol=1e-5, atol=1e-5)
    # layout-independent: transposed views give the transposed result
    torch.testing.assert_close(gln(x.transpose(1, 2)), ref.transpose(1, 2), rtol=1e-5, atol=1e-5)
    # bf16 input: statistics in float32, output promoted to the fp32 weights
    out = gln(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, gln(x.bfloat16().float()))


def test_sinusoidal_encoding_values() -> None:
    pe = sinusoidal_encoding(7, 8)
    assert pe.shape == (7, 8)
    p, i = 5, 2
    torch.testing.assert_close(pe[p, 2 * i], torch.tensor(math.sin(p / 10000 ** (2 * i / 8))))
    torch.testing.assert_close(pe[p, 2 * i + 1], torch.tensor(math.cos(p / 10000 ** (2 * i / 8))))


def test_transformer_layer_matches_torch_pre_ln_layer() -> None:
    torch.manual_seed(0)
    d, h, f = 16, 4, 32
    mine = TransformerLayer(d, h, f).eval()
    ref = nn.TransformerEncoderLayer(
        d, h, f, dropout=0.0, batch_first=True, norm_first=True, layer_norm_eps=1e-6
    ).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(mine.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(mine.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(mine.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(mine.out_proj.bias)
        ref.linear1.load_state_dict(mine.ffn_in.state_dict())
        ref.linear2.load_state_dict(mine.ffn_out.state_dict())
        ref.norm1.load_state_dict(mine.norm1.state_dict())
        ref.norm2.load_state_dict(mine.norm2.state_dict())
    x = torch.randn(3, 11, d)
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in ref.parameters())


def test_transformer_stack_and_bilstm_shapes() -> None:
    x = torch.randn(4, 9, 16)
    stack = TransformerStack(2, 16, 2, 32)
    assert stack(x).shape == x.shape
    # positional encoding makes it order-aware
    perm = torch.randperm(9)
    assert not torch.allclose(stack(x)[:, perm], stack(x[:, perm]), atol=1e-4)
    lstm = BiLSTMBlock(16, 8)
    assert lstm(x).shape == x.shape
    assert lstm.proj.in_features == 16
    with pytest.raises(ValueError, match="divisible"):
        TransformerLayer(10, 3, 8)


def _tiny_masknet(n_outputs: int, chunk_size: int = 6) -> DualPathMaskNet:
    blocks = [DualPathBlock(TransformerStack(1, 8, 2, 16), TransformerStack(1, 8, 2, 16), 8)]
    return DualPathMaskNet(
        n_filters=5, d_model=8, n_outputs=n_outputs, chunk_size=chunk_size, blocks=blocks
    )


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_masknet_shape_nonnegative_and_batch_independent(n_outputs: int) -> None:
    net = _tiny_masknet(n_outputs).eval()
    w = torch.rand(3, 5, 17)
    m = net(w)
    assert m.shape == (3, n_outputs, 5, 17)
    assert (m >= 0).all()
    # no mixing between batch items through the reshapes / transposes
    torch.testing.assert_close(net(w[1:2]), m[1:2], rtol=1e-5, atol=1e-6)


def test_dual_path_block_is_residual_with_norms() -> None:
    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    block = DualPathBlock(Zero(), Zero(), 4)
    x = torch.randn(2, 3, 6, 4)
    # zero models: gLN(0) = bias = 0 → identity
    torch.testing.assert_close(block(x), x)


def test_masknet_rejects_odd_chunk() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        _tiny_masknet(1, chunk_size=5)
