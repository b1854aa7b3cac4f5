"""Link functions between class-probability vectors and the Euclidean space where raters are fused.

A link ``F`` maps a probability vector ``p`` of the simplex ``S^{K-1}`` to ``R^d`` and has an inverse
with ``F^{-1}(F(p)) = p`` (papers/004, section 2.1). Arrays carry the classes on the axis before the
voxel axis: probabilities ``(..., K, N)``, link values ``(..., d, N)``.

* :class:`SqrtLink` (default), ``F(p) = (√p_1, …, √p_K)``, ``d = K``: the Euclidean distance between
  link values is the Hellinger distance between the distributions, so the Gaussian likelihood of the
  fusion is ``exp(−H²(D, T) / σ)`` (section 2.1). Inverse ``r_k² / Σ_j r_j²``. The image of the simplex
  is the positive orthant of the unit sphere; a consensus value with a negative component (which a
  weighted mean cannot produce, but the smoothness prior can) is projected onto it by clamping that
  component to 0 before squaring.
* :class:`LogitLink`, the isometric log-ratio ``F(p) = Vᵀ log p`` with ``V`` an orthonormal ``K × (K−1)``
  basis of the zero-sum vectors, ``d = K − 1``; inverse ``softmax(V r)``. For ``K = 2`` it is
  ``logit(p_1) / √2``. Using ``K − 1`` coordinates (rather than ``K`` centred log-ratios, which sum to 0)
  keeps every rater covariance invertible. Probabilities are clipped to ``[eps, 1]`` first (default
  ``eps = 1e-6``: log-odds within ±13.8) so that certain voxels have finite link values.
"""

from __future__ import annotations

import abc
import math

import torch

__all__ = ["Link", "SqrtLink", "LogitLink", "LINKS", "get_link"]


class Link(abc.ABC):
    """A link ``F`` from ``K`` class probabilities to ``d`` real coordinates, with its inverse."""

    name: str = ""

    @abc.abstractmethod
    def dimension(self, n_classes: int) -> int:
        """Number ``d`` of link coordinates for ``n_classes`` classes."""

    @abc.abstractmethod
    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``(..., K, N)`` probabilities → ``(..., d, N)`` link values."""

    @abc.abstractmethod
    def inverse(self, values: torch.Tensor, n_classes: int) -> torch.Tensor:
        """``(..., d, N)`` link values → ``(..., K, N)`` probabilities (summing to 1 over classes)."""

    @abc.abstractmethod
    def class_directions(self, n_classes: int, dtype=torch.float64) -> torch.Tensor:
        """``(K, d)`` matrix mapping a link-space vector (e.g. a rater bias) to one signed value per class
        (positive: towards that class)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SqrtLink(Link):
    """Square-root (Hellinger) link ``F(p) = √p``, inverse ``r² / Σ r²`` (papers/004, section 2.1)."""

    name = "sqrt"

    def dimension(self, n_classes: int) -> int:
        return n_classes

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.clamp(min=0.0).sqrt()

    def inverse(self, values: torch.Tensor, n_classes: int) -> torch.Tensor:
        squares = values.clamp(min=0.0).square()
        total = squares.sum(dim=-2, keepdim=True)
        # every component <= 0: no class is supported; return the uniform distribution
        uniform = torch.full_like(squares, 1.0 / n_classes)
        return torch.where(total > 0, squares / total.clamp(min=torch.finfo(values.dtype).tiny), uniform)

    def class_directions(self, n_classes: int, dtype=torch.float64) -> torch.Tensor:
        return torch.eye(n_classes, dtype=dtype)


def _zero_sum_basis(n_classes: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal basis ``(K, K−1)`` of the vectors summing to 0 (a signed Helmert basis): column ``j``
    contrasts class ``j + 1`` against classes ``0 … j``, so for ``K = 2`` it is ``(−1, 1) / √2``."""
    basis = torch.zeros(n_classes, n_classes - 1, dtype=dtype)
    for j in range(1, n_classes):
        norm = math.sqrt(j * (j + 1))
        basis[:j, j - 1] = -1.0 / norm
        basis[j, j - 1] = j / norm
    return basis


class LogitLink(Link):
    """Isometric log-ratio link ``F(p) = Vᵀ log p`` (``K − 1`` coordinates), inverse ``softmax(V r)``."""

    name = "logit"

    def __init__(self, eps: float = 1e-6):
        if not (0.0 < eps < 0.5):
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
        self.eps = float(eps)

    def dimension(self, n_classes: int) -> int:
        return n_classes - 1

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        n_classes = probabilities.shape[-2]
        basis = _zero_sum_basis(n_classes, probabilities.dtype).to(probabilities.device)
        logs = probabilities.clamp(min=self.eps).log()
        return torch.einsum("kd,...kn->...dn", basis, logs)

    def inverse(self, values: torch.Tensor, n_classes: int) -> torch.Tensor:
        basis = _zero_sum_basis(n_classes, values.dtype).to(values.device)
        return torch.softmax(torch.einsum("kd,...dn->...kn", basis, values), dim=-2)

    def class_directions(self, n_classes: int, dtype=torch.float64) -> torch.Tensor:
        return _zero_sum_basis(n_classes, dtype)

    def __repr__(self) -> str:
        return f"LogitLink(eps={self.eps})"


LINKS = {"sqrt": SqrtLink, "logit": LogitLink}


def get_link(link: "str | Link") -> Link:
    """A :class:`Link` from its name (``"sqrt"`` or ``"logit"``) or an instance."""
    if isinstance(link, Link):
        return link
    if link not in LINKS:
        raise ValueError(f"unknown link {link!r}; choose one of {sorted(LINKS)}")
    return LINKS[link]()
