"""Encoder / decoder: padding covers every sample, shapes, trimming."""

from __future__ import annotations

import pytest
import torch

from usgm.models.encoder import Decoder, Encoder, n_frames

# (T, padded length, frames) for kernel 16, stride 8, counted by hand: up to 16 samples fit in
# one frame; the last frame must start at or after T − 16, at a multiple of 8 (17 → starts 0, 8:
# 24 samples; 333 → last start 320, 41 frames, 336 samples).
COVER = [(1, 16, 1), (7, 16, 1), (8, 16, 1), (15, 16, 1), (16, 16, 1), (17, 24, 2), (24, 24, 2),
         (333, 336, 41)]  # fmt: skip


@pytest.mark.parametrize(("length", "padded", "frames"), COVER)
def test_encoder_covers_every_sample(length: int, padded: int, frames: int) -> None:
    enc = Encoder(n_filters=6, kernel_size=16, stride=8)
    assert enc.padded_length(length) == padded
    assert n_frames(length, 16, 8) == frames
    x = torch.rand(2, length)  # positive, so that ReLU(positive filters · x) > 0 below
    w = enc(x)
    assert w.shape == (2, 6, frames)
    assert (w >= 0).all()
    # the last sample influences the representation
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        enc.conv.weight.fill_(0.1)
    assert not torch.allclose(enc(x), enc(x2))


def test_encoder_has_no_bias_and_rejects_bad_shape() -> None:
    enc = Encoder(n_filters=4, kernel_size=4, stride=2)
    assert enc.conv.bias is None
    assert sum(p.numel() for p in enc.parameters()) == 4 * 4
    with pytest.raises(ValueError, match="B, T"):
        enc(torch.randn(1, 1, 10))


@pytest.mark.parametrize("length", [5, 20, 21, 40])
def test_decoder_trims_or_pads(length: int) -> None:
    dec = Decoder(n_filters=4, kernel_size=4, stride=2)
    assert dec.deconv.bias is None
    w = torch.randn(3, 2, 4, 9)  # (B, C, N, L): natural length (9 - 1) * 2 + 4 = 20
    y = dec(w, length)
    assert y.shape == (3, 2, length)
    full = dec(w, 20)
    n = min(length, 20)
    torch.testing.assert_close(y[..., :n], full[..., :n])
    if length > 20:
        assert (y[..., 20:] == 0).all()
