"""Mixture of consensuses: clusters of raters, one consensus each (papers/004, section 3, supplementary 1.2).

Raters' maps ``D̃^p`` are assumed to come from one of ``M`` consensuses: ``Z_pm ∈ {0, 1}``, ``p(Z_pm = 1) = π_m``,
``p(D̃^p | T̃) = Π_m N(D̃^p; T̃_m, Σ_p)^{Z_pm}`` (Gaussian, no bias, as in the paper).

Dimension. A Gaussian mixture on whole maps (``N d`` dimensions, ``P`` samples) gives hard, arbitrary
responsibilities; so the raters' link maps (on the fusion band, :mod:`.consensus`) are reduced by a PCA
first and the mixture is fitted on their ``Q`` principal coordinates ``y_p`` (enough components for
``explained_variance`` of the spread, at most ``P − 1``), with ``Σ_p = σ_p² I_Q``. A consensus in these
coordinates maps back to a whole map through the PCA (mean + components).

Rater variance: in ``Q ≤ P − 1`` coordinates a variance per rater is barely determined — each rater's
``σ_p²`` follows its own distance to whichever consensus, so a far rater costs only ``log σ_p²`` and two
clear groups are explained as well by one middle consensus. By default the raters share one ``σ²``
(``rater_variance="shared"``); ``"per-rater"`` is the paper's ``Σ_p = σ_p² I``.

Variational updates (supplementary 1.2), with ``q(T̃_m) = N(μ_m, s_m² I)``:

* ``s_m² = (Σ_p r_pm / σ_p² + 1 / s_0²)⁻¹``, ``μ_m = s_m² Σ_p r_pm y_p / σ_p²``;
* ``log ρ_pm = log π_m − (Q/2) log(2π σ_p²) − (‖y_p − μ_m‖² + Q s_m²) / (2 σ_p²)``, ``r_pm = ρ_pm / Σ_m ρ_pm``;
* ``π_m = P⁻¹ Σ_p r_pm``; ``σ_p² = Q⁻¹ Σ_m r_pm (‖y_p − μ_m‖² + Q s_m²)`` (shared: its mean over raters).

The paper leaves the consensuses' prior flat; we give them ``N(0, s_0² I)`` with ``s_0²`` the raters'
spread per principal coordinate (the ``1/s_0²`` term above), so that the lower bound of fits with
different numbers of consensuses can be compared: each consensus pays ``KL(q(T̃_m) ‖ p(T̃_m))``.

Incremental variational boosting (section 3): start with one consensus, then add one at a time. The
paper keeps the earlier consensuses frozen and initialises the new one's responsibilities to
``res_p / Σ_p res_p`` with ``res_p = Σ_{n,m} |D̃_n^p − T̃_nm|``, and stops when no rater joins it. We keep
the idea — the new consensus starts from the raters' residuals — but not those exact choices, which
fail on the simplest case, two groups of raters: the first consensus sits between the groups; residual
proportions are all near ``1/P``, so the new consensus starts as a near-uniform mean next to it; and
with the middle one frozen, the group left with it keeps the variance large enough that every rater
returns to it (seen on two clear groups of GPSSI raters). Instead, the raters on the positive side of
the principal axis of their residuals (each against its current consensus) start in the new
consensus, and all consensuses are refined together (``freeze=True`` keeps the earlier ones fixed).
The new consensus is kept only if the lower bound rises and it ends with at least two raters, no
consensus being left with a single one (one far rater is an outlier, not a second truth); otherwise,
or at ``max_components``, the search stops. Consensuses with no rater are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MixtureEstimate", "principal_coordinates", "fit_mixture"]


@dataclass
class MixtureEstimate:
    """Fitted mixture.

    Attributes
    ----------
    means : ndarray, (M, Q)
        ``μ_m`` in principal coordinates.
    responsibilities : ndarray, (P, M)
    weights : ndarray, (M,)
        ``π_m``.
    variances : ndarray, (P,)
        ``σ_p²``.
    n_components_tried : int
        Components fitted, including a last one dropped because no rater joined it.
    """

    means: np.ndarray
    responsibilities: np.ndarray
    weights: np.ndarray
    variances: np.ndarray
    n_components_tried: int


def principal_coordinates(values: np.ndarray, explained_variance: float = 0.95
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of ``P`` flattened maps ``(P, M)``: ``(coordinates (P, Q), mean (M,), components (Q, M))``.

    ``Q`` is the smallest number of components holding ``explained_variance`` of the total spread (at
    least 1, at most ``P − 1``); maps are ``mean + coordinates @ components`` up to the discarded part.
    Computed from the ``P × P`` Gram matrix, so the cost is ``O(P² M)``.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=0)
    centred = values - mean
    gram = centred @ centred.T
    eigenvalues, vectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
    total = eigenvalues.sum()
    if total <= 0:
        q = 1
    else:
        q = int(np.searchsorted(np.cumsum(eigenvalues) / total, explained_variance - 1e-12) + 1)
    q = max(1, min(q, values.shape[0] - 1))
    scale = np.sqrt(np.maximum(eigenvalues[:q], 1e-300))
    components = (vectors[:, :q].T @ centred) / scale[:, None]          # orthonormal rows
    coordinates = vectors[:, :q] * scale[None, :]
    return coordinates, mean, components


def _fit(y, means, spreads, responsibilities, frozen, variances, prior_variance, min_variance, max_iterations,
         tolerance, shared):
    """VB iterations of supplementary 1.2 from the given responsibilities, with the first ``frozen``
    consensuses ``q(T̃_m) = N(means[m], spreads[m] I)`` fixed. Returns the fit and its lower bound."""
    n_raters, q = y.shape
    means, spreads = means.copy(), spreads.copy()
    for _ in range(max_iterations):
        old = responsibilities
        weights = responsibilities.mean(axis=0)
        precision = responsibilities / variances[:, None]                   # r_pm / σ_p²
        for m in range(frozen, means.shape[0]):
            spreads[m] = 1.0 / (precision[:, m].sum() + 1.0 / prior_variance)
            means[m] = spreads[m] * (precision[:, m] @ y)
        distance = ((y[:, None, :] - means[None, :, :]) ** 2).sum(axis=2) + q * spreads[None, :]     # (P, M)
        variances = (responsibilities * distance).sum(axis=1) / q
        if shared:
            variances = np.full(n_raters, variances.mean())
        variances = np.maximum(variances, min_variance)
        log_rho = (np.log(np.maximum(weights, 1e-300))[None, :] - 0.5 * q * np.log(2 * math.pi * variances)[:, None]
                   - distance / (2 * variances[:, None]))
        log_rho -= log_rho.max(axis=1, keepdims=True)
        responsibilities = np.exp(log_rho)
        responsibilities /= responsibilities.sum(axis=1, keepdims=True)
        if np.abs(responsibilities - old).max() < tolerance:
            break
    weights = responsibilities.mean(axis=0)
    distance = ((y[:, None, :] - means[None, :, :]) ** 2).sum(axis=2) + q * spreads[None, :]
    expected = (np.log(np.maximum(weights, 1e-300))[None, :] - 0.5 * q * np.log(2 * math.pi * variances)[:, None]
                - distance / (2 * variances[:, None]))
    entropy = -np.sum(responsibilities * np.log(np.maximum(responsibilities, 1e-300)))
    kl = 0.5 * np.sum(q * spreads / prior_variance + (means ** 2).sum(axis=1) / prior_variance - q
                      - q * np.log(spreads / prior_variance))
    bound = float(np.sum(responsibilities * expected) + entropy - kl)
    return means, spreads, responsibilities, variances, bound


def fit_mixture(values: np.ndarray, *, explained_variance: float = 0.95, max_components: int | None = None,
                rater_variance: str = "shared", freeze: bool = False, min_variance: float = 1e-8,
                max_iterations: int = 500,
                tolerance: float = 1e-7
                ) -> tuple[MixtureEstimate, np.ndarray, np.ndarray, np.ndarray]:
    """Mixture of consensuses of ``P`` raters' flattened link maps ``(P, M)`` by incremental boosting.

    ``rater_variance``: ``"shared"`` (one ``σ²`` for all raters, the default) or ``"per-rater"`` (``σ_p²``, the
    paper's ``Σ_p``). ``freeze``: keep the earlier consensuses fixed while the new one is fitted (the
    paper's boosting) instead of refining all of them from the seeded start. See the module docstring
    for why neither is the default.

    Returns ``(estimate, coordinates, pca_mean, components)``; consensus ``m`` as a map is
    ``pca_mean + estimate.means[m] @ components``.
    """
    if rater_variance not in ("shared", "per-rater"):
        raise ValueError(f"rater_variance must be 'shared' or 'per-rater', got {rater_variance!r}")
    shared = rater_variance == "shared"
    values = np.asarray(values, dtype=np.float64)
    n_raters = values.shape[0]
    max_components = n_raters if max_components is None else int(max_components)
    y, pca_mean, components = principal_coordinates(values, explained_variance)
    q = y.shape[1]
    # one consensus
    prior_variance = max(float((y ** 2).sum(axis=1).mean()) / q, min_variance)     # spread of the raters
    variances = np.full(n_raters, prior_variance)
    means, spreads, responsibilities, variances, bound = _fit(
        y, np.zeros((1, q)), np.zeros(1), np.ones((n_raters, 1)), 0, variances, prior_variance, min_variance,
        max_iterations, tolerance, shared)
    tried = 1
    while means.shape[0] < max_components:
        m_old = means.shape[0]
        assigned = responsibilities.argmax(axis=1)
        residual = y - means[assigned]                                  # each rater against its consensus
        if not np.any(np.abs(residual) > 0):
            break
        # the residuals' principal axis splits the raters: those on its positive side start the new one
        axis = np.linalg.eigh(residual.T @ residual)[1][:, -1]
        side = residual @ axis
        worst = int(np.argmax(np.abs(side)))
        start = np.eye(m_old + 1)[np.where(np.sign(side) == np.sign(side[worst]), m_old, assigned)]
        fitted = _fit(y, np.vstack([means, y[worst]]), np.append(spreads, 0.0), start, m_old if freeze else 0,
                      variances.copy(), prior_variance, min_variance, max_iterations, tolerance, shared)
        tried += 1
        sizes = np.bincount(fitted[2].argmax(axis=1), minlength=m_old + 1)
        # keep the new consensus only if the bound rises (the prior on the consensuses makes each new one
        # pay for itself) and every consensus is shared by two raters or more (one far rater is an
        # outlier, not a second truth)
        if fitted[4] <= bound or sizes[m_old] < 2 or np.any((sizes > 0) & (sizes < 2)):
            break
        means, spreads, responsibilities, variances, bound = fitted
    # drop consensuses that no rater chose
    keep = np.unique(responsibilities.argmax(axis=1))
    responsibilities = responsibilities[:, keep]
    responsibilities /= responsibilities.sum(axis=1, keepdims=True)
    means = means[keep]
    return (MixtureEstimate(means=means, responsibilities=responsibilities, weights=responsibilities.mean(axis=0),
                            variances=variances, n_components_tried=tried), y, pca_mean, components)
