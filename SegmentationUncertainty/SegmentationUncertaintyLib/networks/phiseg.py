"""PHiSeg (Baumgartner et al., MICCAI 2019; papers/001), scaled down.

A hierarchy of ``L`` spatial latent variables ``z_0 … z_{L−1}`` at resolutions 1, 1/2, …, 1/2^{L−1}:

* prior net ``p(z_l | z_{l+1}, x)`` and posterior net ``q(z_l | z_{l+1}, x, y)``, identical structure, no
  shared weights: an encoder over the image (and, for the posterior, the one-hot label), then an upward
  path that at each latent level maps the encoder features and the upsampled coarser ``z`` to the mean and
  standard deviation of an axis-aligned normal (eqs. 3–4);
* likelihood net: decodes ``z_{L−1}`` to a coarse segmentation and adds, level by level, a residual
  refinement from each finer ``z_l`` (the "addition layers" of Fig. 2).

Loss (eq. 2 per pixel): the cross-entropy of every level's output upsampled (nearest) to full size (deep
supervision) plus ``Σ_l KL(q_l ‖ p_l)``, each KL summed over its latent channels and averaged over its
positions — the same as the paper's weights ``β_l = 4^l`` (2-D) on KL sums, which offset the smaller
number of positions at coarser levels. As in the reference code, during training the prior's upward path
is conditioned on the posterior's samples, so each level's KL compares like with like. Samples at test
time: prior net and likelihood net only.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationNetwork
from .unet import ConvBlock, Encoder, conv

__all__ = ["PHiSeg"]


def _up(x: torch.Tensor, size: tuple[int, ...] | None = None) -> torch.Tensor:
    return F.interpolate(x, size=size, scale_factor=None if size is not None else 2, mode="nearest")


class _LatentNet(nn.Module):
    """Prior or posterior net: encoder, then per latent level (coarsest first) a normal over ``z_l``."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, depth: int, latent_levels: int,
                 latent_dim: int):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.latent_levels = latent_levels
        self.encoder = Encoder(spatial_dims, in_channels, width, depth)
        channels = self.encoder.channels
        # The coarsest latent level also sees the (upsampled) features of the deeper, non-latent levels.
        deep = sum(channels[latent_levels:])
        self.mixers = nn.ModuleList()
        for level in range(latent_levels):
            c_in = channels[level] + (deep if level == latent_levels - 1 else latent_dim)
            self.mixers.append(ConvBlock(spatial_dims, c_in, channels[level]))
        self.mu = nn.ModuleList(conv(spatial_dims, channels[l], latent_dim, 1) for l in range(latent_levels))
        self.sigma = nn.ModuleList(conv(spatial_dims, channels[l], latent_dim, 1) for l in range(latent_levels))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        top = self.latent_levels - 1
        size = features[top].shape[2:]
        deep = [features[top]] + [_up(f, size) for f in features[top + 1:]]
        return features[:top] + [torch.cat(deep, dim=1)]

    def latents(self, features: list[torch.Tensor], given: list[torch.Tensor] | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Means, standard deviations and samples of every level (finest first).

        ``given``: samples to condition the upward path on instead of this net's own (training the prior).
        """
        mus, sigmas, zs = [None] * self.latent_levels, [None] * self.latent_levels, [None] * self.latent_levels
        for level in reversed(range(self.latent_levels)):
            h = features[level]
            if level < self.latent_levels - 1:
                coarser = zs[level + 1] if given is None else given[level + 1]
                h = torch.cat([h, _up(coarser, h.shape[2:])], dim=1)
            h = self.mixers[level](h)
            mus[level] = self.mu[level](h)
            sigmas[level] = F.softplus(self.sigma[level](h)) + 1e-4
            zs[level] = mus[level] + sigmas[level] * torch.randn_like(mus[level])
        return mus, sigmas, zs


class _LikelihoodNet(nn.Module):
    """Decoder: coarse segmentation from ``z_{L−1}``, then residual refinements from finer ``z_l``."""

    def __init__(self, spatial_dims: int, width: int, latent_levels: int, latent_dim: int, n_classes: int):
        super().__init__()
        channels = [width * 2 ** level for level in range(latent_levels)]
        self.blocks = nn.ModuleList()
        for level in range(latent_levels):
            c_in = latent_dim + (channels[level + 1] if level < latent_levels - 1 else 0)
            self.blocks.append(ConvBlock(spatial_dims, c_in, channels[level]))
        self.heads = nn.ModuleList(conv(spatial_dims, channels[l], n_classes, 1) for l in range(latent_levels))

    def forward(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logits of every level (finest first), each at its own resolution."""
        levels = len(zs)
        outputs: list[torch.Tensor] = [None] * levels
        h = None
        for level in reversed(range(levels)):
            x = zs[level] if h is None else torch.cat([zs[level], _up(h, zs[level].shape[2:])], dim=1)
            h = self.blocks[level](x)
            out = self.heads[level](h)
            if level < levels - 1:
                out = out + _up(outputs[level + 1], out.shape[2:])
            outputs[level] = out
        return outputs


def _kl_normal(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) elementwise."""
    return (torch.log(sigma_p / sigma_q) + (sigma_q ** 2 + (mu_q - mu_p) ** 2) / (2 * sigma_p ** 2) - 0.5)


class PHiSeg(SegmentationNetwork):
    """Scaled-down PHiSeg: ``latent_levels`` latent levels of ``latent_dim`` channels each.

    Parameters
    ----------
    width : int
        Channels at full resolution (doubling per level).
    depth : int
        Total resolution levels of the prior/posterior encoders (≥ ``latent_levels``; the paper: 7 and 5).
    latent_levels : int
        ``L``.
    latent_dim : int
        Channels of each ``z_l`` (2 in the paper).
    beta : float
        Weight of the KL terms (1 in the paper).
    """

    architecture = "phiseg"
    one_pass_sampling = False

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, n_classes: int = 2, width: int = 16,
                 depth: int = 4, latent_levels: int = 3, latent_dim: int = 2, beta: float = 1.0):
        if not 1 <= latent_levels <= depth:
            raise ValueError(f"latent_levels must be between 1 and depth ({depth}), got {latent_levels}")
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, n_classes=n_classes, width=width,
                         depth=depth, latent_levels=latent_levels, latent_dim=latent_dim, beta=beta)
        self.beta = float(beta)
        self.prior = _LatentNet(spatial_dims, in_channels, width, depth, latent_levels, latent_dim)
        self.posterior = _LatentNet(spatial_dims, in_channels + n_classes, width, depth, latent_levels, latent_dim)
        self.likelihood = _LikelihoodNet(spatial_dims, width, latent_levels, latent_dim, n_classes)

    def _one_hot(self, target: torch.Tensor) -> torch.Tensor:
        return torch.movedim(F.one_hot(target, self.n_classes), -1, 1).to(torch.float32)

    def loss(self, image: torch.Tensor, target: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        q_mu, q_sigma, q_z = self.posterior.latents(self.posterior.encode(torch.cat([image, self._one_hot(target)], 1)))
        p_mu, p_sigma, _ = self.prior.latents(self.prior.encode(image), given=q_z)
        outputs = self.likelihood(q_z)
        size = target.shape[1:]
        reconstruction = sum(F.cross_entropy(_up(out, size) if out.shape[2:] != size else out, target)
                             for out in outputs)
        kl = sum(_kl_normal(q_mu[l], q_sigma[l], p_mu[l], p_sigma[l]).sum(1).mean() for l in range(len(outputs)))
        return reconstruction + self.beta * kl

    def prepare_sampling(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> Callable[[int], torch.Tensor]:
        features = self.prior.encode(image)

        def draw(n: int) -> torch.Tensor:
            batch = [f.repeat_interleave(n, dim=0) for f in features]
            _, _, zs = self.prior.latents(batch)
            logits = self.likelihood(zs)[0]
            return logits.reshape(image.shape[0], n, *logits.shape[1:]).transpose(0, 1)
        return draw
