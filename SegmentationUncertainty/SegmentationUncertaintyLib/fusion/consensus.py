"""One entry point for every fusion method: :func:`fuse` (arrays in, :class:`~.result.FusionResult` out).

Where the model is fitted (a choice of domain, like cropping)
---------------------------------------------------------------
Masks and label maps become class probabilities (:mod:`.inputs`). A voxel where every rater gives the
same class a probability of at least ``1 − certainty_tolerance`` carries no disagreement to resolve,
and the model is fitted on the other voxels only, the *band* (near some rater's border, or where
raters disagree); at the voxels outside the band the consensus is the raters' common value (their
mean in link space, within the tolerance of certainty). This is the same argument as cropping to the
raters' bounding box, one step further, and it is a modelling choice, not an exact reduction: the
rater parameters (bias, variance, ν) then describe the raters where they draw, whatever the size of
the structure or the amount of background (STAPLE's global parameters depend on both). The smoothness
prior lives on the band's bounding box; its voxels outside the band have a latent consensus with no
data (:mod:`.student_t`). Outside that box every rater says background with certainty, and so does the
consensus. With masks, ``scale_mm = 1`` and the default tolerance ``1e-3`` the band reaches 6.9 mm on
either side of each rater's border.

``τ`` outside the band is reported as ``(ν_p + d) / ν_p``, the weight of a rater whose value equals the
consensus; the rater table's mean ``τ`` is taken over the band.

The raters' variance floor: a map resolves a border only to a voxel
--------------------------------------------------------------------
Over much of the band several raters' maps coincide (two masks that share a stretch of border give the
same map there). The Student-t likelihood is then unbounded as ``Σ_p → 0`` with small ``ν``: the
raters that coincide gain ``log(1/σ²)`` each, the others lose only ``(ν/2) log(1/σ²)``. Left to itself
the fit shrinks every ``σ_p²`` towards the numerical floor, ``ν`` towards 0.3, and the consensus
follows, voxel by voxel, whichever raters happen to coincide (a mode, not a mean), slowly: the bound
keeps rising as ``σ_p²`` shrinks. But no map places a border more precisely than its voxels: moving a
map by a uniform sub-voxel shift ``u_a ∈ (−h_a/2, h_a/2)`` per axis changes its link value by
``Σ_a ∂_a F u_a``, of variance ``Σ_a (Δ_a F)² / 12`` (``Δ_a F``: the difference between neighbouring
voxels along axis ``a``). Its mean over the band and the raters, per link coordinate
(:func:`resolution_variance`), is the default floor of ``Σ_p`` and ``Σ_T``: differences finer than the
grid resolves are not evidence. Measured on the benchmark case (7 raters, 256×256×104, 500 iterations):
``ν`` 1.2–2.8 instead of 0.24–0.39 and the same Dice to the truth (0.9936 / 0.9934; with 4 mm bases
0.9939 / 0.9942).

The smoothness prior's default scale
------------------------------------
The bases are 2 mm apart and 2 mm wide by default: twice a mask map's scale, the distance over which a
mask's map passes from 0.27 to 0.73, so that the prior can follow the raters' maps as sharply as they
change. Wider bases pull a curved border inwards (:mod:`.spatial_prior`), and the Student-t consensus
follows them where the raters disagree. ``python bench/smoothness_scale.py 0 2 3 4`` measures it; with
4 mm and 2 mm bases: three masks of a ball of radius 4.5–6 mm shifted by −1, 0 and +1 mm (1 mm voxels)
give a consensus with 91 % and 100 % of the middle ball's volume on average; 30 LIDC nodules fused from their
radiologists, Dice to their ≥ 50 % vote 0.919 and 0.942; the Colin27 masks table 0.9616 and 0.9614;
its speckled raters (4 mm of noise) 0.910 and 0.920. A user who wants a smoother consensus of a large
structure raises ``smoothness_mm``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..validation import check_device
from .baselines import majority_vote, staple
from .inputs import RaterMaps, prepare_raters, uncertain_band
from .links import get_link
from .mixture import fit_mixture
from .result import FusionResult
from .spatial_prior import GaussianBasisPrior
from .student_t import fit_consensus

__all__ = ["fuse", "fuse_mixture", "METHODS", "DEFAULT_SMOOTHNESS_MM", "default_smoothness_mm", "fuse_maps",
           "resolution_variance"]

METHODS = ("student-t", "gaussian", "staple", "majority")

#: Default distance between the spatial prior's Gaussian bases (and their width), mm: module docstring,
#: "The smoothness prior's default scale".
DEFAULT_SMOOTHNESS_MM = 2.0


def default_smoothness_mm(kind: str) -> float:
    """The smoothness (basis spacing, mm; 0 = no spatial prior) that the panels, the logic and the ``fuse``
    command start from for raters of ``kind`` (:data:`~.inputs.KINDS`, resolved).

    Masks and label maps get the prior, :data:`DEFAULT_SMOOTHNESS_MM` apart: the prior cleans speckled
    borders (README, "Which method for which raters?"). Probability maps (a network's softmax, a sampler's
    frequency map) are smooth already, and every such case measured fuses as well or better without it, and
    many times faster. Student-t, square-root link, frequency maps of 5 samples each of the MNI152 ventricles
    (``python bench/frequency_maps_fusion.py 5``), Dice to the reference without / with the prior, and the
    time with it as a multiple of the time without: the SSN, PHiSeg and MC-dropout networks' maps 0.997 /
    0.994, 43 × (500 iterations, not converged); GPSSI's and the log-odds baseline's 0.975 / 0.973, 26 ×.
    :func:`fuse` itself keeps ``spatial_prior=True``, the paper's model: a script says what it wants.
    """
    return 0.0 if kind == "probability" else DEFAULT_SMOOTHNESS_MM


Progress = Callable[[float, str], None]


def _scaled(progress: Progress | None, start: float, stop: float) -> Progress | None:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (stop - start) * fraction, message)


def _result(method, probabilities, maps: RaterMaps, names, *, tau_box=None, tau_outside=None, bias=None,
            variance=None, nu=None,
            mean_tau=None, consensuses=None, responsibilities=None, clusters=None, domain=None,
            parameters=None) -> FusionResult:
    n_raters = maps.n_raters
    nan = np.full(n_raters, np.nan)
    labels = _argmax(probabilities)
    return FusionResult(
        method=method, probabilities=probabilities, labels=labels, spacing=maps.spacing, tau_box=tau_box,
        tau_outside=tau_outside,
        consensuses=probabilities[None] if consensuses is None else consensuses,
        responsibilities=np.ones((n_raters, 1)) if responsibilities is None else responsibilities,
        clusters=np.zeros(n_raters, dtype=int) if clusters is None else clusters,
        bias=np.full((n_raters, maps.n_classes), np.nan) if bias is None else bias,
        variance=nan.copy() if variance is None else variance, nu=nan.copy() if nu is None else nu,
        mean_tau=nan.copy() if mean_tau is None else mean_tau, rater_labels=maps.labels,
        rater_names=list(names), domain=maps.box if domain is None else domain, parameters=parameters or {})


def _argmax(probabilities: np.ndarray) -> np.ndarray:
    """Arg-max over the class axis (ties to the lower class), uint8, without numpy's strided arg-max."""
    best = probabilities[0].copy()
    labels = np.zeros(best.shape, dtype=np.uint8)
    for k in range(1, probabilities.shape[0]):
        better = probabilities[k] > best
        np.copyto(best, probabilities[k], where=better)
        labels[better] = k
    return labels


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _embed(box_values: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...], fill: np.ndarray) -> np.ndarray:
    """``(C, *box_shape)`` → ``(C, *shape)`` filled with ``fill[c]`` outside the box."""
    out = np.empty((box_values.shape[0], *shape), dtype=np.float32)
    out[:] = np.asarray(fill, dtype=np.float32).reshape(-1, *([1] * len(shape)))
    out[(slice(None), *box)] = box_values
    return out


def resolution_variance(values_box: torch.Tensor, band_box: torch.Tensor) -> float:
    """Variance (link units², per coordinate) that a map's voxel resolution leaves in its link values.

    The mean over the band voxels and the raters of ``Σ_a (Δ_a F)² / (12 d)``, with ``Δ_a F`` the change of
    the link value to the next voxel along axis ``a`` (module docstring: a uniform sub-voxel shift).

    Parameters
    ----------
    values_box : Tensor, (P, d, *box_shape)
        The raters' link values on the box.
    band_box : Tensor of bool, box_shape
        The band voxels of the box.
    """
    n_raters, d = values_box.shape[:2]
    count = int(band_box.sum())
    if count == 0:
        return 0.0
    total = 0.0
    for axis in range(band_box.ndim):
        n = band_box.shape[axis]
        if n < 2:
            continue
        step = values_box.narrow(2 + axis, 1, n - 1) - values_box.narrow(2 + axis, 0, n - 1)
        squared = step.square_().sum(dim=(0, 1))                  # summed over raters and link coordinates
        total += float(squared[band_box.narrow(axis, 0, n - 1)].sum(dtype=torch.float64))
    return total / (12.0 * d * n_raters * count)


def fuse_maps(maps: RaterMaps, method: str = "student-t", *, names: Sequence[str] | None = None, link="sqrt",
              spatial_prior: bool = True, smoothness_mm: float = DEFAULT_SMOOTHNESS_MM,
              basis_width_mm: float | None = None, certainty_tolerance: float = 1e-3, covariance: str | None = None,
              max_iterations: int = 500, tolerance: float = 1e-3, fit_options: dict | None = None,
              progress: Progress | None = None, device: str = "cpu") -> FusionResult:
    """Fuse prepared rater maps (:func:`~.inputs.prepare_raters`); see :func:`fuse` for the parameters
    (``fit_options`` go to :func:`~.student_t.fit_consensus`, e.g. ``nu_range``, or ``min_variance`` to
    replace the default floor, :func:`resolution_variance`)."""
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {METHODS}")
    names = [f"rater {p}" for p in range(maps.n_raters)] if names is None else [str(n) for n in names]
    if len(names) != maps.n_raters:
        raise ValueError(f"{len(names)} rater names for {maps.n_raters} raters")
    background = np.eye(maps.n_classes, dtype=np.float32)[0]
    if method == "majority":
        return _result(method, majority_vote(maps.labels, maps.n_classes), maps, names, domain=tuple(
            slice(0, n) for n in maps.shape))
    if method == "staple":
        probabilities, parameters = staple(maps.labels, maps.n_classes, maps.spacing)
        return _result(method, probabilities, maps, names, parameters=parameters,
                       domain=tuple(slice(0, n) for n in maps.shape))

    device = check_device(device)
    link = get_link(link)
    robust = method == "student-t"
    d = link.dimension(maps.n_classes)
    band = uncertain_band(maps.probabilities, certainty_tolerance)
    if not band.any():
        # every rater is certain of the same class everywhere: that is the consensus
        probabilities = _embed(maps.probabilities.mean(axis=0), maps.box, maps.shape, background)
        tau = np.ones((maps.n_raters, *maps.probabilities.shape[2:]), dtype=np.float32) if robust else None
        return _result(method, probabilities, maps, names, tau_box=tau,
                       tau_outside=np.ones(maps.n_raters) if robust else None,
                       parameters={"band_voxels": 0, "n_iterations": 0, "converged": True, "last_change": 0.0})
    inner = _bounding_box(band)                     # the band's box within the prepared box
    box = tuple(slice(outer.start + i.start, outer.start + i.stop) for outer, i in zip(maps.box, inner))
    box_shape = tuple(s.stop - s.start for s in inner)
    probabilities_box = torch.from_numpy(np.ascontiguousarray(maps.probabilities[(slice(None), slice(None), *inner)]))
    values_box = link.forward(probabilities_box.to(device).reshape(maps.n_raters, maps.n_classes, -1))
    del probabilities_box
    band_flat = torch.from_numpy(np.flatnonzero(band[inner])).to(device)
    whole_box = band_flat.numel() == values_box.shape[2]
    values = values_box if whole_box else values_box[:, :, band_flat].contiguous()
    common = values_box.mean(dim=0)                 # the consensus where every rater is certain of one class
    fit_options = dict(fit_options or {})
    if "min_variance" not in fit_options:
        band_box = torch.from_numpy(np.ascontiguousarray(band[inner])).to(device)
        fit_options["min_variance"] = max(resolution_variance(values_box.reshape(*values_box.shape[:2], *box_shape),
                                                              band_box), 1e-6)
    del values_box
    prior = None
    if spatial_prior:
        prior = GaussianBasisPrior(box_shape, maps.spacing, smoothness_mm, basis_width_mm, device=device)
    if covariance is None:
        covariance = "isotropic" if link.name == "sqrt" else "full"
    estimate = fit_consensus(values, robust=robust, prior=prior, band_index=None if whole_box else band_flat,
                             initial_box=None if whole_box else common, covariance=covariance,
                             max_iterations=max_iterations, **fit_options,
                             tolerance=tolerance, progress=progress)
    del values
    consensus_box = common
    consensus_box[:, band_flat] = estimate.mean
    probabilities = link.inverse(consensus_box, maps.n_classes).reshape(maps.n_classes, *box_shape)
    probabilities = _embed(probabilities.cpu().numpy(), box, maps.shape, background)
    tau_box = resting = mean_tau = None
    if robust:
        resting = (estimate.nu + d) / estimate.nu                              # τ̂ of a rater equal to the consensus
        tau_box = torch.as_tensor(resting, dtype=estimate.tau.dtype, device=device)[:, None].repeat(
            1, consensus_box.shape[1])
        tau_box[:, band_flat] = estimate.tau
        tau_box = tau_box.reshape(maps.n_raters, *box_shape).cpu().numpy()
        mean_tau = estimate.tau.mean(dim=1).to(torch.float64).cpu().numpy()
    directions = link.class_directions(maps.n_classes).numpy()                # (K, d)
    parameters = {
        "beta": estimate.beta, "alpha": estimate.alpha, "prior_variance": estimate.prior_variance,
        "lower_bound": estimate.lower_bound, "n_iterations": estimate.n_iterations, "converged": estimate.converged,
        "last_change": estimate.last_change,
        "band_voxels": int(band_flat.numel()), "link": link.name, "spatial_prior": bool(spatial_prior),
        "smoothness_mm": float(smoothness_mm) if spatial_prior else None,
        "basis_width_mm": (float(basis_width_mm or smoothness_mm) if spatial_prior else None),
        "bias_link": estimate.bias, "covariance": estimate.covariance,
        "min_variance": float(fit_options["min_variance"]), "device": device.type,
    }
    return _result(method, probabilities, maps, names, tau_box=tau_box, tau_outside=resting,
                   bias=estimate.bias @ directions.T,
                   variance=np.trace(estimate.covariance, axis1=1, axis2=2) / d, nu=estimate.nu, mean_tau=mean_tau,
                   domain=box, parameters=parameters)


def fuse(raters, method: str = "student-t", *, spacing: Sequence[float] | None = None,
         image: np.ndarray | None = None, kind: str = "auto", n_classes: int | None = None, class_axis: bool = False,
         names: Sequence[str] | None = None, link="sqrt", scale_mm: float = 1.0, gamma: float | None = None,
         spatial_prior: bool = True, smoothness_mm: float = DEFAULT_SMOOTHNESS_MM, basis_width_mm: float | None = None,
         certainty_tolerance: float = 1e-3, covariance: str | None = None, crop: bool = True,
         max_iterations: int = 500, tolerance: float = 1e-3,
         progress: Progress | None = None, device: str = "cpu") -> FusionResult:
    """Fuse ``P`` raters' masks, label maps or probability maps into a consensus.

    Parameters
    ----------
    raters : ndarray (P, *shape) / (P, K, *shape) or sequence of P arrays
        Binary masks, label maps (0 = background) or probability maps, on one grid (:mod:`.inputs`).
    method : {"student-t", "gaussian", "staple", "majority"}
        Robust Student-t fusion (papers/004), the same with Gaussian likelihood (``τ ≡ 1``), SimpleITK
        STAPLE, or majority vote.
    spacing : sequence of float, optional
        Voxel size per axis in mm (default 1).
    image : ndarray, optional
        Intensities: masks become probabilities through *geodesic* distances that follow its edges.
    kind, n_classes, class_axis
        How to read ``raters`` (:func:`~.inputs.check_raters`).
    names : sequence of str, optional
        Rater names for the table.
    link : {"sqrt", "logit"} or Link
        Link function (:mod:`.links`); square root (Hellinger) by default.
    scale_mm : float
        Width of the masks' probability maps: ``P(inside) = sigmoid(−d / scale_mm)``.
    gamma : float, optional
        Geodesic edge weight (default ``100 / mean(|image|)``).
    spatial_prior : bool
        Smoothness prior of Gaussian bases; ``False``: flat prior.
    smoothness_mm : float
        Distance between the bases' centres (mm): larger gives a smoother consensus.
    basis_width_mm : float, optional
        Standard deviation of each basis (mm), default ``smoothness_mm``.
    certainty_tolerance : float
        A voxel where every rater gives the same class at least ``1 − certainty_tolerance`` is clamped to
        the raters' common value (module docstring).
    crop : bool
        Prepare the maps on the bounding box of the raters' foreground only (``False``: the whole grid).
    max_iterations, tolerance
        Variational Bayes stopping rule: stop when one iteration moves no voxel's consensus by more than
        ``tolerance`` (link units) and changes no weight τ and no hyperparameter by more than that fraction
        (:func:`~.student_t.fit_consensus`); ``parameters`` reports ``converged`` and ``last_change``.
    progress : callable(fraction, message), optional
    device : {"cpu", "cuda", "auto"}

    Returns
    -------
    FusionResult
    """
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {METHODS}")
    if not (0 < certainty_tolerance < 0.5):
        raise ValueError(f"certainty_tolerance must lie in (0, 0.5), got {certainty_tolerance}")
    if isinstance(max_iterations, bool) or int(max_iterations) != max_iterations or max_iterations < 1:
        raise ValueError(f"max_iterations must be a positive integer, got {max_iterations}")
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if spatial_prior and not (np.isfinite(smoothness_mm) and smoothness_mm > 0):
        raise ValueError(f"smoothness_mm must be a positive length in mm, got {smoothness_mm}")
    if basis_width_mm is not None and not (np.isfinite(basis_width_mm) and basis_width_mm > 0):
        raise ValueError(f"basis_width_mm must be a positive length in mm, got {basis_width_mm}")
    get_link(link)
    if progress is not None:
        progress(0.0, "preparing the raters' maps")
    label_only = method in ("staple", "majority")
    maps = prepare_raters(raters, kind, spacing=spacing, image=None if label_only else image, n_classes=n_classes,
                          class_axis=class_axis, scale_mm=scale_mm, gamma=gamma, crop=crop,
                          background_tolerance=certainty_tolerance, device=device)
    if progress is not None:
        progress(0.1, f"fusing {maps.n_raters} raters ({method})")
    result = fuse_maps(maps, method, names=names, link=link, spatial_prior=spatial_prior, smoothness_mm=smoothness_mm,
                       basis_width_mm=basis_width_mm, certainty_tolerance=certainty_tolerance,
                       covariance=covariance, max_iterations=int(max_iterations), tolerance=tolerance,
                       progress=_scaled(progress, 0.1, 0.95), device=device)
    if progress is not None:
        progress(1.0, "done")
    return result


def _subset(maps: RaterMaps, raters: np.ndarray) -> RaterMaps:
    return RaterMaps(probabilities=maps.probabilities[raters], labels=maps.labels[raters], box=maps.box,
                     shape=maps.shape, spacing=maps.spacing, kind=maps.kind, n_classes=maps.n_classes)


def fuse_mixture(raters, method: str = "student-t", *, spacing: Sequence[float] | None = None,
                 image: np.ndarray | None = None, kind: str = "auto", n_classes: int | None = None,
                 class_axis: bool = False, names: Sequence[str] | None = None, link="sqrt", scale_mm: float = 1.0,
                 gamma: float | None = None, certainty_tolerance: float = 1e-3, crop: bool = True,
                 explained_variance: float = 0.95, max_components: int | None = None,
                 rater_variance: str = "shared", progress: Progress | None = None, device: str = "cpu",
                 **fuse_options) -> FusionResult:
    """Clusters of raters (:mod:`.mixture`) and one consensus per cluster.

    The raters are clustered by the mixture of consensuses (PCA of their link maps on the fusion band,
    incremental variational boosting); then each cluster of two raters or more is fused with ``method``
    (as :func:`fuse`, with ``fuse_options`` such as ``spatial_prior`` or ``smoothness_mm``), and a cluster
    of one rater has that rater's map as its consensus. ``method=None`` keeps the mixture's own
    consensuses (the paper's: the PCA mean plus each component's coordinates).

    Parameters are those of :func:`fuse`, plus ``explained_variance`` (the PCA's share of the raters'
    spread), ``max_components`` (default: the number of raters) and ``rater_variance`` (``"shared"`` or
    ``"per-rater"``, :func:`~.mixture.fit_mixture`).

    Returns
    -------
    FusionResult
        ``consensuses`` holds one map per cluster (largest cluster first), ``responsibilities`` and
        ``clusters`` the raters' memberships; ``probabilities`` / ``labels`` are the largest cluster's
        consensus; each rater's bias, variance, ν, τ come from its cluster's fusion, and its Dice and
        HD95 are measured against its cluster's consensus. ``parameters["clusters"]`` holds each
        cluster's own fusion parameters.
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {METHODS} (or None)")
    if not (0 < explained_variance <= 1):
        raise ValueError(f"explained_variance must lie in (0, 1], got {explained_variance}")
    if max_components is not None and (int(max_components) != max_components or max_components < 1):
        raise ValueError(f"max_components must be a positive integer, got {max_components}")
    if not (0 < certainty_tolerance < 0.5):
        raise ValueError(f"certainty_tolerance must lie in (0, 0.5), got {certainty_tolerance}")
    unknown = set(fuse_options) - {"spatial_prior", "smoothness_mm", "basis_width_mm", "covariance", "max_iterations",
                                   "tolerance"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for fuse_mixture")
    link = get_link(link)
    if progress is not None:
        progress(0.0, "preparing the raters' maps")
    maps = prepare_raters(raters, kind, spacing=spacing, image=image, n_classes=n_classes, class_axis=class_axis,
                          scale_mm=scale_mm, gamma=gamma, crop=crop, background_tolerance=certainty_tolerance,
                          device=device)
    names = [f"rater {p}" for p in range(maps.n_raters)] if names is None else [str(n) for n in names]
    if len(names) != maps.n_raters:
        raise ValueError(f"{len(names)} rater names for {maps.n_raters} raters")
    if progress is not None:
        progress(0.2, "principal components and mixture")
    background = np.eye(maps.n_classes, dtype=np.float32)[0]
    band = uncertain_band(maps.probabilities, certainty_tolerance)
    values_box = link.forward(torch.from_numpy(maps.probabilities).reshape(maps.n_raters, maps.n_classes, -1))
    d = values_box.shape[1]
    band_flat = torch.from_numpy(np.flatnonzero(band))
    common = values_box.mean(dim=0)
    box_shape = maps.probabilities.shape[2:]
    if band_flat.numel() == 0:                     # every rater certain of the same classes: one cluster
        responsibilities, variances, tried = np.ones((maps.n_raters, 1)), np.zeros(maps.n_raters), 1
        pca_maps = [common]
    else:
        values = values_box[:, :, band_flat].reshape(maps.n_raters, -1).to(torch.float64).numpy()
        estimate, _, pca_mean, components = fit_mixture(values, explained_variance=explained_variance,
                                                       max_components=max_components, rater_variance=rater_variance)
        order = np.argsort(-estimate.weights, kind="stable")
        responsibilities, variances = estimate.responsibilities[:, order], estimate.variances
        tried = estimate.n_components_tried
        pca_maps = []
        for mean in estimate.means[order]:
            box = common.clone()
            box[:, band_flat] = torch.from_numpy((pca_mean + mean @ components).reshape(d, -1)).to(box.dtype)
            pca_maps.append(box)
    clusters = responsibilities.argmax(axis=1)
    n_clusters = responsibilities.shape[1]
    nan = np.full(maps.n_raters, np.nan)
    bias = np.full((maps.n_raters, maps.n_classes), np.nan)
    variance, nu, mean_tau = np.asarray(variances, float).copy(), nan.copy(), nan.copy()
    tau_box = tau_outside = None
    cluster_parameters = []
    consensuses = []
    for m in range(n_clusters):
        members = np.flatnonzero(clusters == m)
        if method is None or len(members) < 2:
            probabilities = link.inverse(pca_maps[m] if method is None else link.forward(
                torch.from_numpy(maps.probabilities[members[0]]).reshape(maps.n_classes, -1)), maps.n_classes)
            consensuses.append(_embed(probabilities.reshape(maps.n_classes, *box_shape).numpy(), maps.box,
                                      maps.shape, background))
            cluster_parameters.append({"raters": members.tolist(), "method": None})
            continue
        if progress is not None:
            progress(0.3 + 0.6 * m / n_clusters, f"consensus {m + 1} of {n_clusters} ({len(members)} raters)")
        fused = fuse_maps(_subset(maps, members), method, names=[names[p] for p in members], link=link,
                          certainty_tolerance=certainty_tolerance, device=device, **fuse_options)
        consensuses.append(fused.probabilities)
        bias[members], nu[members], mean_tau[members] = fused.bias, fused.nu, fused.mean_tau
        if method in ("student-t", "gaussian"):
            variance[members] = fused.variance
        if fused.tau is not None:
            if tau_box is None:
                tau_box = np.ones((maps.n_raters, *box_shape), dtype=np.float32)
                tau_outside = np.ones(maps.n_raters)
            tau_box[members] = fused.tau[(slice(None), *maps.box)]
            tau_outside[members] = fused.tau_outside
        cluster_parameters.append({"raters": members.tolist(), "method": method, **fused.parameters})
    consensuses = np.stack(consensuses)
    labels = _argmax(consensuses[0])
    if progress is not None:
        progress(1.0, f"{n_clusters} consensus(es)")
    return FusionResult(
        method="mixture", probabilities=consensuses[0], labels=labels, spacing=maps.spacing, tau_box=tau_box,
        tau_outside=tau_outside, consensuses=consensuses, responsibilities=responsibilities, clusters=clusters,
        bias=bias, variance=variance, nu=nu, mean_tau=mean_tau, rater_labels=maps.labels, rater_names=names,
        domain=maps.box, parameters={"components_tried": tried, "band_voxels": int(band_flat.numel()),
                                     "explained_variance": explained_variance, "link": link.name,
                                     "cluster_method": method, "clusters": cluster_parameters})
