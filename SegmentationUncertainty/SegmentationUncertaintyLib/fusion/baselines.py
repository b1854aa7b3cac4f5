"""Label-fusion baselines behind the fusion interface: STAPLE and majority vote (DESIGN.md, "Robust fusion").

Both take the raters' hard label maps ``(P, *shape)`` (masks: 0/1); probability maps are reduced to
their arg-max class first (:mod:`.inputs`).

* :func:`staple` is SimpleITK's ``STAPLEImageFilter`` (two classes: Warfield et al.'s EM on each rater's
  sensitivity and specificity, with a global prior of the foreground fraction) or
  ``MultiLabelSTAPLEImageFilter`` (more classes). Its global parameters count every voxel of the
  volume, so its result depends on how much background the volume holds: crop first to compare.
* :func:`majority_vote` counts votes per class, as ``LabelVotingImageFilter`` does; a tie goes to the
  lowest tied label (the background for two classes), where ITK would write an "undecided" label.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..validation import check_spacing

__all__ = ["staple", "majority_vote"]


def _images(labels: np.ndarray, spacing: Sequence[float]) -> list:
    images = []
    for label_map in labels:
        image = sitk.GetImageFromArray(np.ascontiguousarray(label_map, dtype=np.uint8))
        image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        images.append(image)
    return images


def staple(labels: np.ndarray, n_classes: int = 2, spacing: Sequence[float] | None = None
           ) -> tuple[np.ndarray, dict]:
    """STAPLE consensus of label maps with SimpleITK.

    Parameters
    ----------
    labels : ndarray of int, (P, *shape)
        Raters' label maps, 0 = background.
    n_classes : int
        2: binary STAPLE on the foreground (any label > 0); more: multi-label STAPLE.
    spacing : sequence of float, optional

    Returns
    -------
    probabilities : ndarray of float32, (K, *shape)
        Binary: ``(1 − W, W)`` with ``W`` STAPLE's posterior foreground probability. Multi-label: the
        one-hot STAPLE labels (ITK returns no probabilities; "undecided" voxels go to the background).
    parameters : dict
        Binary: per-rater ``sensitivity`` and ``specificity``, ``iterations``.
    """
    labels = np.asarray(labels)
    spacing = check_spacing(spacing, labels.ndim - 1)
    if n_classes == 2:
        staple_filter = sitk.STAPLEImageFilter()
        staple_filter.SetForegroundValue(1.0)
        weights = sitk.GetArrayFromImage(staple_filter.Execute(_images(labels > 0, spacing))).astype(np.float32)
        probabilities = np.stack([1.0 - weights, weights])
        return probabilities, {"sensitivity": list(staple_filter.GetSensitivity()),
                               "specificity": list(staple_filter.GetSpecificity()),
                               "iterations": staple_filter.GetElapsedIterations()}
    staple_filter = sitk.MultiLabelSTAPLEImageFilter()
    staple_filter.SetLabelForUndecidedPixels(255)
    fused = sitk.GetArrayFromImage(staple_filter.Execute(_images(labels, spacing)))
    fused[fused == 255] = 0
    probabilities = np.stack([(fused == k) for k in range(n_classes)]).astype(np.float32)
    return probabilities, {}


def majority_vote(labels: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Fraction of raters voting for each class, ``(K, *shape)`` float32; its arg-max is the majority vote
    (ties to the lowest label, so a 2-class tie is background)."""
    labels = np.asarray(labels)
    n_raters = labels.shape[0]
    return np.stack([np.count_nonzero(labels == k, axis=0) for k in range(n_classes)]).astype(np.float32) / n_raters
