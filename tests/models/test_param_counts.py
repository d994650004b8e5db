"""Paper-size parameter counts (Hu et al. 2023, Table 1), 2 speakers, within 0.5 %.

Each count is checked against two references that do not come from the model code: an exact
integer pinned here, and a count by hand from the architecture's description (layer by layer,
the formulas of ``nn.Linear``, ``nn.LayerNorm`` and ``nn.LSTM``). The models are built on the
meta device: only shapes are materialised, nothing runs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from usgm.models import build_model, count_parameters

N, D, FFN, H, KERNEL = 256, 256, 1024, 256, 16  # filters, model dim, FFN, LSTM hidden, kernel


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def transformer_stack(n_layers: int) -> int:
    """SepFormer intra/inter model: pre-LN layers (LN, fused QKV, out proj, LN, FFN), final LN."""
    layer = 2 * D + linear(D, 3 * D) + linear(D, D) + 2 * D + linear(D, FFN) + linear(FFN, D)
    return n_layers * layer + 2 * D


def bilstm_step() -> int:
    """DPRNN intra/inter model: one BiLSTM layer (4 gates, two biases per direction) + Linear."""
    return 2 * (4 * H * (D + H) + 2 * 4 * H) + linear(2 * H, D)


def masknet(n_blocks: int, step: int, n_outputs: int) -> int:
    """gLN, 1×1 conv N→D, blocks (two steps, two gLNs), PReLU, 1×1 conv D→C·D, tanh/sigmoid
    gate (two 1×1 convs D→D with bias), 1×1 conv D→N without bias."""
    block = 2 * step + 2 * (2 * D)
    return (
        2 * N + linear(N, D, bias=False) + n_blocks * block + 1 + linear(D, n_outputs * D)
        + linear(D, 2 * D) + linear(D, N, bias=False)
    )  # fmt: skip


def by_hand(backbone: str, use_se: bool, n_src: int = 2) -> int:
    """Encoder and decoder (N·kernel each, no bias), the SS mask net and the optional SE one."""
    if backbone == "sepformer":
        se, ss = masknet(2, transformer_stack(1), 1), masknet(2, transformer_stack(8), n_src)
    else:
        se, ss = masknet(2, bilstm_step(), 1), masknet(6, bilstm_step(), n_src)
    return 2 * N * KERNEL + ss + (se if use_se else 0)


# (config, paper count, exact count pinned from a run of this implementation)
PAPER = [
    ({"backbone": "sepformer", "use_se": True}, 29.2e6, 29_171_458),
    ({"backbone": "sepformer", "use_se": False}, 25.7e6, 25_679_361),
    ({"backbone": "dprnn", "use_se": True}, 19.7e6, 19_684_098),
    ({"backbone": "dprnn", "use_se": False}, 14.6e6, 14_617_089),
]


@pytest.mark.parametrize(("cfg", "paper", "exact"), PAPER)
def test_paper_parameter_counts(cfg: dict[str, Any], paper: float, exact: int) -> None:
    with torch.device("meta"):
        model = build_model({"n_src": 2, **cfg})
    n = count_parameters(model)
    assert abs(n - paper) / paper < 0.005, n
    assert n == exact == by_hand(cfg["backbone"], cfg["use_se"])


@pytest.mark.parametrize("backbone", ["sepformer", "dprnn"])
def test_se_module_size(backbone: str) -> None:
    """The SE mask net alone: 2 blocks of 1 + 1 layers and a single-mask head; its size is the
    difference of the pinned totals with and without SE, and agrees with the count by hand."""
    with_se, without_se = (exact for cfg, _, exact in PAPER if cfg["backbone"] == backbone)
    with torch.device("meta"):
        model = build_model({"backbone": backbone})
    assert model.se_masknet is not None
    step = transformer_stack(1) if backbone == "sepformer" else bilstm_step()
    assert count_parameters(model.se_masknet) == with_se - without_se == masknet(2, step, 1)
