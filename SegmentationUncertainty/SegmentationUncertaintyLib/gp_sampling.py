"""Exact, non-periodic sampling of Gaussian random fields with squared-exponential covariance on a voxel grid.

The covariance ``Σ(x, y) = ω0 exp(−‖x − y‖² / ω1²)`` (papers/000, section 3.1; distances in mm) is
*separable* on a regular grid: ``exp(−(Δz² + Δy² + Δx²)/ω1²)`` is a product of one factor per axis, so the
covariance matrix of the grid is the Kronecker product ``ω0 K_z ⊗ K_y ⊗ K_x`` with
``K_a[i, j] = exp(−(s_a (i − j))² / ω1²)`` the 1-D correlation matrix of axis ``a`` (spacing ``s_a``).

If ``A_a A_aᵀ = K_a`` then ``f = ω0^{1/2} (A_z ⊗ A_y ⊗ A_x) c`` with ``c ~ N(0, I)`` has covariance exactly
``Σ``. The spectrum of the Gaussian kernel decays like a Gaussian, so ``K_a`` is numerically of low rank:
``A_a = U_r Λ_r^{1/2}`` keeps the ``r_a`` leading eigenvectors, those that carry all but ``rtol`` (1e-7)
of the trace. A sample is then a small core ``c`` of ``r_z × r_y × r_x`` normal numbers multiplied along
each axis (three small matrix products), instead of the paper's FFT of the whole grid.

Differences from the paper's FFT sampler (section 3.2): no periodic boundary (the paper assumes one, so
opposite faces of the grid are correlated unless the grid is padded by ~3 ω1 per side), no full-size
normal draw (the core holds ~ (1.3 L / ω1)³ numbers for a grid of extent L mm), and the covariance error
is the truncated trace fraction (≤ rtol) rather than a wrap-around.
"""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

import numpy as np
import torch

__all__ = ["se_correlation_factor", "SEFieldSampler", "DEFAULT_RTOL"]

#: Trace fraction of each 1-D correlation matrix that the low-rank factors may leave out.
DEFAULT_RTOL = 1e-7


@functools.lru_cache(maxsize=32)
def _factor(n: int, step: float, omega1: float, rtol: float) -> np.ndarray:
    index = np.arange(n, dtype=np.float64)
    kernel = np.exp(-(step * (index[:, None] - index[None, :]) / omega1) ** 2)
    values, vectors = np.linalg.eigh(kernel)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]  # descending; clip round-off below 0
    tail = np.cumsum(values[::-1])[::-1]  # tail[k] = sum of the eigenvalues from k on
    rank = max(1, int(np.count_nonzero(tail > rtol * n)))
    factor = vectors[:, :rank] * np.sqrt(values[:rank])
    factor.setflags(write=False)
    return factor


def se_correlation_factor(n: int, step: float, omega1: float, rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """Low-rank square root of the 1-D squared-exponential correlation matrix of ``n`` points.

    Parameters
    ----------
    n : int
        Number of grid points along the axis.
    step : float
        Spacing between them, mm.
    omega1 : float
        Correlation length ω1 of ``exp(−r² / ω1²)``, mm.
    rtol : float
        Fraction of the trace (``n``) that the discarded eigenvalues may hold.

    Returns
    -------
    ndarray of float64, shape (n, r), read-only
        ``A`` with ``A Aᵀ = K − E``, ``K[i, j] = exp(−(step (i − j))² / ω1²)`` and ``E`` positive
        semi-definite with ``trace(E) ≤ rtol · n`` (so ``|E[i, j]| ≤ rtol · n``).
    """
    return _factor(int(n), float(step), float(omega1), float(rtol))


class SEFieldSampler:
    """Unit-variance Gaussian fields with correlation ``exp(−‖x − y‖² / ω1²)`` on a grid (2-D or 3-D).

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(Z, Y, X)`` or ``(Y, X)``.
    spacing : sequence of float
        Voxel size per array axis, mm.
    omega1 : float
        Correlation length, mm.
    rtol : float
        Trace fraction left out per axis (see :func:`se_correlation_factor`).
    device : torch.device
        Where the products run.

    Attributes
    ----------
    ranks : tuple of int
        Core size per axis: each sample costs ``prod(ranks)`` normal numbers.
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float], omega1: float, *, rtol: float = DEFAULT_RTOL,
                 device: torch.device | str = "cpu"):
        self.shape = tuple(int(n) for n in shape)
        self.device = torch.device(device)
        factors = [se_correlation_factor(n, s, omega1, rtol) for n, s in zip(self.shape, spacing)]
        self.ranks = tuple(f.shape[1] for f in factors)
        self._factors = [torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).to(self.device) for f in factors]
        self._x_transposed = self._factors[-1].T.contiguous()

    def cores(self, seed: int, indices: Sequence[int]) -> torch.Tensor:
        """Standard normal cores ``(len(indices), *ranks)``, core ``i`` from the generator seeded ``(seed, i)``."""
        cores = np.stack([np.random.default_rng([seed, int(i)]).standard_normal(self.ranks, dtype=np.float32)
                          for i in indices])
        return torch.from_numpy(cores).to(self.device)

    def fields(self, cores: torch.Tensor) -> torch.Tensor:
        """Fields ``(B, *shape)`` (float32, unit variance) from cores ``(B, *ranks)``: one product per axis.

        Axis x first, then y (then z): each product keeps the tensor contiguous, so no copies are made.
        """
        batch = cores.shape[0]
        field = cores @ self._x_transposed  # (B, [rz,] ry, nx)
        if len(self.shape) == 2:
            return self._factors[0] @ field  # (ny, ry) @ (B, ry, nx)
        field = self._factors[1] @ field  # (ny, ry) @ (B, rz, ry, nx) -> (B, rz, ny, nx)
        field = self._factors[0] @ field.reshape(batch, self.ranks[0], -1)  # (nz, rz) @ (B, rz, ny nx)
        return field.reshape(batch, *self.shape)

    def sample(self, n: int, seed: int = 0, batch_size: int = 8) -> Iterator[torch.Tensor]:
        """Yield ``n`` fields in batches ``(b, *shape)``; field ``i`` does not depend on the batch size."""
        for start in range(0, n, batch_size):
            yield self.fields(self.cores(seed, range(start, min(n, start + batch_size))))
