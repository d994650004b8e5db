"""Encoder / decoder: padding covers every sample, shapes, trimming."""

from __future__ import annotations

import pytest
import torch

from usgm.models.encoder import Decoder, Encoder, n_frames


@pytest.mark.parametrize("length", [1, 7, 8, 15, 16, 17, 24, 333])
def test_encoder_covers_every_sample(length: int) -> None:
    enc = Encoder(n_filters=6, kernel_size=16, stride=8)
    padded = enc.padded_length(length)
    assert padded >= length
    assert padded - length < 16  # minimal: never a whole extra frame
    assert (padded - 16) % 8 == 0
    x = torch.rand(2, length)  # positive, so that ReLU(positive filters · x) > 0 below
    w = enc(x)
    assert w.shape == (2, 6, n_frames(length, 16, 8))
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
