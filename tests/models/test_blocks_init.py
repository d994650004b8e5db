"""Attention initialisation: ``mha`` as torch's own nn.MultiheadAttention, ``linear`` as nn.Linear."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from usgm.models.blocks import TransformerLayer


def test_mha_init_matches_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    layer = TransformerLayer(256, 8, 1024, attn_init="mha")
    reference = nn.MultiheadAttention(256, 8)  # the block SpeechBrain's SepFormer uses
    bound = math.sqrt(6 / (256 + 3 * 256))  # Xavier-uniform over the stacked (3D, D) matrix
    for w in (layer.qkv.weight, reference.in_proj_weight):
        assert float(w.abs().max()) <= bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.count_nonzero(layer.qkv.bias) == 0
    assert torch.count_nonzero(layer.out_proj.bias) == 0
    assert torch.count_nonzero(reference.in_proj_bias) == 0


def test_linear_init_keeps_pytorch_linear_defaults() -> None:
    torch.manual_seed(0)
    layer = TransformerLayer(256, 8, 1024, attn_init="linear")
    bound = 1 / math.sqrt(256)  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    assert float(layer.qkv.weight.abs().max()) <= bound
    assert float(layer.qkv.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.count_nonzero(layer.qkv.bias) > 700  # random, not zeroed
    with pytest.raises(ValueError, match="attn_init"):
        TransformerLayer(16, 2, 32, attn_init="xavier")
