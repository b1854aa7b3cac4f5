"""Raters' inputs of a fusion: checks, the fusion domain, and probability maps from masks or label maps.

Three kinds of rater input, all on one grid ``[z, y, x]`` (or ``[y, x]``):

* ``"mask"``: binary masks ``(P, *shape)`` (bool or 0/1), two classes (background, structure);
* ``"labels"``: label maps ``(P, *shape)`` of integers ``0 … K−1`` (0 = background);
* ``"probability"``: foreground probabilities ``(P, *shape)`` in [0, 1] (two classes), or class
  probabilities ``(P, K, *shape)`` summing to 1 over the class axis (``class_axis=True``), e.g. the
  softmax outputs of several networks.

Probability maps from masks (papers/004, section 2.1, "Generation of probabilistic maps")
--------------------------------------------------------------------------------------------
Class ``k`` of rater ``p`` gets the signed distance ``d_k`` (mm, negative inside) to its border — geodesic
when an image is given (:func:`~SegmentationUncertaintyLib.geodesic.signed_geodesic_distance`, so that the
maps follow image edges), Euclidean otherwise — and the class probabilities are
``softmax_k(−d_k / (2 s))`` with ``s = scale_mm``. For two classes ``d_0 = −d_1`` (the border lies between
voxels), so this is the log-odds map ``P(structure) = sigmoid(−d_1 / s)``: ``s`` is the distance (mm) over
which the probability goes from 1/2 to ``sigmoid(1) = 0.73``; the voxels on either side of the border
(``|d| = `` one voxel) get ``sigmoid(± step / s)``. A class that a rater does not draw has
``d = +∞`` (probability 0): an empty rater is a rater who says "background" everywhere.

The fusion domain
-----------------
Outside the bounding box of every rater's foreground (for probability maps: of the voxels where some
rater gives the background less than ``1 − background_tolerance``), every rater says background with
certainty, and so does the consensus. The maps are prepared on that box plus ``margin_mm`` (default:
the distance at which a mask's map is within the tolerance of certainty, plus one voxel), clipped to
the grid. Distances computed on the box are exact for the Euclidean transform: the box holds every
foreground voxel and its outer layer is background. (Geodesic distances are computed on the box too;
a shortest path that would leave it is not followed.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..geodesic import default_gamma, signed_geodesic_distances
from ..validation import check_device, check_image, check_spacing

__all__ = ["RaterMaps", "KINDS", "check_raters", "fusion_box", "labels_to_probabilities", "prepare_raters",
           "uncertain_band", "certain_distance"]

KINDS = ("auto", "mask", "labels", "probability")

#: Distance (mm) used for "never": a class absent from a rater's map.
_FAR = 1.0e6


@dataclass
class RaterMaps:
    """Raters' class probabilities on the fusion domain.

    Attributes
    ----------
    probabilities : ndarray of float32, (P, K, *box_shape)
        Class probabilities of each rater on the fusion box.
    labels : ndarray of uint8 / int16, (P, *shape)
        Each rater's hard label map on the whole grid (the masks themselves, or the arg-max class of a
        probability map), for overlap measures and the label-fusion baselines.
    box : tuple of slice
        The fusion box within the grid.
    shape : tuple of int
        The whole grid's shape.
    spacing : tuple of float
        Voxel size per axis (mm).
    kind : str
        ``"mask"``, ``"labels"`` or ``"probability"``.
    n_classes : int
    """

    probabilities: np.ndarray
    labels: np.ndarray
    box: tuple[slice, ...]
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    kind: str
    n_classes: int

    @property
    def n_raters(self) -> int:
        return self.labels.shape[0]


def _stack(raters, name: str = "raters") -> np.ndarray:
    if isinstance(raters, np.ndarray):
        stack = raters
    else:
        raters = list(raters)
        if len(raters) == 0:
            raise ValueError(f"no {name} were given: give at least 2")
        arrays = [np.asarray(r) for r in raters]
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) != 1:
            raise ValueError(f"the {name} have different shapes {shapes}; resample them onto one grid first")
        dtypes = {a.dtype for a in arrays}
        stack = np.stack(arrays) if len(dtypes) == 1 else np.stack([a.astype(np.result_type(*dtypes)) for a in arrays])
    return stack


def check_raters(raters, kind: str = "auto", *, n_classes: int | None = None, class_axis: bool = False
                 ) -> tuple[np.ndarray, str, int]:
    """Check the raters' maps and decide their kind; no heavy work.

    Parameters
    ----------
    raters : ndarray (P, *shape) or (P, K, *shape), or a sequence of P arrays
    kind : {"auto", "mask", "labels", "probability"}
        ``"auto"``: bool → mask; integers → mask if every value is 0 or 1, else labels; floats → probability.
    n_classes : int, optional
        Number of classes of label maps (default: the largest label + 1, at least 2).
    class_axis : bool
        Probability maps carry a class axis after the rater axis: ``(P, K, *shape)``.

    Returns
    -------
    stack, kind, n_classes
    """
    if kind not in KINDS:
        raise ValueError(f"unknown rater kind {kind!r}; choose one of {KINDS}")
    stack = _stack(raters)
    spatial = stack.ndim - 1 - (1 if class_axis else 0)
    if stack.ndim < 2 or spatial not in (2, 3):
        raise ValueError(f"raters must be stacked as (P, *shape){' with a class axis (P, K, *shape)' if class_axis else ''}"
                         f" with a 2-D or 3-D shape, got an array of shape {stack.shape}")
    if stack.shape[0] < 2:
        raise ValueError(f"a fusion needs at least 2 raters, got {stack.shape[0]}")
    if not (stack.dtype == bool or np.issubdtype(stack.dtype, np.number)):
        raise ValueError(f"raters must be boolean, integer or float arrays, got dtype {stack.dtype}")
    if kind == "auto":
        if class_axis or np.issubdtype(stack.dtype, np.floating):
            kind = "probability"
        elif stack.dtype == bool or (stack.min() >= 0 and stack.max() <= 1 and (n_classes in (None, 2))):
            kind = "mask"
        else:
            kind = "labels"
    if class_axis and kind != "probability":
        raise ValueError("class_axis=True is only for probability maps (P, K, *shape)")
    if np.issubdtype(stack.dtype, np.floating) and not np.all(np.isfinite(stack)):
        bad = [p for p in range(stack.shape[0]) if not np.all(np.isfinite(stack[p]))]
        raise ValueError(f"rater(s) {bad} contain NaN or infinite values; fill or mask them first")
    if kind == "mask":
        if stack.dtype != bool:
            values = np.unique(stack)
            if not np.all(np.isin(values, (0, 1))):
                raise ValueError(f"masks must hold only 0 and 1 (or be boolean), found values {values[:10]}; "
                                 "pass kind='labels' for label maps or kind='probability' for probability maps")
            stack = stack.astype(bool)
        n_classes = 2
    elif kind == "labels":
        if not (np.issubdtype(stack.dtype, np.integer) or stack.dtype == bool):
            raise ValueError(f"label maps must be integer arrays, got dtype {stack.dtype}")
        low, high = int(stack.min()), int(stack.max())
        if low < 0:
            raise ValueError(f"label maps must hold labels 0 … K−1 (0 = background), found {low}")
        n_classes = max(high + 1, 2) if n_classes is None else int(n_classes)
        if high >= n_classes:
            raise ValueError(f"label {high} found but n_classes={n_classes}; labels must lie in 0 … n_classes−1")
    else:
        stack = stack.astype(np.float32, copy=False)
        low, high = float(stack.min()), float(stack.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(f"probability maps must lie in [0, 1], found values in [{low:.4g}, {high:.4g}]; "
                             "pass probabilities (e.g. a softmax output), not logits or labels")
        if class_axis:
            if stack.shape[1] < 2:
                raise ValueError(f"the class axis must hold at least 2 classes, got {stack.shape[1]}")
            if n_classes is not None and stack.shape[1] != n_classes:
                raise ValueError(f"the class axis holds {stack.shape[1]} classes but n_classes={n_classes}")
            n_classes = stack.shape[1]
            error = float(np.abs(stack.sum(axis=1, dtype=np.float64) - 1.0).max())
            if error > 1e-3:
                raise ValueError(f"class probabilities must sum to 1 over the class axis (axis 1); the sum is off "
                                 f"by up to {error:.3g}; normalise them (e.g. a softmax) first")
        else:
            if n_classes not in (None, 2):
                raise ValueError("probability maps without a class axis are foreground probabilities (2 classes); "
                                 "pass (P, K, *shape) with class_axis=True for more classes")
            n_classes = 2
        stack = np.clip(stack, 0.0, 1.0)
    if n_classes < 2:
        raise ValueError(f"a fusion needs at least 2 classes, got n_classes={n_classes}")
    return stack, kind, int(n_classes)


def fusion_box(foreground: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[slice, ...] | None:
    """Bounding box of ``foreground`` (any of ``(P, *shape)`` or ``(*shape)``) plus ``margin_mm``, clipped to
    the grid; ``None`` if it is empty."""
    if foreground.ndim > len(spacing):
        foreground = foreground.any(axis=0)
    box = []
    for axis in range(foreground.ndim):
        others = tuple(a for a in range(foreground.ndim) if a != axis)
        hits = np.flatnonzero(foreground.any(axis=others))
        if hits.size == 0:
            return None
        margin = int(np.ceil(margin_mm / spacing[axis] - 1e-9))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, foreground.shape[axis])))
    return tuple(box)


def uncertain_band(probabilities: np.ndarray, tolerance: float) -> np.ndarray:
    """Voxels where some rater is uncertain (its largest class probability is below ``1 − tolerance``) or
    the raters' arg-max classes differ: bool ``(*shape)`` from ``(P, K, *shape)`` probabilities."""
    top = probabilities[:, 0].copy()
    winner = np.zeros(top.shape, dtype=np.uint8)
    for k in range(1, probabilities.shape[1]):      # classes, not voxels: K is small
        better = probabilities[:, k] > top
        np.copyto(top, probabilities[:, k], where=better)
        winner[better] = k
    return (top < 1.0 - tolerance).any(axis=0) | (winner != winner[0]).any(axis=0)


def certain_distance(scale_mm: float, tolerance: float) -> float:
    """Distance (mm) beyond which a mask's probability map is within ``tolerance`` of certainty:
    ``sigmoid(−d / s) ≤ tolerance`` for ``d ≥ s log((1 − tolerance) / tolerance)``."""
    return float(scale_mm * np.log((1.0 - tolerance) / tolerance))


def _signed_distances(masks: list[np.ndarray], image, spacing, gamma, device) -> list[np.ndarray]:
    """Signed distances (mm) of class masks on one grid, ``±_FAR`` for an empty or full mask; the others are
    swept together (:func:`~SegmentationUncertaintyLib.geodesic.signed_geodesic_distances`)."""
    out: list[np.ndarray | None] = [None] * len(masks)
    bordered = []
    for index, mask in enumerate(masks):
        if not mask.any():
            out[index] = np.full(mask.shape, _FAR, dtype=np.float32)
        elif mask.all():
            out[index] = np.full(mask.shape, -_FAR, dtype=np.float32)
        else:
            bordered.append(index)
    if bordered:
        distances = signed_geodesic_distances(np.stack([masks[i] for i in bordered]), image, spacing, gamma=gamma,
                                              device=device)
        for index, distance in zip(bordered, distances):
            out[index] = distance
    return out


def labels_to_probabilities(labels: np.ndarray, n_classes: int, spacing: Sequence[float] | None = None, *,
                            image: np.ndarray | None = None, scale_mm: float = 1.0, gamma: float | None = None,
                            device: str = "cpu") -> np.ndarray:
    """Class probabilities ``softmax_k(−d_k / 2s)`` of label maps (module docstring).

    Parameters
    ----------
    labels : ndarray of int or bool, (P, *shape)
        Label maps (masks: bool), 0 = background.
    n_classes : int
    spacing : sequence of float, optional
        Voxel size per axis (mm).
    image : ndarray, optional
        Intensities on the same grid: geodesic distances (papers/004); ``None``: Euclidean.
    scale_mm : float
        ``s``: ``P(structure) = sigmoid(−d / s)`` for two classes.
    gamma : float, optional
        Geodesic edge weight (default ``100 / mean(|image|)``).
    device : {"cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of float32, (P, K, *shape)
    """
    labels = np.asarray(labels)
    spacing = check_spacing(spacing, labels.ndim - 1)
    if not (np.isfinite(scale_mm) and scale_mm > 0):
        raise ValueError(f"scale_mm must be a positive length in mm, got {scale_mm}")
    if image is not None:
        image = check_image(image, shape=labels.shape[1:])
        if gamma is None:
            gamma = default_gamma(image)
    check_device(device)
    n_raters = labels.shape[0]
    out = np.empty((n_raters, n_classes, *labels.shape[1:]), dtype=np.float32)
    if n_classes == 2:
        # d_0 = −d_1 exactly (the border lies between voxels): one transform gives both classes
        distances = _signed_distances([labels[p] > 0 for p in range(n_raters)], image, spacing, gamma, device)
        for p, distance in enumerate(distances):
            distance = torch.from_numpy(distance)
            out[p, 1] = torch.sigmoid(-distance / scale_mm).numpy()
            out[p, 0] = torch.sigmoid(distance / scale_mm).numpy()
        return out
    distances = _signed_distances([labels[p] == k for p in range(n_raters) for k in range(n_classes)], image,
                                  spacing, gamma, device)
    for p in range(n_raters):
        stacked = torch.stack([torch.from_numpy(d) for d in distances[p * n_classes:(p + 1) * n_classes]])
        out[p] = torch.softmax(-stacked / (2.0 * scale_mm), dim=0).numpy()
    return out


def prepare_raters(raters, kind: str = "auto", *, spacing: Sequence[float] | None = None,
                   image: np.ndarray | None = None, n_classes: int | None = None, class_axis: bool = False,
                   scale_mm: float = 1.0, gamma: float | None = None, crop: bool = True,
                   margin_mm: float | None = None, background_tolerance: float = 1e-3,
                   device: str = "cpu") -> RaterMaps:
    """Check raters, find the fusion domain and compute their class probabilities on it.

    See the module docstring for the kinds, the conversion of masks and label maps, and the domain.
    ``crop=False`` fuses on the whole grid. ``margin_mm`` defaults to :func:`certain_distance` plus one
    voxel, so that the box holds every voxel where a mask's probability map is not within
    ``background_tolerance`` of the background.
    """
    stack, kind, n_classes = check_raters(raters, kind, n_classes=n_classes, class_axis=class_axis)
    shape = stack.shape[2:] if class_axis else stack.shape[1:]
    spacing = check_spacing(spacing, len(shape))
    if image is not None:
        if kind == "probability":
            raise ValueError("an image is only used to turn masks or label maps into probabilities (geodesic "
                             "distances); probability maps are fused as they are: leave image=None")
        image = check_image(image, shape=shape)
        if gamma is None:
            gamma = default_gamma(image)
    if not (0 < background_tolerance < 0.5):
        raise ValueError(f"background_tolerance must lie in (0, 0.5), got {background_tolerance}")
    if not (np.isfinite(scale_mm) and scale_mm > 0):
        raise ValueError(f"scale_mm must be a positive length in mm, got {scale_mm}")
    if margin_mm is None:
        margin_mm = certain_distance(scale_mm, background_tolerance) + max(spacing)
    if not (np.isfinite(margin_mm) and margin_mm >= 0):
        raise ValueError(f"margin_mm must be a length >= 0 in mm, got {margin_mm}")
    check_device(device)

    if kind == "probability":
        probabilities = stack if class_axis else np.stack([1.0 - stack, stack], axis=1)
        labels = probabilities.argmax(axis=1).astype(np.uint8 if n_classes < 256 else np.int16)
        foreground = (1.0 - probabilities[:, 0]) > background_tolerance
    else:
        labels = stack.astype(np.uint8 if n_classes < 256 else np.int16) if kind == "labels" else stack
        foreground = labels > 0
    if crop:
        box = fusion_box(foreground, spacing, margin_mm)
        if box is None:
            raise ValueError("every rater is empty (background everywhere): there is nothing to fuse")
    else:
        if not foreground.any():
            raise ValueError("every rater is empty (background everywhere): there is nothing to fuse")
        box = tuple(slice(0, n) for n in shape)
    if kind == "probability":
        probabilities = np.ascontiguousarray(probabilities[(slice(None), slice(None), *box)], dtype=np.float32)
    else:
        probabilities = labels_to_probabilities(
            labels[(slice(None), *box)], n_classes, spacing, image=None if image is None else image[box],
            scale_mm=scale_mm, gamma=gamma, device=device)
    labels = labels.astype(np.uint8) if kind == "mask" else labels
    return RaterMaps(probabilities=probabilities, labels=labels, box=box, shape=tuple(shape), spacing=spacing,
                     kind=kind, n_classes=n_classes)
