"""Monte-Carlo dropout U-Net (papers/002): spatial dropout after every conv block, kept on at inference.

Each sample is one forward pass with fresh dropout masks (N = 10 in the paper), so N samples cost N
passes. The paper's measures of the samples — coefficient of variation of the segmented volume, mean
pairwise Dice and mean voxelwise uncertainty (entropy) — are :func:`mc_dropout_measures`, computed with
:mod:`SegmentationUncertaintyLib.metrics`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .. import metrics
from .base import DeterministicUNet

__all__ = ["MCDropoutUNet", "mc_dropout_measures"]


class MCDropoutUNet(DeterministicUNet):
    """U-Net with spatial dropout ``p`` after every conv block, trained with cross-entropy.

    ``prepare_sampling`` switches the dropout layers on (the rest of the network stays in eval mode) and
    draws each sample with its own forward pass; ``predict_logits`` is one pass without dropout.
    """

    architecture = "mc_dropout"
    one_pass_sampling = False

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, n_classes: int = 2, width: int = 16,
                 depth: int = 3, dropout: float = 0.2):
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1) for MC dropout, got {dropout}")
        super().__init__(spatial_dims, in_channels, n_classes, width, depth, dropout)

    def _dropout_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d))]

    def prepare_sampling(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> Callable[[int], torch.Tensor]:
        def draw(n: int) -> torch.Tensor:
            layers = self._dropout_layers()
            modes = [layer.training for layer in layers]
            for layer in layers:
                layer.train(True)
            try:
                # One pass per sample: a batch of n copies gives n independent dropout masks in one call.
                batch = image.repeat_interleave(n, dim=0) if image.shape[0] > 1 else image.expand(n, *image.shape[1:])
                logits = self(batch)
            finally:
                for layer, mode in zip(layers, modes):
                    layer.train(mode)
            return logits.reshape(image.shape[0], n, *logits.shape[1:]).transpose(0, 1)
        return draw

    def predict_logits(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> None:
        # papers/002 binarises the voxelwise average over the N samples: the mean of the samples stands for it.
        return None


def mc_dropout_measures(samples: np.ndarray | Sequence[np.ndarray], probabilities: np.ndarray | None = None,
                        spacing: Sequence[float] | None = None) -> dict[str, float]:
    """The three uncertainty measures of papers/002 for the N samples of one image.

    Parameters
    ----------
    samples : ndarray of bool, shape (N, *shape)
        Binary segmentations, one per MC-dropout pass (N ≥ 2).
    probabilities : ndarray, shape (*shape), optional
        Mean foreground probability over the passes; the sample frequency when omitted.
    spacing : sequence of float, optional
        Voxel size in mm (for the volumes; the coefficient of variation does not depend on it).

    Returns
    -------
    dict with ``coefficient_of_variation`` (std / mean of the segmented volumes), ``mean_pairwise_dice``
    and ``mean_voxelwise_uncertainty`` (mean binary entropy, log base 2, over the voxels that any sample
    labels, papers/002's "mean labelled uncertainty"; 0 when no sample labels anything).
    """
    statistics = metrics.SampleStatistics(spacing)
    for sample in samples:
        statistics.update(sample)
    probabilities = statistics.frequency if probabilities is None else probabilities
    volumes = statistics.volumes
    return {
        "coefficient_of_variation": metrics.coefficient_of_variation(volumes) if volumes.mean() > 0 else 0.0,
        "mean_pairwise_dice": metrics.mean_pairwise_dice(np.asarray(samples)),
        "mean_voxelwise_uncertainty": metrics.mean_voxelwise_entropy(probabilities, 2, mask=statistics.frequency > 0),
    }
