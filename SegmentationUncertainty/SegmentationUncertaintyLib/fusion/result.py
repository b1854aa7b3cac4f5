"""What a fusion returns: consensus maps, per-rater weight maps and a per-rater table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FusionResult", "RATER_COLUMNS"]

#: Columns of :meth:`FusionResult.rater_table`, in order (``bias_<k>`` follow ``rater`` for each foreground class).
RATER_COLUMNS = ("rater", "cluster", "variance", "nu", "mean_tau", "relative_tau", "dice", "hd95_mm")


@dataclass
class FusionResult:
    """Result of a fusion of ``P`` raters into one consensus (or ``M`` consensuses for a mixture).

    Attributes
    ----------
    method : str
        ``"student-t"``, ``"gaussian"``, ``"staple"``, ``"majority"`` or ``"mixture"``.
    probabilities : ndarray of float32, (K, *shape)
        Consensus class probabilities (for a mixture: those of the first consensus).
    labels : ndarray of uint8, (*shape)
        Consensus label map (arg-max class; ties go to the lower class).
    spacing : tuple of float
        Voxel size per axis (mm).
    tau_box : ndarray of float32, (P, *box_shape) or None
        ``E[τ_n^p]`` on the box ``domain`` (``None`` for methods without it); :attr:`tau` is the whole map.
    tau_outside : ndarray of float, (P,) or None
        ``τ`` of each rater outside ``domain``.
    consensuses : ndarray of float32, (M, K, *shape)
        Every consensus' class probabilities (``M = 1`` except for a mixture).
    responsibilities : ndarray of float, (P, M)
        Each rater's posterior membership of each consensus.
    clusters : ndarray of int, (P,)
        Each rater's consensus (arg-max responsibility).
    bias : ndarray of float, (P, K)
        Each rater's bias towards each class (link units, positive: the rater favours the class), or NaN.
    variance : ndarray of float, (P,)
        Mean variance ``Tr Σ_p / d`` of each rater (link units squared), or NaN.
    nu : ndarray of float, (P,)
        Degrees of freedom (``inf``: Gaussian), or NaN.
    mean_tau : ndarray of float, (P,)
        Mean ``τ`` of each rater over the fitted band, or NaN.
    rater_labels : ndarray of uint8, (P, *shape)
        The raters' hard label maps (masks, or the arg-max class of probability maps).
    rater_names : list of str
    domain : tuple of slice
        The box where the fusion ran (outside it the consensus is the background with certainty).
    parameters : dict
        Everything else: ``beta``, ``alpha``, ``prior_variance``, ``lower_bound``, ``n_iterations``,
        ``converged``, ``band_voxels``, the options used, STAPLE's sensitivities...
    """

    method: str
    probabilities: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]
    tau_box: np.ndarray | None
    tau_outside: np.ndarray | None
    consensuses: np.ndarray
    responsibilities: np.ndarray
    clusters: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    nu: np.ndarray
    mean_tau: np.ndarray
    rater_labels: np.ndarray
    rater_names: list[str]
    domain: tuple[slice, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    _overlaps: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    _tau: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def tau(self) -> np.ndarray | None:
        """``E[τ_n^p]`` on the whole grid, ``(P, *shape)`` float32 (built on first use), or ``None``: where each
        rater is trusted; low where it is locally an outlier."""
        if self.tau_box is None:
            return None
        if self._tau is None:
            tau = np.empty((self.n_raters, *self.labels.shape), dtype=np.float32)
            for p in range(self.n_raters):
                tau[p].fill(self.tau_outside[p])
            tau[(slice(None), *self.domain)] = self.tau_box
            self._tau = tau
        return self._tau

    def _overlap(self) -> tuple[np.ndarray, np.ndarray]:
        if self._overlaps is None:
            from ..metrics import dice, hausdorff95

            targets = self.consensus_labels() > 0
            own = [targets[self.clusters[p]] for p in range(self.n_raters)]
            raters = self.rater_labels > 0
            self._overlaps = (np.array([dice(r, t) for r, t in zip(raters, own)]),
                              np.array([hausdorff95(r, t, self.spacing) for r, t in zip(raters, own)]))
        return self._overlaps

    @property
    def dice(self) -> np.ndarray:
        """Dice of each rater's foreground with its consensus' foreground, ``(P,)`` (computed on first use)."""
        return self._overlap()[0]

    @property
    def hd95_mm(self) -> np.ndarray:
        """95 % Hausdorff distance (mm) of each rater's foreground to its consensus' foreground, ``(P,)``."""
        return self._overlap()[1]

    @property
    def mask(self) -> np.ndarray:
        """Consensus foreground (any class but the background), bool ``(*shape)``."""
        return self.labels > 0

    @property
    def n_raters(self) -> int:
        return len(self.rater_names)

    @property
    def n_classes(self) -> int:
        return self.probabilities.shape[0]

    def consensus_labels(self) -> np.ndarray:
        """Label maps of every consensus, ``(M, *shape)`` uint8."""
        return self.consensuses.argmax(axis=1).astype(np.uint8)

    @property
    def relative_tau(self) -> np.ndarray:
        """Mean ``τ`` of each rater divided by the ``τ`` of a rater equal to the consensus, ``(ν_p + d)/ν_p``:
        its mean weight relative to full trust, in (0, 1]. Unlike the raw mean ``τ`` it compares raters
        with different ``ν`` (a rater with heavier tails has higher ``τ`` where it agrees). NaN without ``τ``."""
        if self.tau_outside is None:
            return np.full(self.n_raters, np.nan)
        return self.mean_tau / np.asarray(self.tau_outside, dtype=float)

    def lowest_tau_rater(self) -> int | None:
        """The most outlying rater (lowest :attr:`relative_tau`), or ``None`` without ``τ``."""
        relative = self.relative_tau
        if not np.isfinite(relative).any():
            return None
        return int(np.nanargmin(relative))

    def rater_table(self) -> list[dict[str, Any]]:
        """One row per rater: name, cluster, ``bias_<k>`` per foreground class, variance, ν, mean τ, relative τ,
        Dice, HD95."""
        rows = []
        for p, name in enumerate(self.rater_names):
            row: dict[str, Any] = {"rater": name, "cluster": int(self.clusters[p])}
            for k in range(1, self.bias.shape[1]):
                row[f"bias_{k}"] = float(self.bias[p, k])
            row.update(variance=float(self.variance[p]), nu=float(self.nu[p]), mean_tau=float(self.mean_tau[p]),
                       relative_tau=float(self.relative_tau[p]), dice=float(self.dice[p]),
                       hd95_mm=float(self.hd95_mm[p]))
            rows.append(row)
        return rows
