"""Spatial smoothness prior of the consensus: a linear model of Gaussian bases on a regular grid.

papers/004, section 2.1: ``T̃_n ~ N(W Φ_n, Σ_T I)`` with ``Φ_n = (Φ_1(x_n), …, Φ_L(x_n))`` a dictionary of
Gaussian bases centred on a regular grid and ``W_k ~ N(0, α⁻¹ I_L)`` per class coordinate ``k``. Its
variational posterior (supplementary section 1.1) is ``q(W_k) = N(μ_{W_k}, Σ_W)`` with

.. math::  Σ_W = (Σ_T^{-1} ΦᵀΦ + α I_L)^{-1}, \\qquad μ_{W_k} = Σ_W Φᵀ Σ_T^{-1} μ_{T̃_k},

and the point estimates ``α = L d / Σ_k (Tr Σ_W + μ_{W_k}ᵀ μ_{W_k})``,
``Σ_T = (N d)^{-1} Σ_{n,k} [(μ_{T̃nk} − w_{0k} − Φ_nᵀ μ_{W_k})² + Σ_{T̃nkk} + Φ_nᵀ Σ_W Φ_n]`` (with the intercept
``w_0`` below; :mod:`.student_t` applies them).

Never forming the ``N × L`` matrix
----------------------------------
The bases are isotropic Gaussians ``exp(−‖x − c‖² / 2w²)`` on a regular grid of centres, so they are
products of one-dimensional Gaussians and ``Φ = Φ_z ⊗ Φ_y ⊗ Φ_x`` (``Φ_a`` is ``n_a × L_a``). Then
``ΦᵀΦ = G_z ⊗ G_y ⊗ G_x`` with ``G_a = Φ_aᵀ Φ_a``; with the eigendecompositions ``G_a = U_a Λ_a U_aᵀ``,
``ΦᵀΦ = U Λ Uᵀ`` where ``U = U_z ⊗ U_y ⊗ U_x`` and ``Λ = Λ_z ⊗ Λ_y ⊗ Λ_x``, so

* ``Σ_W = U diag(s) Uᵀ`` with ``s_l = 1 / (λ_l / Σ_T + α)``, for any ``α`` and ``Σ_T``;
* in the eigen-coordinates ``c = (ΦU)ᵀ μ_T̃``: ``Uᵀ μ_W = s ⊙ c / Σ_T`` and the prior mean
  ``Φ μ_W = (ΦU)(s ⊙ c) / Σ_T``; ``ΦU = (Φ_z U_z) ⊗ (Φ_y U_y) ⊗ (Φ_x U_x)``, so both products are three
  small matrix products along the axes (``O(N Σ_a L_a)``, no ``N × L`` matrix);
* ``Tr Σ_W = Σ_l s_l``, ``Σ_n Φ_nᵀ Σ_W Φ_n = Tr(ΦᵀΦ Σ_W) = Σ_l λ_l s_l``, ``log|Σ_W| = Σ_l log s_l``.

The grid of centres
-------------------
Per axis, ``L_a = ceil(extent_a / spacing) + 1`` centres ``spacing`` mm apart, centred on the box (so the
grid is staggered with respect to the voxel grid and overhangs both ends equally); ``width`` is the
standard deviation of each Gaussian in mm (default: equal to the spacing, so that neighbouring bases
overlap and sums of them are smooth). Larger spacing and width give a smoother prior mean and so a
smoother consensus where the raters leave it uncertain (the paper's Fig. 1c).

Smoothness has a price at curved borders: like a blur of width ``w``, the fit of a structure of radius
``R`` has its half level inside the structure, by about ``w²/R`` (mean-curvature motion), and more once
``w`` nears ``R``. Where the raters disagree the consensus is pulled there; the Student-t consensus,
which down-weights raters that stray from it, can follow the fit all the way. Hence the default of
:mod:`.consensus` (2 mm, twice a mask map's scale), which lets the prior follow the raters' maps as
sharply as they change.

The intercept (our addition)
----------------------------
The prior mean is ``w_0 + W Φ_n`` with an unpenalised intercept ``w_0 ∈ R^d`` (a flat prior, estimated
like the other hyperparameters). Without it the ridge prior on ``W`` shrinks the consensus towards 0 in
link space — "no class at all" for the square-root link — and, because the likelihood only sees
``T̃_n + b_p``, the bound is then raised by moving a common offset from the consensus into every rater's
bias, which makes the biases meaningless. With the intercept a common offset costs nothing in the
smoothness prior and the bias prior alone sets it (zero mean bias).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["GaussianBasisPrior"]


class GaussianBasisPrior:
    """Separable Gaussian-basis dictionary ``Φ`` over a box of voxels, with the products the VB needs.

    Parameters
    ----------
    shape : tuple of int
        Box shape ``(Z, Y, X)`` or ``(Y, X)``.
    spacing : sequence of float
        Voxel size per axis (mm).
    basis_spacing : float
        Distance between neighbouring basis centres (mm).
    basis_width : float, optional
        Standard deviation of each Gaussian basis (mm); default ``basis_spacing``.
    device, dtype
        Where and in which precision the per-voxel products run (the small eigenproblems use float64).
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float], basis_spacing: float,
                 basis_width: float | None = None, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        if not (np.isfinite(basis_spacing) and basis_spacing > 0):
            raise ValueError(f"the basis spacing must be a positive length in mm, got {basis_spacing}")
        basis_width = basis_spacing if basis_width is None else basis_width
        if not (np.isfinite(basis_width) and basis_width > 0):
            raise ValueError(f"the basis width must be a positive length in mm, got {basis_width}")
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.basis_spacing = float(basis_spacing)
        self.basis_width = float(basis_width)
        factors, eigenvalues, self.centres = [], [], []
        for n, step in zip(self.shape, self.spacing):
            positions = np.arange(n) * step
            extent = positions[-1]
            count = int(math.ceil(extent / self.basis_spacing - 1e-9)) + 1
            centres = extent / 2 + (np.arange(count) - (count - 1) / 2) * self.basis_spacing
            phi = np.exp(-0.5 * ((positions[:, None] - centres[None, :]) / self.basis_width) ** 2)
            lam, vectors = np.linalg.eigh(phi.T @ phi)
            factors.append(torch.as_tensor(phi @ vectors, dtype=dtype, device=device))
            eigenvalues.append(np.clip(lam, 0.0, None))
            self.centres.append(centres)
        #: ``Φ_a U_a`` per axis, ``(n_a, L_a)``.
        self.factors = factors
        lam = eigenvalues[0]
        for more in eigenvalues[1:]:
            lam = np.multiply.outer(lam, more)
        #: Eigenvalues of ``ΦᵀΦ`` as a float64 array of the basis-grid shape ``(L_z, L_y, L_x)``.
        self.eigenvalues = torch.as_tensor(lam, dtype=torch.float64, device=device)
        # Each product contracts one axis at a time; its cost is the current tensor's size times L_a, so
        # the axes that shrink the tensor most (smallest L_a / n_a) go first in a projection, last in an
        # expansion (with 2 mm bases on 2.5 mm slices, L_z > n_z).
        self._project_order = sorted(range(len(self.shape)), key=lambda a: self.factors[a].shape[1] / self.shape[a])
        ones = self.project(torch.ones((1, *self.shape), dtype=dtype, device=device))[0]
        #: ``(ΦU)ᵀ 1`` in the fit's precision and in float64, and its square (the intercept's products).
        self._ones, self._ones64 = ones, ones.to(torch.float64)
        self._ones64_squared = self._ones64.square()

    @property
    def n_bases(self) -> int:
        """``L``, the number of bases."""
        return int(self.eigenvalues.numel())

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(self.eigenvalues.shape)

    @staticmethod
    def _along(values: torch.Tensor, axis: int, matrix: torch.Tensor) -> torch.Tensor:
        """``values`` with its axis ``axis`` (length ``m``) replaced by ``Σ_i values[…, i, …] matrix[i, j]``
        (``matrix``: ``(m, k)``), as matrix products on views (no transposed copy of ``values``)."""
        shape = values.shape
        before, after = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
        if after == 1:
            out = values.reshape(before, shape[axis]) @ matrix
        else:
            out = torch.matmul(matrix.T, values.reshape(before, shape[axis], after))
        return out.reshape(*shape[:axis], matrix.shape[1], *shape[axis + 1:])

    def project(self, values: torch.Tensor) -> torch.Tensor:
        """``(ΦU)ᵀ x``: ``(d, *shape)`` → ``(d, L_z, L_y, L_x)`` eigen-coordinates."""
        for axis in self._project_order:
            values = self._along(values, 1 + axis, self.factors[axis])
        return values

    def expand(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``(ΦU) c``: ``(d, L_z, L_y, L_x)`` eigen-coordinates → ``(d, *shape)`` voxel values."""
        for axis in reversed(self._project_order):
            coefficients = self._along(coefficients, 1 + axis, self.factors[axis].T)
        return coefficients

    def posterior(self, consensus_mean: torch.Tensor, prior_variance: float, alpha: float) -> dict:
        """``q(W)`` and the intercept given ``μ_T̃`` (``(d, *shape)``), ``Σ_T`` and ``α`` (supplementary 1.1).

        The prior mean is ``w_0 + Φ μ_W`` with a per-coordinate intercept ``w_0`` (flat prior, point
        estimate; see :class:`GaussianBasisPrior`). ``w_0`` and ``μ_W`` maximise the bound jointly:
        with ``u = Σ_W Φᵀ 1 / Σ_T`` (the ridge fit of a constant) and ``g = 1 − Φu``,
        ``w_0 = ⟨g, μ_T̃⟩ / ⟨g, 1⟩`` and ``μ_W = Σ_W Φᵀ (μ_T̃ − w_0) / Σ_T``. Both inner products are taken in
        the eigen-coordinates (``⟨Φu, x⟩ = Σ_l (s_l / Σ_T) c_l(1) c_l(x)``), so one projection and one
        expansion are all the per-voxel work.

        Returns a dict with ``mean`` (``w_0 + Φ μ_W``, ``(d, *shape)``), ``intercept`` (``w_0``, ``(d,)``),
        ``sum_s`` (``Tr Σ_W``), ``sum_lambda_s`` (``Tr(ΦᵀΦ Σ_W)``), ``weights_sq`` (``Σ_k ‖μ_{W_k}‖²``) and
        ``log_det`` (``log|Σ_W|``).
        """
        d = consensus_mean.shape[0]
        dtype = consensus_mean.dtype
        s = 1.0 / (self.eigenvalues / prior_variance + alpha)
        gain = s / prior_variance                                                   # Uᵀ Σ_W Φᵀ = gain ⊙ (ΦU)ᵀ
        coefficients = self.project(consensus_mean)                                  # (ΦU)ᵀ μ_T̃
        # the two inner products with g nearly cancel (the ridge fits a constant well inside the box): in
        # float64 on the coefficients; the per-voxel sum in the fit's precision (pairwise summation)
        totals = consensus_mean.reshape(d, -1).sum(dim=1).to(torch.float64)
        gap_total = float(np.prod(self.shape)) - float((gain * self._ones64_squared).sum())     # ⟨g, 1⟩
        fitted = coefficients.reshape(d, -1).to(torch.float64) @ (gain * self._ones64).reshape(-1)
        intercept = (totals - fitted) / gap_total
        shape = (d, *([1] * len(self.shape)))
        weights = (coefficients - intercept.to(dtype).reshape(shape) * self._ones.to(dtype)).mul_(gain.to(dtype))
        mean = self.expand(weights) + intercept.to(dtype).reshape(shape)
        return self._posterior_dict(mean, intercept, weights, s)

    def _posterior_dict(self, mean, intercept, weights, s) -> dict:
        return {
            "mean": mean,
            "intercept": intercept,
            "weights": weights,
            "sum_s": float(s.sum()),
            "sum_lambda_s": float((self.eigenvalues * s).sum()),
            "weights_sq": float(weights.square().sum(dtype=torch.float64)),
            "log_det": float(torch.log(s).sum()),
        }

    def posterior_on(self, consensus_mean: torch.Tensor, observed: torch.Tensor, start: dict, prior_variance: float,
                     alpha: float, steps: int = 3) -> dict:
        """:meth:`posterior` when only the voxels ``observed`` have a consensus; the others' ``q(T̃_n)`` is at its
        optimum, the prior itself.

        Jointly optimal, the prior mean ``w_0 + Φ μ_W`` fits the observed voxels only: with ``z = (Uᵀ μ_W, w_0)``
        it solves ``A z = b``, ``A = [ΦU, 1]ᵀ O [ΦU, 1] / Σ_T + diag(α, 0)``, ``b = [ΦU, 1]ᵀ O μ_T̃ / Σ_T`` (``O``
        selects the observed voxels), and ``Σ_W`` stays that of :meth:`posterior`. Alternating :meth:`posterior`
        with setting the other voxels to the prior mean is the Richardson iteration of this system
        preconditioned by the whole box's ``M`` (``O = I``, inverted in closed form in the eigen-coordinates);
        it is slow when most of the box is unobserved (the weights there shrink by a factor
        ``~ λ_l / (λ_l + α Σ_T)`` per iteration). Here ``steps`` steps of conjugate gradients with the same
        preconditioner, from ``start`` (the previous result), minimise the same quadratic, so the bound rises
        at least as much as with the alternation. Each step costs one expansion and one projection.

        Parameters
        ----------
        consensus_mean : Tensor, (d, *shape)
            ``μ_T̃`` on the box (only its observed voxels are read).
        observed : Tensor of bool, shape
        start : dict
            A previous result of :meth:`posterior` or of this method.
        """
        d = consensus_mean.shape[0]
        dtype = consensus_mean.dtype
        shape = (d, *([1] * len(self.shape)))
        mask = observed.to(dtype)
        s = 1.0 / (self.eigenvalues / prior_variance + alpha)
        ones = self._ones64
        # the intercept row of M: Schur complement of the diagonal block 1 / s
        schur = float(np.prod(self.shape)) / prior_variance - float((s * ones.square()).sum()) / prior_variance ** 2

        def precondition(r_w, r_0):
            w0 = (r_0 - (s * ones * r_w).reshape(d, -1).sum(dim=1) / prior_variance) / schur
            return s * (r_w - ones * w0.reshape(shape) / prior_variance), w0

        def on_observed(x):
            """``[ΦU, 1]ᵀ O x / Σ_T`` in float64."""
            x = x * mask
            return (self.project(x).to(torch.float64) / prior_variance,
                    x.reshape(d, -1).sum(dim=1).to(torch.float64) / prior_variance)

        weights = start["weights"].to(torch.float64, copy=True)
        intercept = start["intercept"].to(torch.float64).clone()
        mean = start["mean"].clone()
        r_w, r_0 = on_observed(consensus_mean - mean)
        r_w -= alpha * weights
        p_w = p_0 = ry_previous = None
        for _ in range(steps):
            y_w, y_0 = precondition(r_w, r_0)
            ry = float((r_w * y_w).sum() + (r_0 * y_0).sum())
            if ry <= 0.0:
                break
            if ry_previous is None:
                p_w, p_0 = y_w, y_0
            else:
                p_w, p_0 = y_w + (ry / ry_previous) * p_w, y_0 + (ry / ry_previous) * p_0
            ry_previous = ry
            direction = self.expand(p_w.to(dtype)) + p_0.to(dtype).reshape(shape)       # [ΦU, 1] p
            q_w, q_0 = on_observed(direction)
            q_w += alpha * p_w
            curvature = float((p_w * q_w).sum() + (p_0 * q_0).sum())
            if curvature <= 0.0:
                break
            step = ry / curvature
            weights += step * p_w
            intercept += step * p_0
            mean += step * direction
            r_w -= step * q_w
            r_0 -= step * q_0
        return self._posterior_dict(mean, intercept, weights.to(dtype), s)
