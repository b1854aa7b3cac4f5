"""GPSSI: Gaussian-process sampling of segmentations around a reference (papers/000, Lê et al. 2015).

Model (section 3.1): a level function ``φ ~ GP(μ, Σ)`` with

* mean ``μ(x) = G(x)``, the signed geodesic distance (mm, negative inside) to the reference border
  (:func:`~SegmentationUncertaintyLib.geodesic.signed_geodesic_distance`), so that borders with strong
  image contrast are far in the level function and move little;
* covariance ``Σ(x, y) = ω0 exp(−‖x − y‖² / ω1²)``, distances in mm; ``ω1`` defaults to the radius of the
  sphere of the reference's volume ``V``, ``(3V / 4π)^{1/3}`` (section 4.1); in 2-D to the radius of the
  disc of its area ``A``, ``(A / π)^{1/2}`` (our choice: the paper only treats volumes).

A sample segmentation is ``{x : μ(x) + f(x) < 0}`` with ``f ~ GP(0, Σ)``.

Sampling: exact, non-periodic and separable (:mod:`~SegmentationUncertaintyLib.gp_sampling`), instead of
the paper's periodic FFT (section 3.2).

Region of interest: ``f(x)`` has standard deviation ``σ = ω0^{1/2}`` at every voxel, and a voxel with
``|μ(x)| ≥ k σ`` changes side only if ``f(x)`` pushes it across by ``k σ`` or more: probability at most
``Φ(−k)`` = 9.9e-10 for the default ``k = roi_sigmas = 6`` (so over a whole 256 x 256 x 104 grid, under
0.007 voxels per sample in expectation). Fields are drawn only on the bounding box of ``{|μ| < k σ}`` (the
GP restricted to a box is exactly the GP on the box's voxels) and voxels outside the box keep the
reference's label. ``roi_sigmas=None`` draws on the whole grid. Since the box depends on ``ω0``, the same
seed gives the same samples for the same parameters (not across values of ``ω0``).

Calibration (section 4.1, Fig. 4): the mean pairwise Dice of samples falls as ``ω0`` grows;
:meth:`GPSSISampler.dice_curve` tabulates it with common random numbers and :meth:`GPSSISampler.calibrate`
inverts it, drawing more samples until the curve is precise enough at the target
(:mod:`~SegmentationUncertaintyLib.calibration`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .calibration import (GROUP_SIZE, DiceCurve, DiceCurveEstimator, check_target_dice, mean_histogram,
                          ratio_of_expectations)
from .geodesic import default_gamma, signed_geodesic_distance
from .gp_sampling import DEFAULT_RTOL, SEFieldSampler
from .samplers import SegmentationSampler, check_seed
from .validation import check_image, check_mask, check_spacing

__all__ = ["GPSSISampler", "DiceCurve", "default_omega1", "check_target_dice"]

Box = tuple[slice, ...]


def default_omega1(reference: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Default correlation length ``ω1`` (mm): the equivalent-sphere radius ``(3V / 4π)^{1/3}`` in 3-D
    (papers/000, section 4.1), the equivalent-disc radius ``(A / π)^{1/2}`` in 2-D."""
    reference = check_mask(reference, "reference mask")
    spacing = check_spacing(spacing, reference.ndim)
    size = np.count_nonzero(reference) * float(np.prod(spacing))
    return float((3.0 * size / (4.0 * math.pi)) ** (1.0 / 3.0) if reference.ndim == 3 else math.sqrt(size / math.pi))


def _check_length(value: float | None, name: str) -> float | None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return None if value is None else float(value)


class GPSSISampler(SegmentationSampler):
    """GPSSI model and sampler around one reference segmentation.

    Parameters
    ----------
    reference : ndarray of bool, shape (Z, Y, X) or (Y, X)
        Reference segmentation (both inside and outside voxels).
    image : ndarray, same shape, optional
        Intensities for the geodesic mean; ``None`` gives the Euclidean signed distance.
    spacing : sequence of float, optional
        Voxel size per array axis in mm (default 1 mm).
    omega0 : float, optional
        Variance ``ω0`` of the level function (mm²); set it here, by assignment, or by :meth:`calibrate`.
    omega1 : float, optional
        Correlation length ``ω1`` in mm; default :func:`default_omega1`.
    gamma, h, n_iterations
        Geodesic parameters (:func:`~SegmentationUncertaintyLib.geodesic.signed_geodesic_distance`):
        ``γ`` defaults to ``100 / mean(I)``, ``h`` = 1 mm smoothing.
    roi_sigmas : float or None
        ``k`` of the region of interest ``|μ| < k ω0^{1/2}`` (module docstring); ``None`` = whole grid.
    rtol : float
        Trace fraction of each axis' correlation matrix left out by the low-rank factors.
    device : {"cpu", "cuda", "auto"}
    mean : ndarray, optional
        A precomputed mean ``μ`` (mm, negative exactly inside the reference) to skip the geodesic.

    Attributes
    ----------
    mean : ndarray of float32
        ``μ``, the signed geodesic distance (mm).
    omega1, gamma : float
        The values in use (``gamma = 0`` for the Euclidean mean).

    Examples
    --------
    >>> sampler = GPSSISampler(mask, image, spacing=(2.5, 1.0, 1.0))   # doctest: +SKIP
    >>> sampler.calibrate(0.85)                                         # doctest: +SKIP
    >>> for sample in sampler.sample(40, seed=1): ...                   # doctest: +SKIP
    """

    name = "gpssi"

    def __init__(self, reference: np.ndarray, image: np.ndarray | None = None, spacing: Sequence[float] | None = None,
                 *, omega0: float | None = None, omega1: float | None = None, gamma: float | None = None,
                 h: float = 1.0, n_iterations: int | None = 2, roi_sigmas: float | None = 6.0,
                 rtol: float = DEFAULT_RTOL, device: str = "cpu", mean: np.ndarray | None = None):
        super().__init__(reference, spacing, device=device)
        if image is not None:
            image = check_image(image, "image", shape=self.shape)
        self._omega0 = _check_length(omega0, "omega0 (the level-function variance, mm²)")
        omega1 = _check_length(omega1, "omega1 (the correlation length, mm)")
        self.roi_sigmas = _check_length(roi_sigmas, "roi_sigmas")
        if not (np.isfinite(rtol) and 0 < rtol < 1):
            raise ValueError(f"rtol must lie in (0, 1), got {rtol}")
        self.rtol, self.h = float(rtol), float(h)
        self.omega1 = default_omega1(self.reference, self.spacing) if omega1 is None else omega1
        self.gamma = 0.0 if image is None else float(default_gamma(image) if gamma is None else gamma)
        if mean is None:
            mean = signed_geodesic_distance(self.reference, image, self.spacing, gamma=self.gamma, h=h,
                                            n_iterations=n_iterations, device=str(self.device))
        else:
            mean = check_image(mean, "mean", shape=self.shape)
            if not np.array_equal(mean < 0, self.reference):
                raise ValueError("mean must be negative exactly inside the reference (a signed distance)")
        self.mean = np.asarray(mean, dtype=np.float32)
        self._mean = torch.from_numpy(self.mean).to(self.device)
        self._abs_mean = self._mean.abs()
        self._fields: dict[tuple[int, ...], SEFieldSampler] = {}
        self._boxes: dict[float, Box | None] = {}
        self._threshold: tuple[float, Box | None, torch.Tensor | None] | None = None
        self._estimator: DiceCurveEstimator | None = None
        self._histogram: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------ parameters

    @property
    def omega0(self) -> float | None:
        """Level-function variance ``ω0`` (mm²), or ``None`` until set or calibrated."""
        return self._omega0

    @omega0.setter
    def omega0(self, value: float) -> None:
        self._omega0 = _check_length(value, "omega0 (the level-function variance, mm²)")

    def parameters(self) -> dict[str, Any]:
        return {"source": self.name, "omega0": self._omega0, "omega1_mm": self.omega1, "gamma": self.gamma,
                "h_mm": self.h, "roi_sigmas": self.roi_sigmas}

    # ------------------------------------------------------------------------------------ sampling

    def _box(self, sigma: float) -> Box | None:
        """Bounding box of ``{|μ| < roi_sigmas · sigma}`` (the whole grid without ROI); ``None`` if empty."""
        if self.roi_sigmas is None:
            return tuple(slice(0, n) for n in self.shape)
        if sigma not in self._boxes:
            near = self._abs_mean < self.roi_sigmas * sigma
            box = []
            for axis in range(near.ndim):
                others = tuple(a for a in range(near.ndim) if a != axis)
                hits = torch.nonzero(near.any(dim=others) if others else near)[:, 0]
                if len(hits) == 0:
                    box = None
                    break
                box.append(slice(int(hits[0]), int(hits[-1]) + 1))
            self._boxes[sigma] = None if box is None else tuple(box)
        return self._boxes[sigma]

    def _field_sampler(self, box: Box) -> SEFieldSampler:
        shape = tuple(s.stop - s.start for s in box)
        if shape not in self._fields:
            self._fields[shape] = SEFieldSampler(shape, self.spacing, self.omega1, rtol=self.rtol, device=self.device)
        return self._fields[shape]

    def _sampling_box(self) -> tuple[float, Box | None, torch.Tensor | None]:
        """``(σ, box, −μ/σ on the box)`` at the current ``ω0``; ``box`` is ``None`` when no voxel can flip."""
        if self._omega0 is None:
            raise ValueError("omega0 is not set: pass omega0=..., assign sampler.omega0, or call calibrate(target_dice)")
        sigma = math.sqrt(self._omega0)
        if self._threshold is None or self._threshold[0] != sigma:
            box = self._box(sigma)
            # μ + σ f < 0  ⇔  f < −μ / σ: one comparison per voxel and sample
            threshold = None if box is None else (self._mean[box] / -sigma).contiguous()
            self._threshold = (sigma, box, threshold)
        return self._threshold

    def _draw(self, seed: int, indices: range) -> np.ndarray:
        _, box, threshold = self._sampling_box()
        out = np.empty((len(indices), *self.shape), dtype=bool)
        out[:] = self.reference
        if box is not None:
            fields = self._field_sampler(box)
            inside = torch.lt(fields.fields(fields.cores(seed, indices)), threshold)
            out[(slice(None), *box)] = inside.cpu().numpy()
        return out

    def level_functions(self, n: int, seed: int = 0, batch_size: int = 8) -> np.ndarray:
        """The level functions ``φ = μ + ω0^{1/2} f`` (mm) of the first ``n`` samples of ``seed``.

        ``level_functions(n, seed) < 0`` is exactly ``sample(n, seed)``; outside the region of interest
        ``φ = μ``. A soft version of each sample, e.g. the probability map ``sigmoid(−φ / s)`` with the sample
        as its 0.5 level: a probabilistic rater whose confidence grows with the distance from its border.

        Returns
        -------
        ndarray of float32, (n, *shape)
        """
        n, seed, batch_size = self._check_request(n, seed, batch_size)
        sigma, box, threshold = self._sampling_box()
        out = np.empty((n, *self.shape), dtype=np.float32)
        out[:] = self.mean
        if box is not None:
            fields = self._field_sampler(box)
            tiny = torch.finfo(torch.float32).tiny
            for start in range(0, n, batch_size):
                indices = range(start, min(n, start + batch_size))
                f = fields.fields(fields.cores(seed, indices))
                level = f * sigma + self._mean[box]
                # the side comes from sample's own comparison, so that rounding never makes them disagree
                inside = torch.lt(f, threshold)
                level = torch.where(inside, level.clamp(max=-tiny), level.clamp(min=0.0))
                out[(slice(start, indices.stop), *box)] = level.cpu().numpy()
        return out

    # ------------------------------------------------------------------------------------ calibration

    def ratio_of_expectations(self, omega0: float | Sequence[float]) -> np.ndarray:
        """The noise-free approximation ``Σ p² / Σ p`` of the mean pairwise Dice at ``omega0`` (mm²), with
        ``p = Φ(−μ / ω0^{1/2})`` (:func:`~SegmentationUncertaintyLib.calibration.ratio_of_expectations`)."""
        if self._histogram is None:
            # bins of 1/50 voxel: the sums' error is ~1e-6 of the transition band's voxels at σ = 0.35 voxel
            self._histogram = mean_histogram(self._mean, 0.02 * min(self.spacing))
        return ratio_of_expectations(self._histogram, np.sqrt(np.atleast_1d(np.asarray(omega0, dtype=np.float64))))

    def _sigma_where_ratio(self, dice: float) -> float:
        """``σ`` at which :meth:`ratio_of_expectations` falls to ``dice`` (bisection in ``log σ``), capped at
        the extent of ``μ`` (beyond it the ratio hardly changes)."""
        low = 0.35 * min(self.spacing)
        high = max(2.0 * low, float(self._abs_mean.max()))
        if self.ratio_of_expectations(high ** 2)[0] > dice:
            return high
        for _ in range(30):
            middle = math.sqrt(low * high)
            if self.ratio_of_expectations(middle ** 2)[0] > dice:
                low = middle
            else:
                high = middle
            if high / low < 1.02:
                break
        return high

    def _default_range(self, bottom_dice: float) -> tuple[float, float]:
        """``ω0`` range from ``σ`` = 0.35 voxel (Dice ≈ 0.9999) to where the noise-free ratio
        :meth:`ratio_of_expectations` reaches ``bottom_dice``."""
        return (0.35 * min(self.spacing)) ** 2, self._sigma_where_ratio(bottom_dice) ** 2

    def _curve_estimator(self, seed: int, omega0_range: tuple[float, float] | None,
                         n_points: int | None) -> DiceCurveEstimator:
        """The cached estimator for ``(seed, range, n_points)``, or a new one. ``None`` range or grid size:
        the cached one's for this seed, else the default range (down to Dice ≈ 0.6) with 33 points."""
        cached = self._estimator
        if cached is not None and cached.seed == seed:
            if omega0_range is None and n_points in (None, len(cached.sigmas)):
                return cached
            omega0_range = omega0_range or (cached.sigmas[0] ** 2, cached.sigmas[-1] ** 2)
        if omega0_range is None:
            omega0_range = self._default_range(0.6)
        n_points = 33 if n_points is None else int(n_points)
        low, high = (_check_length(w, "omega0_range bound") for w in omega0_range)
        if not low < high:
            raise ValueError(f"omega0_range must be increasing, got {omega0_range}")
        sigma_range = (math.sqrt(low), math.sqrt(high))
        if (cached is not None and cached.seed == seed and len(cached.sigmas) == n_points
                and np.allclose((cached.sigmas[0], cached.sigmas[-1]), sigma_range, rtol=1e-9, atol=0)):
            return cached
        box = self._box(sigma_range[1])
        if box is None:
            box = tuple(slice(0, 1) for _ in self.shape)  # a token box: its voxel never flips
        self.ratio_of_expectations(low)  # builds the histogram of μ once
        self._estimator = DiceCurveEstimator(self._mean[box], self._field_sampler(box),
                                             int(np.count_nonzero(self.reference)), sigma_range, n_points, seed,
                                             self._histogram)
        return self._estimator

    def dice_curve(self, n_samples: int = 32, seed: int = 0, omega0_range: tuple[float, float] | None = None,
                   n_points: int | None = None) -> DiceCurve:
        """Mean pairwise Dice of samples at ``n_points`` log-spaced values of ``ω0`` (papers/000, Fig. 4).

        Parameters
        ----------
        n_samples : int
            At least this many samples behind every point (rounded up to groups of
            :data:`~SegmentationUncertaintyLib.calibration.GROUP_SIZE`, at least 2 groups); the same unit
            fields serve every ``ω0`` (common random numbers).
        seed : int
            Seed of those fields.
        omega0_range : (float, float), optional
            Smallest and largest ``ω0`` (mm²). Default: the range of the curve cached for this seed (as
            set by :meth:`calibrate`), else from ``σ = ω0^{1/2}`` = 0.35 voxel (Dice ≈ 0.9999) to where
            the noise-free :meth:`ratio_of_expectations` falls to 0.6.
        n_points : int, optional
            Grid size, in [2, 254]; default: the cached curve's, else 33.

        Returns
        -------
        DiceCurve
            Cached on the sampler with its samples: asking again costs nothing, and asking for more
            samples only draws the new ones.
        """
        n_samples, seed, _ = self._check_request(n_samples, seed, 1)
        if n_points is not None and not 2 <= int(n_points) <= 254:
            raise ValueError(f"n_points must lie in [2, 254], got {n_points}")
        estimator = self._curve_estimator(seed, omega0_range, n_points)
        missing = -(-max(n_samples, 2 * GROUP_SIZE) // GROUP_SIZE) - estimator.n_groups
        if missing > 0:
            estimator.add_groups(missing)
        return estimator.curve

    def calibrate(self, target_dice: float, *, seed: int = 0, tolerance: float = 0.0025, min_samples: int = 24,
                  max_samples: int = 512, max_extensions: int = 5) -> float:
        """Set and return the ``ω0`` at which samples have a mean pairwise Dice of ``target_dice``.

        1. Use the cached :meth:`dice_curve` of ``seed`` when the target lies inside it; otherwise a new
           curve from ``σ`` = 0.35 voxel to where the noise-free :meth:`ratio_of_expectations` (within
           about 0.01 of the Dice) reaches ``target − 0.08``, so that the region of interest, and the
           cost, stay those of the target.
        2. While the target lies outside the curve, widen its range by a factor 6.25 in ``ω0`` at the top
           or the bottom (up to ``max_extensions`` times), judging from one group of samples.
        3. Draw samples (at least ``min_samples``) until the standard error of the curve at the target is
           at most ``tolerance``, or ``max_samples`` are drawn.

        Later calls with targets inside the cached curve (a slider) cost an interpolation.

        Raises
        ------
        ValueError
            For a target outside (0, 1), or one this reference cannot reach (GPSSI samples of a very
            large ``ω0`` tend to independent half-volumes, whose Dice is about 0.5).
        """
        target = check_target_dice(target_dice)
        seed = check_seed(seed)
        if not (np.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"tolerance must be a positive Dice difference, got {tolerance}")
        estimator = self._estimator
        if estimator is None or estimator.seed != seed or estimator.n_groups == 0 or \
                not estimator.curve.monotone_dice[-1] <= target <= estimator.curve.monotone_dice[0]:
            estimator = self._curve_estimator(seed, self._default_range(max(target - 0.08, 0.5)), 33)
        extensions = 0
        while True:
            if estimator.n_groups == 0:
                estimator.add_groups(1)
            curve = estimator.curve
            dice = curve.monotone_dice
            if not dice[-1] <= target <= dice[0]:
                low, high = curve.omega0[0], curve.omega0[-1]
                if extensions == max_extensions or len(curve.omega0) > 254 - 8:
                    raise ValueError(
                        f"target Dice {target} is out of reach for this reference: GPSSI samples range from "
                        f"Dice {dice[0]:.4f} (ω0 = {low:.3g} mm²) to {dice[-1]:.4f} (ω0 = {high:.3g} mm²)")
                extensions += 1
                step = np.log(high / low) / (len(curve.omega0) - 1)
                added = max(1, round(np.log(6.25) / step))
                wider = (low, high * np.exp(added * step)) if target < dice[-1] else (low / np.exp(added * step), high)
                estimator = self._curve_estimator(seed, wider, len(curve.omega0) + added)
                continue
            if estimator.n_samples < min_samples:
                estimator.add_groups(-(-(min_samples - estimator.n_samples) // GROUP_SIZE))
                continue
            omega0 = curve.omega0_at(target)
            if curve.n_samples >= max_samples or curve.stderr_at(omega0) <= tolerance:
                break
            estimator.add_groups(max(1, min(estimator.n_groups // 2, (max_samples - curve.n_samples) // GROUP_SIZE)))
        self.omega0 = omega0
        return omega0
