"""Paper-size parameter counts (Hu et al. 2023, Table 1), 2 speakers, within 0.5 %.

The models are built on the meta device: only shapes are materialised, nothing runs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from usgm.models import build_model, count_parameters

# (config, paper count, exact count of this implementation)
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
    assert n == exact  # pins the design (1 SE mask, gates with bias, per-block norms, …)


def test_se_module_size() -> None:
    """The SE mask net alone: 2 blocks of 1 + 1 transformer layers and a single-mask head."""
    with torch.device("meta"):
        model = build_model({})
    assert model.se_masknet is not None
    assert count_parameters(model.se_masknet) == 29_171_458 - 25_679_361
