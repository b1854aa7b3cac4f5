"""Probabilistic U-Net (Kohl et al., NeurIPS 2018), the baseline of PHiSeg and SSN, scaled down.

A U-Net gives features at full resolution; a global latent vector ``z`` (``latent_dim`` = 6) drawn from a
prior net ``p(z | x)`` (posterior ``q(z | x, y)`` in training) is tiled over the image, concatenated with
the features and mapped to logits by three 1×1 convolutions. Loss per pixel: cross-entropy +
``β KL(q ‖ p) / S`` (the ELBO divided by the number of pixels ``S``). The U-Net runs once per image;
each sample costs only the prior draw and the 1×1 combiner.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationNetwork
from .phiseg import _kl_normal
from .unet import Encoder, UNet, conv

__all__ = ["ProbabilisticUNet"]


class _GlobalLatentNet(nn.Module):
    """Encoder + global average pooling + 1×1 → mean and standard deviation of ``z`` (B, latent_dim)."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, depth: int, latent_dim: int):
        super().__init__()
        self.encoder = Encoder(spatial_dims, in_channels, width, depth)
        self.head = nn.Linear(self.encoder.channels[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.encoder(x)[-1].flatten(2).mean(-1)
        mu, raw = self.head(pooled).chunk(2, dim=1)
        return mu, F.softplus(raw) + 1e-4


class ProbabilisticUNet(SegmentationNetwork):
    """Scaled-down probabilistic U-Net (global latent of ``latent_dim`` channels)."""

    architecture = "prob_unet"
    one_pass_sampling = False

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, n_classes: int = 2, width: int = 16,
                 depth: int = 3, latent_dim: int = 6, beta: float = 1.0):
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, n_classes=n_classes, width=width,
                         depth=depth, latent_dim=latent_dim, beta=beta)
        self.beta = float(beta)
        self.backbone = UNet(spatial_dims, in_channels, width, depth)
        self.prior = _GlobalLatentNet(spatial_dims, in_channels, width, depth, latent_dim)
        self.posterior = _GlobalLatentNet(spatial_dims, in_channels + n_classes, width, depth, latent_dim)
        self.combiner = nn.Sequential(
            conv(spatial_dims, width + latent_dim, width, 1), nn.ReLU(),
            conv(spatial_dims, width, width, 1), nn.ReLU(),
            conv(spatial_dims, width, n_classes, 1))

    def _combine(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tiled = z.reshape(*z.shape, *(1,) * (features.dim() - 2)).expand(-1, -1, *features.shape[2:])
        return self.combiner(torch.cat([features, tiled], dim=1))

    def loss(self, image: torch.Tensor, target: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        one_hot = torch.movedim(F.one_hot(target, self.n_classes), -1, 1).to(image.dtype)
        q_mu, q_sigma = self.posterior(torch.cat([image, one_hot], dim=1))
        p_mu, p_sigma = self.prior(image)
        z = q_mu + q_sigma * torch.randn_like(q_mu)
        logits = self._combine(self.backbone(image), z)
        kl = _kl_normal(q_mu, q_sigma, p_mu, p_sigma).sum(1).mean()
        return F.cross_entropy(logits, target) + self.beta * kl / target[0].numel()

    def prepare_sampling(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> Callable[[int], torch.Tensor]:
        features = self.backbone(image)
        mu, sigma = self.prior(image)

        def draw(n: int) -> torch.Tensor:
            z = mu.unsqueeze(0) + sigma.unsqueeze(0) * torch.randn((n, *mu.shape), dtype=mu.dtype, device=mu.device)
            batch = features.unsqueeze(0).expand(n, *features.shape).flatten(0, 1)
            logits = self._combine(batch, z.flatten(0, 1))
            return logits.reshape(n, *features.shape[:1], *logits.shape[1:])
        return draw
