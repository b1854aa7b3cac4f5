"""Small U-Net backbone, 2-D or 3-D, of configurable width and depth, shared by every network sampler.

The backbone maps an image ``(B, in_channels, *S)`` to features ``(B, width, *S)`` at full resolution;
each model (deterministic U-Net, SSN, MC dropout, Prob. U-Net) puts its own 1×1 heads on top. Each
spatial size must be divisible by ``2 ** (depth - 1)``; :func:`pad_to_multiple` pads an input so.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBlock", "Encoder", "UNet", "conv", "pad_to_multiple", "crop_to"]


def conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
    """``nn.Conv2d`` or ``nn.Conv3d`` with 'same' padding."""
    cls = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
    return cls(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def _dropout(spatial_dims: int, p: float) -> nn.Module:
    # Spatial (channel-wise) dropout, as in the MC-dropout U-Nets of papers/002.
    return {2: nn.Dropout2d, 3: nn.Dropout3d}[spatial_dims](p) if p > 0 else nn.Identity()


class ConvBlock(nn.Sequential):
    """Two (3×3 convolution, group norm, leaky ReLU) layers, then optional spatial dropout.

    Group norm rather than batch norm: its statistics do not depend on the batch, so a model behaves the
    same when it samples one slice or a batch, and dropout left on at inference does not shift them.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.0):
        groups = min(8, out_channels)
        super().__init__(
            conv(spatial_dims, in_channels, out_channels), nn.GroupNorm(groups, out_channels), nn.LeakyReLU(0.1),
            conv(spatial_dims, out_channels, out_channels), nn.GroupNorm(groups, out_channels), nn.LeakyReLU(0.1),
            _dropout(spatial_dims, dropout),
        )


def _pool(spatial_dims: int, x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2) if spatial_dims == 2 else F.avg_pool3d(x, 2)


def _channels(width: int, depth: int) -> list[int]:
    return [width * 2 ** level for level in range(depth)]


class Encoder(nn.Module):
    """Contracting path: ``depth`` conv blocks, ×2 average pooling between them, channels doubling.

    ``forward`` returns the features of every level, finest first.
    """

    def __init__(self, spatial_dims: int, in_channels: int, width: int, depth: int, dropout: float = 0.0):
        super().__init__()
        channels = _channels(width, depth)
        self.spatial_dims = spatial_dims
        self.blocks = nn.ModuleList(
            ConvBlock(spatial_dims, c_in, c_out, dropout)
            for c_in, c_out in zip([in_channels, *channels[:-1]], channels))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, block in enumerate(self.blocks):
            if level:
                x = _pool(self.spatial_dims, x)
            x = block(x)
            features.append(x)
        return features


class UNet(nn.Module):
    """U-Net backbone: encoder, then a decoder that upsamples (nearest, ×2) and concatenates the skips.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels : int
        Image channels (1 for a single MRI).
    width : int
        Channels of the first level; level ``l`` has ``width · 2^l``.
    depth : int
        Number of resolution levels (``depth − 1`` poolings).
    dropout : float
        Spatial dropout probability after every conv block (0: none; MC dropout keeps it on at inference).

    ``forward(x)``: ``x`` of shape ``(B, in_channels, *S)`` → features ``(B, width, *S)``.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, width: int = 16, depth: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if depth < 1 or width < 1 or in_channels < 1:
            raise ValueError(f"depth, width and in_channels must be positive, got {depth}, {width}, {in_channels}")
        self.spatial_dims = spatial_dims
        self.depth = depth
        self.out_channels = width
        self.encoder = Encoder(spatial_dims, in_channels, width, depth, dropout)
        channels = self.encoder.channels
        self.decoder = nn.ModuleList(
            ConvBlock(spatial_dims, channels[level] + channels[level + 1], channels[level], dropout)
            for level in range(depth - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        x = features[-1]
        for level in reversed(range(self.depth - 1)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.decoder[level](torch.cat([features[level], x], dim=1))
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` (B, C, *S) at their end (edge values) to a multiple of ``multiple``.

    Returns the padded tensor and the original spatial shape (for :func:`crop_to`).
    """
    shape = tuple(x.shape[2:])
    pads: list[int] = []
    for size in reversed(shape):
        pads += [0, (-size) % multiple]
    if any(pads):
        x = F.pad(x, pads, mode="replicate")
    return x, shape


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` back to ``shape``."""
    index = (Ellipsis, *(slice(0, s) for s in shape))
    return x[index]
