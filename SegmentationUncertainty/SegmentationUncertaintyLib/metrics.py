"""Segmentation and uncertainty metrics, with the conventions of PHiSeg (papers/001) and SSN (papers/003).

Conventions (DESIGN.md, "Metrics"), so that numbers compare with the papers:

* ``d(a, b) = 1 − IoU(a, b)``, averaged over the foreground classes; a class empty in both masks has
  ``IoU = 1`` (``d = 0``); two empty masks also have ``Dice = 1``.
* ``D²_GED = 2 E[d(y, ŷ)] − E[d(y, y′)] − E[d(ŷ, ŷ′)]`` — the *squared* generalised energy distance that
  PHiSeg (eq. 4) and SSN report; expectations over pairs within one set run over all ordered pairs,
  identical ones included (as in both papers' code). Sample diversity is ``E[d(ŷ, ŷ′)]``, the same term.
* Entropies use log base C (C classes, 2 for a binary mask), so they lie in [0, 1]; cross-entropies
  (γ-maps, error maps) use the natural log of ``p + eps`` as PHiSeg's code does.

Masks are boolean arrays ``[z, y, x]`` (or ``[y, x]``); ``spacing`` is per array axis in mm. A set of
masks is an array ``(N, *shape)`` or a sequence of masks. Per-voxel maps over samples are accumulated one
sample at a time (:class:`SampleStatistics`, :func:`frequency_map`, :func:`gamma_map` accept iterables),
so a generator of samples — the GPSSI sampler's — never needs to be in memory at once.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from .validation import check_spacing

__all__ = [
    "dice", "iou", "hausdorff95", "volume_ml", "mean_pairwise_dice", "pairwise_iou_distances",
    "coefficient_of_variation", "frequency_map", "entropy_map", "mean_voxelwise_entropy", "gamma_map",
    "rater_error_maps", "ncc", "gamma_ncc", "generalized_energy_distance", "sample_diversity", "brier_score",
    "expected_calibration_error", "SampleStatistics",
]

#: Added to probabilities before a log, as in PHiSeg's code (``log(p + 1e-8)``).
EPS = 1e-8


# ----------------------------------------------------------------------------------------------- inputs

def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number):
            raise ValueError(f"{name} must be a boolean or numeric array, got dtype {mask.dtype}")
        mask = mask > 0
    return mask


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_mask(a, "first mask"), _as_mask(b, "second mask")
    if a.shape != b.shape:
        raise ValueError(f"the masks have different shapes {a.shape} and {b.shape}; resample them onto one grid")
    return a, b


def _stack(masks: np.ndarray | Sequence[np.ndarray], name: str = "samples", minimum: int = 1,
           labels: bool = False) -> np.ndarray:
    """``(N, *shape)`` stack from an array or a sequence of equally shaped masks (label maps if ``labels``)."""
    if isinstance(masks, np.ndarray):
        stack = masks
    else:
        masks = list(masks)
        if not masks:
            raise ValueError(f"{name} is empty: give at least {minimum} mask(s)")
        shapes = {np.shape(m) for m in masks}
        if len(shapes) != 1:
            raise ValueError(f"the {name} have different shapes {sorted(shapes)}; resample them onto one grid")
        stack = np.stack([np.asarray(m) for m in masks])
    if stack.ndim < 2:
        raise ValueError(f"{name} must be an array (N, *shape) or a sequence of masks, got shape {stack.shape}")
    if stack.shape[0] < minimum:
        raise ValueError(f"{name} holds {stack.shape[0]} mask(s); at least {minimum} are needed")
    if labels:
        if not (np.issubdtype(stack.dtype, np.integer) or stack.dtype == bool):
            raise ValueError(f"{name} must be integer label maps when n_classes is given, got dtype {stack.dtype}")
        return stack
    return _as_mask(stack, name)


# ------------------------------------------------------------------------------------------- overlap

def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2|a ∩ b| / (|a| + |b|)``; two empty masks give 1."""
    a, b = _pair(a, b)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union ``|a ∩ b| / |a ∪ b|``; two empty masks give 1 (so ``d = 1 − IoU = 0``)."""
    a, b = _pair(a, b)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between the surfaces of two masks.

    The surface of a mask is its voxels with a face neighbour outside it (or on the grid edge). The
    distances from every surface voxel centre of ``a`` to the nearest surface voxel centre of ``b``, and
    from ``b`` to ``a``, are pooled; the result is their 95th percentile (linear interpolation).

    Empty masks: both empty → 0.0 (they agree); exactly one empty → ``inf`` (no surface to reach).
    """
    a, b = _pair(a, b)
    spacing = check_spacing(spacing, a.ndim)
    a_any, b_any = a.any(), b.any()
    if not a_any and not b_any:
        return 0.0
    if not a_any or not b_any:
        return float("inf")
    # every surface voxel lies in the bounding box of a ∪ b, so the transforms can be cropped to it
    box = ndi.find_objects((a | b).astype(np.uint8))[0]
    a, b = a[box], b[box]
    surface_a = a & ~ndi.binary_erosion(a, border_value=0)
    surface_b = b & ~ndi.binary_erosion(b, border_value=0)
    to_b = ndi.distance_transform_edt(~surface_b, sampling=spacing)
    to_a = ndi.distance_transform_edt(~surface_a, sampling=spacing)
    return float(np.percentile(np.concatenate([to_b[surface_a], to_a[surface_b]]), 95))


def volume_ml(mask: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Volume of a 3-D mask in millilitres (cm³); for a 2-D mask, its area in cm²."""
    mask = _as_mask(mask, "mask")
    spacing = check_spacing(spacing, mask.ndim)
    return float(np.count_nonzero(mask) * np.prod(spacing) / 10.0 ** mask.ndim)


def _gram(*stacks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sizes ``|a_i|`` and intersections ``|a_i ∩ a_j|`` of the masks of boolean stacks (N_k, *shape), in order.

    Voxels where every mask agrees are counted, not multiplied: only the voxels where the masks differ (a
    thin shell for samples around one reference) enter a float32 matrix product. Chunks of 2^20 voxels
    keep the products exact (counts < 2^24) and the copies small; totals are float64.
    """
    flats = [stack.reshape(stack.shape[0], -1) for stack in stacks]
    n = sum(flat.shape[0] for flat in flats)
    if n > np.iinfo(np.uint16).max:
        raise ValueError(f"at most {np.iinfo(np.uint16).max} masks at once, got {n}")
    gram = np.zeros((n, n), dtype=np.float64)
    chunk = 1 << 20
    for start in range(0, flats[0].shape[1], chunk):
        blocks = [flat[:, start:start + chunk].view(np.uint8) for flat in flats]
        votes = sum(block.sum(axis=0, dtype=np.uint16) for block in blocks)
        gram += np.count_nonzero(votes == n)
        mixed = np.flatnonzero((votes > 0) & (votes < n))
        if mixed.size:
            rows = np.concatenate([np.take(block, mixed, axis=1) for block in blocks]).astype(np.float32)
            gram += rows @ rows.T
    return np.diag(gram).copy(), gram


def _one_hot_stack(stack: np.ndarray, n_classes: int | None) -> list[np.ndarray]:
    """Foreground-class masks of a stack: ``[stack]`` for binary masks, ``[stack == c for c ≥ 1]`` for labels."""
    if n_classes is None:
        return [stack]
    if int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2 (background included), got {n_classes}")
    if stack.min() < 0 or stack.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {stack.min()}..{stack.max()}")
    return [stack == c for c in range(1, int(n_classes))]


def _iou_distance_blocks(stacks: list[np.ndarray], n_classes: int | None) -> np.ndarray:
    """``1 − IoU`` between all masks of the stacks (in order), averaged over foreground classes: (ΣN, ΣN)."""
    class_stacks = [_one_hot_stack(stack, n_classes) for stack in stacks]
    distances = []
    for c in range(len(class_stacks[0])):
        sizes, inter = _gram(*[per_class[c] for per_class in class_stacks])
        union = sizes[:, None] + sizes[None, :] - inter
        distances.append(np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0))
    return np.mean(distances, axis=0)


def pairwise_iou_distances(a: np.ndarray | Sequence[np.ndarray], b: np.ndarray | Sequence[np.ndarray] | None = None,
                           n_classes: int | None = None) -> np.ndarray:
    """Matrix ``d_ij = 1 − IoU(a_i, b_j)`` (``b = a`` when omitted), averaged over foreground classes.

    Parameters
    ----------
    a, b : ndarray (N, *shape) / (M, *shape), or sequences of masks
        Binary masks, or integer label maps with ``n_classes`` given (class 0 = background).
    n_classes : int, optional
        Number of classes including background, for label maps; ``None`` = binary masks.

    Returns
    -------
    ndarray of float64, shape (N, M); a class empty in both masks counts as ``IoU = 1``.
    """
    labels = n_classes is not None
    stack_a = _stack(a, "first set", labels=labels)
    if b is None:
        return _iou_distance_blocks([stack_a], n_classes)
    stack_b = _stack(b, "second set", labels=labels)
    if stack_a.shape[1:] != stack_b.shape[1:]:
        raise ValueError(f"the two sets have mask shapes {stack_a.shape[1:]} and {stack_b.shape[1:]}")
    n = stack_a.shape[0]
    return _iou_distance_blocks([stack_a, stack_b], n_classes)[:n, n:]


def mean_pairwise_dice(samples: np.ndarray | Sequence[np.ndarray]) -> float:
    """Mean Dice over all unordered pairs of distinct samples (papers/002's best quality proxy).

    Parameters
    ----------
    samples : ndarray of bool, shape (N, *shape), or a sequence of N masks; N ≥ 2

    Notes
    -----
    All N(N−1)/2 intersections come from one Gram matrix over the voxels where the samples differ, so
    N = 100 samples of 256 x 256 x 104 take about one pass over the samples.
    """
    stack = _stack(samples, minimum=2)
    sizes, gram = _gram(stack)
    total = sizes[:, None] + sizes[None, :]
    pairwise = np.where(total > 0, 2.0 * gram / np.maximum(total, 1), 1.0)
    return float(pairwise[np.triu_indices(stack.shape[0], k=1)].mean())


def coefficient_of_variation(volumes: Sequence[float]) -> float:
    """Standard deviation over mean of the sample volumes (population std, ``ddof=0``; papers/002)."""
    volumes = np.asarray(volumes, dtype=np.float64).ravel()
    if volumes.size == 0:
        raise ValueError("volumes is empty: give one volume per sample")
    mean = volumes.mean()
    if mean == 0:
        raise ValueError("the mean volume is 0, so the coefficient of variation is undefined")
    return float(volumes.std() / mean)


# ------------------------------------------------------------------------------------- voxel maps

def _iterate(samples: np.ndarray | Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    return iter(samples) if not isinstance(samples, np.ndarray) else (samples[i] for i in range(samples.shape[0]))


def frequency_map(samples: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """Fraction of the samples that contain each voxel, float32 in [0, 1] (streams over an iterable)."""
    statistics = SampleStatistics()
    for sample in _iterate(samples):
        statistics.update(sample)
    return statistics.frequency


def _class_probabilities(prob: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, *shape) class probabilities from a foreground map (*shape) or a (C, *shape) array.

    With ``n_classes = 2`` an array whose first axis has length 2 and sums to 1 over it is read as
    (2, *shape); anything else is a foreground probability map.
    """
    if int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes}")
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim >= 3 and prob.shape[0] == n_classes and (n_classes > 2 or np.allclose(prob.sum(axis=0), 1.0, atol=1e-4)):
        return np.clip(prob, 0.0, 1.0)
    if n_classes != 2:
        raise ValueError(f"prob must have shape (C, *shape) with C = n_classes = {n_classes}, got {prob.shape}")
    p = np.clip(prob, 0.0, 1.0)
    return np.stack([1.0 - p, p])


def entropy_map(prob: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Marginal entropy ``−Σ_c p_c log_C p_c`` of the mean class probabilities per voxel (PHiSeg, papers/002).

    Parameters
    ----------
    prob : ndarray
        Binary: foreground probability (e.g. :func:`frequency_map`), shape (*shape), ``n_classes=2``.
        Multi-class: mean class probabilities, shape (C, *shape) with ``C = n_classes``.

    Returns
    -------
    ndarray of float32, shape (*shape), in [0, 1]: 1 where all classes are equally likely, 0 where one is
    certain (log base C).
    """
    classes = _class_probabilities(prob, n_classes)
    entropy = np.zeros(classes.shape[1:], dtype=np.float64)
    for p in classes:
        positive = p > 0
        entropy[positive] -= p[positive] * np.log(p[positive])
    return (entropy / np.log(n_classes)).astype(np.float32)


def mean_voxelwise_entropy(prob: np.ndarray, n_classes: int = 2, mask: np.ndarray | None = None) -> float:
    """Mean of :func:`entropy_map` over the voxels of ``mask`` (all voxels when omitted; papers/002).

    Restrict it to a region (e.g. the union of the samples) to compare structures of different size.
    """
    entropy = entropy_map(prob, n_classes)
    if mask is None:
        return float(entropy.mean())
    mask = _as_mask(mask, "mask")
    if mask.shape != entropy.shape:
        raise ValueError(f"mask has shape {mask.shape} but the entropy map has {entropy.shape}")
    return float(entropy[mask].mean()) if mask.any() else 0.0


def _mean_and_mean_log(samples_probs: np.ndarray | Iterable[np.ndarray], class_axis: bool,
                       eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Streaming ``E_s[p_s]`` and ``E_s[log(p_s + eps)]``, shape (C, *shape), over samples (*shape) or (C, *shape)."""
    total = total_log = None
    n = 0
    for sample in _iterate(samples_probs):
        p = np.asarray(sample, dtype=np.float64)
        if not class_axis:
            p = np.stack([1.0 - p, p])
        if total is None:
            total, total_log = np.zeros_like(p), np.zeros_like(p)
        elif p.shape != total.shape:
            raise ValueError(f"sample {n} has shape {p.shape[1:] if not class_axis else p.shape} but earlier ones "
                             f"had {total.shape[1:] if not class_axis else total.shape}")
        total += p
        total_log += np.log(p + eps)
        n += 1
    if n == 0:
        raise ValueError("no samples were given")
    return total / n, total_log / n


def gamma_map(samples_probs: np.ndarray | Iterable[np.ndarray], *, class_axis: bool = False,
              eps: float = EPS) -> np.ndarray:
    """PHiSeg γ-map ``E_s[CE(s̄, s)]``: mean over samples of the cross-entropy between the mean prediction and each sample.

    ``γ(x) = −(1/N) Σ_s Σ_c s̄_c(x) log(s_c(x) + eps)`` (papers/001, section 3), computed in one pass as
    ``−Σ_c s̄_c E_s[log(s_c + eps)]``.

    Parameters
    ----------
    samples_probs : ndarray (N, *shape) or iterable of (*shape); with ``class_axis=True`` (N, C, *shape)
        Per-sample foreground probabilities (hard masks allowed) or class probabilities.
    eps : float
        Added inside the log, so hard masks give finite values (a sample that contradicts a certain mean
        costs ``−log eps ≈ 18.4``; for hard binary samples ``γ = −2 log(eps) f (1 − f)`` with ``f`` the frequency).

    Returns
    -------
    ndarray of float32, shape (*shape); 0 where all samples agree with certainty.
    """
    mean, mean_log = _mean_and_mean_log(samples_probs, class_axis, eps)
    # Certain voxels give −log(1 + eps) ≈ −1e-8, not the 0 of the definition (γ ≥ 0 without eps).
    return np.maximum(-(mean * mean_log).sum(axis=0), 0.0).astype(np.float32)


def rater_error_maps(samples_probs: np.ndarray | Iterable[np.ndarray], raters: np.ndarray | Sequence[np.ndarray],
                     *, class_axis: bool = False, eps: float = EPS) -> np.ndarray:
    """PHiSeg's per-rater error maps ``E_s[CE(y_r, s)] = −(1/N) Σ_s Σ_c y_{r,c} log(s_c + eps)`` (papers/001, eq. 5).

    Parameters
    ----------
    samples_probs : as in :func:`gamma_map`
    raters : ndarray of bool (M, *shape) or sequence of M masks; with ``class_axis=True`` one-hot (M, C, *shape)

    Returns
    -------
    ndarray of float32, shape (M, *shape)
    """
    mean, mean_log = _mean_and_mean_log(samples_probs, class_axis, eps)
    maps = []
    for rater in (raters if not isinstance(raters, np.ndarray) else list(raters)):
        y = np.asarray(rater, dtype=np.float64)
        if not class_axis:
            y = np.stack([1.0 - y, y])
        if y.shape != mean.shape:
            raise ValueError(f"a rater map has shape {y.shape} but the samples have {mean.shape}")
        maps.append(-(y * mean_log).sum(axis=0))
    if not maps:
        raise ValueError("raters is empty: give at least one rater mask")
    return np.asarray(maps, dtype=np.float32)


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation ``mean((a − ā)(b − b̄)) / (σ_a σ_b)`` (population σ), in [−1, 1].

    A constant map has no pattern to correlate with: when either map is constant (σ = 0) the result is 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the maps have different shapes {a.shape} and {b.shape}")
    if mask is not None:
        mask = _as_mask(mask, "mask")
        a, b = a[mask], b[mask]
    a = a - a.mean()
    b = b - b.mean()
    norm = np.sqrt((a * a).mean() * (b * b).mean())
    return 0.0 if norm == 0 else float((a * b).mean() / norm)


def gamma_ncc(gamma: np.ndarray, rater_error_maps: np.ndarray | Sequence[np.ndarray]) -> float:
    """PHiSeg's ``S_NCC``: mean over raters of ``NCC(γ-map, rater's error map)`` (papers/001, eq. 5).

    ``gamma`` from :func:`gamma_map`, the error maps from :func:`rater_error_maps`; constant maps count 0.
    """
    maps = list(rater_error_maps)
    if not maps:
        raise ValueError("rater_error_maps is empty: give one error map per rater")
    return float(np.mean([ncc(gamma, error) for error in maps]))


# ------------------------------------------------------------------------ distribution-level metrics

def generalized_energy_distance(samples: np.ndarray | Sequence[np.ndarray], raters: np.ndarray | Sequence[np.ndarray],
                                n_classes: int | None = None) -> float:
    """Squared generalised energy distance ``D²_GED`` with ``d = 1 − IoU`` (PHiSeg eq. 4, SSN section 5).

    ``D²_GED = 2 E[d(y, ŷ)] − E[d(y, y′)] − E[d(ŷ, ŷ′)]``, ``y, y′`` raters, ``ŷ, ŷ′`` samples; expectations
    within one set run over all ordered pairs, identical ones included. Identical sets give 0. This is the
    squared form the papers tabulate; take the square root for the distance itself.

    Parameters
    ----------
    samples, raters : (N, *shape) / (M, *shape) arrays or sequences of masks
        Binary masks (``n_classes=None``) or integer label maps with ``n_classes`` classes, background 0;
        ``d`` averages ``1 − IoU`` over the foreground classes.
    """
    labels = n_classes is not None
    s = _stack(samples, "samples", labels=labels)
    r = _stack(raters, "raters", labels=labels)
    if s.shape[1:] != r.shape[1:]:
        raise ValueError(f"samples have shape {s.shape[1:]} but raters {r.shape[1:]}; resample them onto one grid")
    n = s.shape[0]
    d = _iou_distance_blocks([s, r], n_classes)  # one pass over all masks
    return float(2.0 * d[:n, n:].mean() - d[n:, n:].mean() - d[:n, :n].mean())


def sample_diversity(samples: np.ndarray | Sequence[np.ndarray], n_classes: int | None = None) -> float:
    """``E[d(ŷ, ŷ′)]`` with ``d = 1 − IoU`` over all ordered pairs, identical ones included (the GED term)."""
    return float(pairwise_iou_distances(samples, None, n_classes).mean())


def _rater_frequency(raters: np.ndarray | Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    stack = _stack(raters, "raters")
    if stack.shape[1:] != shape:
        raise ValueError(f"the rater masks have shape {stack.shape[1:]} but prob has {shape}")
    return stack.mean(axis=0)


def _check_prob(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float64)
    if not np.all(np.isfinite(prob)) or prob.min() < 0 or prob.max() > 1:
        raise ValueError("prob must be a foreground probability map with values in [0, 1]")
    return prob


def brier_score(prob: np.ndarray, raters: np.ndarray | Sequence[np.ndarray]) -> float:
    """Mean over raters and voxels of ``(p − y_r)²``, computed as ``mean((p − f)² + f (1 − f))`` (f: rater frequency).

    The second term is the raters' own disagreement, the floor no prediction can beat.
    """
    prob = _check_prob(prob)
    frequency = _rater_frequency(raters, prob.shape)
    return float(np.mean((prob - frequency) ** 2 + frequency * (1.0 - frequency)))


def expected_calibration_error(prob: np.ndarray, raters: np.ndarray | Sequence[np.ndarray],
                               n_bins: int = 10, mask: np.ndarray | None = None) -> float:
    """Expected calibration error of a foreground probability map against the raters.

    Voxels are put in ``n_bins`` equal bins of predicted probability on [0, 1]. In each bin the mean
    prediction (confidence) is compared with the observed foreground rate, where every rater's label at
    every voxel is one observation (so the rate is the mean rater frequency, and the result equals ECE
    against all raters pooled). ``ECE = Σ_bins (n_b / n) |rate_b − confidence_b|``.

    ``mask`` restricts the voxels (e.g. to a box around the structure: far background, where every
    prediction is 0 and every rater agrees, otherwise dilutes the error).
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    prob = _check_prob(prob)
    frequency = _rater_frequency(raters, prob.shape)
    if mask is not None:
        mask = _as_mask(mask, "mask")
        if mask.shape != prob.shape:
            raise ValueError(f"mask has shape {mask.shape} but prob has {prob.shape}")
        prob, frequency = prob[mask], frequency[mask]
    prob, frequency = prob.ravel(), frequency.ravel()
    if prob.size == 0:
        raise ValueError("no voxels to evaluate: the mask is empty")
    bins = np.minimum((prob * n_bins).astype(np.int64), int(n_bins) - 1)
    confidence = np.bincount(bins, weights=prob, minlength=n_bins)
    observed = np.bincount(bins, weights=frequency, minlength=n_bins)
    return float(np.abs(observed - confidence).sum() / prob.size)


# ------------------------------------------------------------------------------------- streaming

class SampleStatistics:
    """Streaming per-voxel statistics of binary samples: frequency, entropy, γ-map and per-sample volumes.

    :meth:`update` takes one mask at a time, so a generator of samples is summarised without holding
    them; memory is one int32 count per voxel.

    Parameters
    ----------
    spacing : sequence of float, optional
        Voxel size (mm) for :attr:`volumes` (ml in 3-D, cm² in 2-D; 1 mm voxels when omitted).

    Examples
    --------
    >>> stats = SampleStatistics(spacing=(2.5, 1.0, 1.0))
    >>> for sample in sampler:              # doctest: +SKIP
    ...     stats.update(sample)
    >>> stats.frequency, stats.entropy, coefficient_of_variation(stats.volumes)  # doctest: +SKIP
    """

    def __init__(self, spacing: Sequence[float] | None = None):
        self._spacing = spacing
        self._counts: np.ndarray | None = None
        self._volumes: list[float] = []
        self._voxel_volume = 1.0

    def update(self, sample_mask: np.ndarray) -> "SampleStatistics":
        """Add one sample (boolean mask); returns ``self``."""
        mask = _as_mask(sample_mask, "sample")
        if self._counts is None:
            spacing = check_spacing(self._spacing, mask.ndim)
            self._voxel_volume = float(np.prod(spacing) / 10.0 ** mask.ndim)
            self._counts = np.zeros(mask.shape, dtype=np.int32)
        elif mask.shape != self._counts.shape:
            raise ValueError(f"sample has shape {mask.shape} but earlier samples had {self._counts.shape}")
        self._counts += mask
        self._volumes.append(np.count_nonzero(mask) * self._voxel_volume)
        return self

    @property
    def n(self) -> int:
        """Number of samples added."""
        return len(self._volumes)

    def _require(self) -> np.ndarray:
        if self._counts is None:
            raise ValueError("no sample has been added yet: call update() first")
        return self._counts

    @property
    def counts(self) -> np.ndarray:
        """Number of samples containing each voxel, int32 (*shape)."""
        return self._require().copy()

    @property
    def frequency(self) -> np.ndarray:
        """Fraction of samples containing each voxel, float32 (*shape)."""
        return (self._require() / self.n).astype(np.float32)

    @property
    def entropy(self) -> np.ndarray:
        """Binary marginal entropy (log base 2) of :attr:`frequency`, float32 (*shape)."""
        return entropy_map(self.frequency, 2)

    @property
    def gamma(self) -> np.ndarray:
        """:func:`gamma_map` of the samples (hard masks), in closed form from the counts, float32 (*shape)."""
        f = self._require() / self.n
        # hard samples: E_s[log(s_c + eps)] = P(s_c = 1) log(1 + eps) + P(s_c = 0) log(eps)
        log_one, log_eps = np.log1p(EPS), np.log(EPS)
        mean_log_fg = f * log_one + (1 - f) * log_eps
        mean_log_bg = (1 - f) * log_one + f * log_eps
        return np.maximum(-(f * mean_log_fg + (1 - f) * mean_log_bg), 0.0).astype(np.float32)

    @property
    def volumes(self) -> np.ndarray:
        """Per-sample volumes in ml (3-D) or cm² (2-D), in update order, float64 (n,)."""
        return np.asarray(self._volumes, dtype=np.float64)
