"""The interface every network sampler implements, and the deterministic U-Net baseline.

Tensors: images ``(B, in_channels, *S)`` float (already intensity-normalised), targets ``(B, *S)`` int64
class indices, region-of-interest masks ``(B, 1, *S)`` (1 inside, 0 outside), logits ``(B, C, *S)`` and
logit samples ``(N, B, C, *S)``. ``*S`` is ``(Y, X)`` in 2-D and ``(Z, Y, X)`` in 3-D. Randomness comes
from torch's global generator: callers seed it inside ``torch.random.fork_rng`` (as
:class:`~SegmentationUncertaintyLib.networks.sampler.NetworkSampler` does) so that the same seed gives the
same samples without touching the user's generator state.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .unet import UNet, conv

__all__ = ["SegmentationNetwork", "DeterministicUNet"]


class SegmentationNetwork(nn.Module):
    """Base class: a network that yields segmentation samples for an image.

    Subclasses set :attr:`architecture` (the name written in model files) and implement :meth:`loss` and
    :meth:`sample_logits`. The constructor keyword arguments are kept in :attr:`config` so that
    :func:`~SegmentationUncertaintyLib.networks.io.save_model` can rebuild the same architecture.
    """

    architecture: ClassVar[str] = ""
    #: True when all samples of an image come from a single forward pass of the network.
    one_pass_sampling: ClassVar[bool] = False

    def __init__(self, *, spatial_dims: int, in_channels: int, n_classes: int, **config: Any):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2 (background + one structure), got {n_classes}")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes)
        self.config: dict[str, Any] = dict(spatial_dims=spatial_dims, in_channels=in_channels,
                                           n_classes=n_classes, **config)

    #: Each spatial size of an input must be a multiple of this (the backbone's total pooling factor).
    @property
    def size_multiple(self) -> int:
        return 2 ** (self.config.get("depth", 1) - 1)

    def loss(self, image: torch.Tensor, target: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss (scalar) for a batch of images and one annotation each."""
        raise NotImplementedError

    def prepare_sampling(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> Callable[[int], torch.Tensor]:
        """Run what is shared by all samples of ``image`` once; return ``draw(n)`` → logits ``(n, B, C, *S)``.

        Samplers call ``draw`` repeatedly in batches, so that the shared work (a whole forward pass for SSN,
        the encoder for Prob. U-Net) is done once however many samples are drawn.
        """
        raise NotImplementedError

    def sample_logits(self, image: torch.Tensor, n_samples: int, roi: torch.Tensor | None = None) -> torch.Tensor:
        """``n_samples`` logit maps per image, shape ``(N, B, C, *S)``."""
        return self.prepare_sampling(image, roi)(n_samples)

    def predict_logits(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor | None:
        """The model's own point prediction (logits ``(B, C, *S)``), or ``None`` when it has none and the
        mean of the sample probabilities stands for it (the papers' convention for the probabilistic
        baselines)."""
        return None


class DeterministicUNet(SegmentationNetwork):
    """Plain U-Net trained with cross-entropy (eq. 4 of papers/003): every "sample" is the same map."""

    architecture = "unet"
    one_pass_sampling = True

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, n_classes: int = 2, width: int = 16,
                 depth: int = 3, dropout: float = 0.0):
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, n_classes=n_classes,
                         width=width, depth=depth, dropout=dropout)
        self.backbone = UNet(spatial_dims, in_channels, width, depth, dropout)
        self.head = conv(spatial_dims, width, n_classes, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))

    def loss(self, image: torch.Tensor, target: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(self(image), target)

    def prepare_sampling(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> Callable[[int], torch.Tensor]:
        logits = self(image)
        return lambda n: logits.unsqueeze(0).expand(n, *logits.shape)

    def predict_logits(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        return self(image)
