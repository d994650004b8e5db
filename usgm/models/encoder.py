"""Learned analysis/synthesis filterbanks of the time-domain separator.

The encoder is a strided 1-D convolution followed by ReLU and the decoder the matching transposed
convolution, as in Conv-TasNet / DPRNN (Luo et al. 2020) and SepFormer (Subakan et al. 2021); the
unified network of Hu et al. (2023, arXiv 2302.11131) shares one decoder between all speakers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def n_frames(n_samples: int | Tensor, kernel_size: int, stride: int) -> int | Tensor:
    """Number of encoder frames needed so that every one of ``n_samples`` samples is covered.

    Args:
        n_samples: Input length T (≥ 1), or a tensor of lengths (elementwise on its device, no
            host sync: the latent frames of each item of a zero-padded batch).
        kernel_size: Filter length.
        stride: Hop between frames.

    Returns:
        L = max(1, ceil((T − kernel_size) / stride) + 1); int64 of the same shape for a tensor.
    """
    if isinstance(n_samples, Tensor):
        t = n_samples.long()
        frames = torch.div(t - kernel_size + stride - 1, stride, rounding_mode="floor") + 1
        return frames.clamp(min=1)
    if n_samples <= kernel_size:
        return 1
    return -(-(n_samples - kernel_size) // stride) + 1


class Encoder(nn.Module):
    """Conv1d 1→N (no bias) + ReLU; the input is right-padded so that no sample is dropped.

    Args:
        n_filters: Number of basis filters N.
        kernel_size: Filter length in samples.
        stride: Hop in samples.
    """

    def __init__(self, n_filters: int = 256, kernel_size: int = 16, stride: int = 8) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(1, n_filters, kernel_size, stride=stride, bias=False)

    def padded_length(self, n_samples: int) -> int:
        """Length the input is zero-padded to before the convolution (≥ ``n_samples``)."""
        return (n_frames(n_samples, self.kernel_size, self.stride) - 1) * self.stride + (
            self.kernel_size
        )

    def forward(self, x: Tensor) -> Tensor:
        """Encode waveforms.

        Args:
            x: Waveforms, shape (B, T).

        Returns:
            Non-negative latent representation, shape (B, N, L) with L = ``n_frames(T, ...)``.
        """
        if x.dim() != 2:
            raise ValueError(f"Encoder expects a (B, T) waveform batch, got shape {tuple(x.shape)}")
        pad = self.padded_length(x.shape[-1]) - x.shape[-1]
        if pad:
            x = F.pad(x, (0, pad))
        return F.relu(self.conv(x.unsqueeze(1)))


class Decoder(nn.Module):
    """ConvTranspose1d N→1 (no bias), shared by all output channels (speakers).

    Args:
        n_filters: Number of basis filters N.
        kernel_size: Filter length in samples.
        stride: Hop in samples.
    """

    def __init__(self, n_filters: int = 256, kernel_size: int = 16, stride: int = 8) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=stride, bias=False)

    def forward(self, w: Tensor, length: int) -> Tensor:
        """Synthesise waveforms from latent frames.

        Args:
            w: Latent frames, shape (..., N, L) (any leading dims, e.g. (B, C, N, L)).
            length: Output length T; the synthesis is trimmed or zero-padded to it.

        Returns:
            Waveforms, shape (..., T).
        """
        lead = w.shape[:-2]
        y = self.deconv(w.reshape(-1, *w.shape[-2:])).squeeze(1)  # (prod(lead), T_out)
        y = F.pad(y, (0, length - y.shape[-1]))  # a negative pad trims
        return y.reshape(*lead, length)
