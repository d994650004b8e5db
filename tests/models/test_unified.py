"""The unified separator: shapes, stages, parameter groups, config handling, bf16, plain hparams."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from usgm.losses import se_loss, ss_loss
from usgm.models import (
    DEFAULT_CONFIG,
    SeparatorOutput,
    UnifiedSeparator,
    build_model,
    count_parameters,
    resolve_config,
)
from usgm.models.presets import tiny_config


def tiny(**over: Any) -> dict[str, Any]:
    # a shorter encoder than the preset keeps these shape tests at odd, small lengths
    return tiny_config(**{"kernel_size": 4, "stride": 2, **over})


@pytest.mark.parametrize("backbone", ["sepformer", "dprnn"])
@pytest.mark.parametrize("n_src", [2, 3])
@pytest.mark.parametrize("use_se", [True, False])
def test_forward_backward_shapes(backbone: str, n_src: int, use_se: bool) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(backbone=backbone, n_src=n_src, use_se=use_se))
    mix = torch.randn(2, 201)  # odd length
    out = model(mix)
    assert isinstance(out, SeparatorOutput)
    # Frames of 4 samples every 2: the last one must hold sample 200, so it starts at 198
    # (frames 0, 2, …, 198: 100 of them; one zero pads the input to 202 samples).
    n_frames = 100
    assert out.est.shape == (2, n_src, 201)
    assert out.latent.shape == out.enhanced.shape == (2, 16, n_frames)
    sources = torch.randn(2, n_src, 201)
    loss = ss_loss(out.est, sources) + 0.1 * se_loss(out.enhanced, model.encode(sources.sum(1)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    if use_se:
        assert model.se_masknet is not None
        assert not torch.equal(out.enhanced, out.latent)
    else:
        assert model.se_masknet is None
        assert out.enhanced is out.latent
        assert model.parameter_groups()["se_masknet"] == []


def reference_forward(model: UnifiedSeparator, mix: torch.Tensor) -> SeparatorOutput:
    """Hu et al. (2023) Fig. 1 written out with plain tensor ops for T = 97, kernel 4, stride 2.

    Encoder and decoder are spelt out (frames by ``unfold``, synthesis by adding each frame's
    samples in a loop); the two mask nets are used as given (tests/models/test_dual_path.py
    checks their parts against torch's own layers).
    """
    b, t = mix.shape
    assert t == 97 and model.encoder.kernel_size == 4 and model.encoder.stride == 2
    # Frames start at 0, 2, …, 94; the one at 94 covers samples 94..97: one zero appended.
    frames = torch.cat([mix, mix.new_zeros(b, 1)], dim=1).unfold(1, 4, 2)  # (B, 48, 4)
    assert frames.shape[1] == 48
    latent = torch.relu(torch.einsum("blk,nk->bnl", frames, model.encoder.conv.weight[:, 0]))
    enhanced = latent
    if model.se_masknet is not None:  # w_e = w ⊙ SE-mask(w)
        enhanced = latent * model.se_masknet(latent)[:, 0]
    masked = enhanced[:, None] * model.ss_masknet(enhanced)  # w_e ⊙ m_i, (B, C, N, L)
    pieces = torch.einsum("bcnl,nk->bclk", masked, model.decoder.deconv.weight[:, 0])
    out = mix.new_zeros(b, model.n_src, 2 * 47 + 4)
    for frame in range(48):
        out[..., 2 * frame : 2 * frame + 4] += pieces[:, :, frame]
    return SeparatorOutput(est=out[..., :t], latent=latent, enhanced=enhanced)


@pytest.mark.parametrize(
    ("backbone", "n_src", "use_se"),
    [("sepformer", 2, True), ("sepformer", 3, True), ("dprnn", 2, True), ("sepformer", 2, False)],
)
def test_forward_matches_a_reference_written_out(backbone: str, n_src: int, use_se: bool) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(backbone=backbone, n_src=n_src, use_se=use_se)).eval()
    mix = torch.randn(2, 97)
    with torch.no_grad():
        out, ref = model(mix), reference_forward(model, mix)
    torch.testing.assert_close(out.latent, ref.latent, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.enhanced, ref.enhanced, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.est, ref.est, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.encode(mix), ref.latent, rtol=1e-5, atol=1e-6)
    if use_se:  # the SE stage is not the identity here, so the reference tells its wiring apart
        assert not torch.allclose(ref.enhanced, ref.latent, atol=1e-3)


@pytest.mark.parametrize("n_src", [2, 3])
def test_softmax_masks_partition_the_enhanced_mixture(n_src: int) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(n_src=n_src, ss_mask="softmax")).eval()
    mix = torch.randn(2, 97)
    out = model(mix)
    masks = model.separation_masks(out.enhanced)
    torch.testing.assert_close(masks.sum(1), torch.ones_like(masks[:, 0]))
    # the decoder is linear without bias: the outputs add up to the decoded SE output
    whole = model.decode(out.enhanced, torch.ones_like(masks[:, :1]), 97)[:, 0]
    torch.testing.assert_close(out.est.sum(1), whole, rtol=1e-4, atol=1e-5)
    relu = build_model(tiny(n_src=n_src)).eval()
    relu.load_state_dict(model.state_dict())  # same weights, other activation
    assert not torch.allclose(relu(mix).est.sum(1), whole, atol=1e-3)


@pytest.mark.parametrize("backbone", ["sepformer", "dprnn"])
def test_batch_items_are_independent(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(backbone=backbone)).eval()
    mix = torch.randn(3, 150)
    with torch.no_grad():
        full = model(mix).est
        one = model(mix[2:3]).est
    torch.testing.assert_close(one, full[2:3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("use_se", [True, False])
def test_parameter_groups_partition_parameters(use_se: bool) -> None:
    model = build_model(tiny(use_se=use_se))
    shared, separation = model.shared_parameters(), model.separation_parameters()
    ids = [id(p) for _, p in (*shared, *separation)]
    assert len(ids) == len(set(ids))  # disjoint
    assert set(ids) == {id(p) for p in model.parameters()}  # complete
    # Roles by the modules they live in, read from the network's attributes directly.
    assert {id(p) for _, p in separation} == {
        id(p) for m in (model.ss_masknet, model.decoder) for p in m.parameters()
    }
    expected_shared = [model.encoder] + ([model.se_masknet] if use_se else [])
    assert {id(p) for _, p in shared} == {id(p) for m in expected_shared for p in m.parameters()}
    assert all(n.startswith(("encoder.", "se_masknet.")) for n, _ in shared)


def test_bf16_autocast_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_model(tiny())
    mix, sources = torch.randn(2, 120), torch.randn(2, 2, 120)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(mix)
        loss = ss_loss(out.est, sources, threshold=30.0) + 0.1 * se_loss(
            out.enhanced, model.encode(sources.sum(1))
        )
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_config_defaults_and_validation() -> None:
    full = resolve_config({})
    assert full == DEFAULT_CONFIG
    assert resolve_config({"backbone": "dprnn"})["ss"]["n_blocks"] == 6
    assert resolve_config({"backbone": "dprnn", "ss": {"n_blocks": 3}})["ss"]["n_blocks"] == 3
    assert resolve_config({"se": {"n_blocks": 4}})["se"] == {
        "n_blocks": 4,
        "n_intra": 1,
        "n_inter": 1,
    }
    bad = [
        ({"n_speakers": 2}, "n_speakers"),
        ({"backbone": "convtasnet"}, "backbone"),
        ({"chunk_size": 9}, "chunk_size"),
        ({"d_model": 30, "n_heads": 4}, "n_heads"),
        ({"se": {"depth": 2}}, "se.depth"),
        ({"ss": {"n_blocks": 0}}, "ss.n_blocks"),
        ({"n_src": 1.5}, "n_src"),
        ({"use_se": "yes"}, "use_se"),
        ({"dropout": 1.0}, "dropout"),
        ({"ss_mask": "sigmoid"}, "ss_mask"),
    ]
    for cfg, key in bad:
        with pytest.raises(ValueError, match=key):
            build_model(cfg)
    with pytest.raises(ValueError, match="B, T"):
        build_model(tiny())(torch.randn(2, 1, 100))


def test_config_is_plain_data_and_rebuilds_identically() -> None:
    torch.manual_seed(0)
    model = build_model(tiny(backbone="dprnn", n_src=3)).eval()
    buf = io.BytesIO()
    torch.save({"model": model.config, "state_dict": model.state_dict()}, buf)
    buf.seek(0)
    blob = torch.load(buf, weights_only=True)
    again = UnifiedSeparator(blob["model"]).eval()
    again.load_state_dict(blob["state_dict"])
    mix = torch.randn(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(mix).est, model(mix).est)
    assert count_parameters(again) == count_parameters(model)
