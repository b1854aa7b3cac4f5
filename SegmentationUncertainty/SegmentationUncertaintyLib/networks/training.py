"""Training loop shared by every network sampler: Adam on the model's own loss, one annotation per image
drawn at random in every batch (the multi-annotator protocol of PHiSeg and SSN), random mirror flips.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .base import SegmentationNetwork

__all__ = ["train_model"]


def train_model(model: SegmentationNetwork, images: np.ndarray, annotations: np.ndarray,
                rois: np.ndarray | None = None, iterations: int = 1000, batch_size: int = 16,
                learning_rate: float = 1e-3, seed: int = 0, device: str = "cpu", flip_axes: tuple[int, ...] = (-1,),
                crop: int | None = None, progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place and return the mean loss of every 50 iterations.

    Parameters
    ----------
    images : ndarray, shape (N, channels, *S), normalised
    annotations : ndarray of bool or int, shape (N, K, *S)
        ``K`` annotations per image (class indices; bool for one structure).
    rois : ndarray of bool, shape (N, *S), optional
        Region of interest per image (SSN masks its covariance outside it).
    iterations, batch_size, learning_rate : training schedule (Adam; the learning rate is divided by 10
        for the last fifth of the iterations).
    seed : int
        Seeds the batches, flips, annotation choices and the model's noise (the initial weights are the
        caller's: seed torch before building the model).
    flip_axes : tuple of int
        Spatial axes (negative, counted from the end) mirrored at random; ``()`` for none.
    crop : int, optional
        Train on random ``crop``-sided patches of the images (one position per batch): cheaper iterations,
        and the networks are fully convolutional. Must be a multiple of the model's ``size_multiple``.
    progress : callable(iteration, loss), optional
        Called every 50 iterations.
    """
    if images.shape[0] != annotations.shape[0] or images.shape[2:] != annotations.shape[2:]:
        raise ValueError(f"images {images.shape} and annotations {annotations.shape} do not match: "
                         "expected (N, channels, *S) and (N, K, *S)")
    if iterations < 1 or batch_size < 1:
        raise ValueError(f"iterations and batch_size must be positive, got {iterations} and {batch_size}")
    rng = np.random.default_rng(seed)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, [int(0.8 * iterations)], gamma=0.1)
    n, k = annotations.shape[:2]
    spatial = images.shape[2:]
    if crop is not None and (crop % model.size_multiple or any(crop > s for s in spatial)):
        raise ValueError(f"crop must be a multiple of {model.size_multiple} no larger than the images {spatial}, "
                         f"got {crop}")
    history: list[float] = []
    running: list[float] = []
    with torch.random.fork_rng(devices=[] if device == "cpu" else [torch.device(device)]):
        torch.manual_seed(seed)
        for iteration in range(iterations):
            index = rng.integers(0, n, batch_size)
            x = images[index]
            y = annotations[index, rng.integers(0, k, batch_size)].astype(np.int64)
            r = None if rois is None else rois[index]
            if crop is not None:
                box = tuple(slice(o, o + crop) for o in (rng.integers(0, s - crop + 1) for s in spatial))
                x, y = x[(slice(None), slice(None), *box)], y[(slice(None), *box)]
                r = None if r is None else r[(slice(None), *box)]
            for axis in flip_axes:
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
                    r = None if r is None else np.flip(r, axis)
            x_t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)
            y_t = torch.as_tensor(np.ascontiguousarray(y), device=device)
            r_t = None if r is None else torch.as_tensor(np.ascontiguousarray(r[:, None]), dtype=torch.float32,
                                                         device=device)
            optimiser.zero_grad()
            loss = model.loss(x_t, y_t, r_t)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the {model.architecture} loss became {loss.item()} at iteration "
                                         f"{iteration}; lower the learning rate")
            loss.backward()
            optimiser.step()
            scheduler.step()
            running.append(loss.item())
            if (iteration + 1) % 50 == 0 or iteration + 1 == iterations:
                history.append(float(np.mean(running)))
                running = []
                if progress is not None:
                    progress(iteration + 1, history[-1])
    model.eval()
    return history
