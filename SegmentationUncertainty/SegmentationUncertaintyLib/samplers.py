"""Samplers of plausible segmentations around one reference, behind one interface.

Every source of samples — GPSSI (:class:`~SegmentationUncertaintyLib.gpssi.GPSSISampler`), the two baselines
of papers/000 section 2 defined here (:class:`LogOddsSampler`, :class:`StapleICMSampler`), and network
samplers — is a :class:`SegmentationSampler`: ``sample(n, seed)`` yields boolean masks one at a time, on the
reference's grid, never holding all ``n`` in memory; ``sample_batches`` yields them in stacks. The Slicer
logic offers the sources by their :attr:`~SegmentationSampler.name` through :func:`create_sampler`.

Seeding: sample ``i`` of seed ``s`` is drawn from its own generator, seeded by ``(s, i)``, so it does not
depend on the batch size, and the same seed gives the same samples on the same device.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from scipy import special

from .geodesic import signed_euclidean_distance
from .validation import check_device, check_mask, check_spacing

__all__ = ["SegmentationSampler", "LogOddsSampler", "StapleICMSampler", "SOURCES", "create_sampler",
           "check_seed"]


def check_seed(seed: int) -> int:
    """Return ``seed`` as a non-negative ``int`` (seeds feed :class:`numpy.random.SeedSequence`)."""
    if isinstance(seed, (bool, np.bool_)) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``seed`` (independent of batching)."""
    return np.random.default_rng([seed, index])


def torch_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` for sample ``index`` of ``seed`` (a 63-bit seed derived from both)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state >> np.uint64(1)))


class SegmentationSampler(abc.ABC):
    """A distribution of segmentations around a reference mask that can be sampled.

    Parameters
    ----------
    reference : ndarray of bool, shape (Z, Y, X) or (Y, X)
        Reference segmentation; must have both inside and outside voxels.
    spacing : sequence of float, optional
        Voxel size per array axis in mm (default 1 mm).
    device : {"cpu", "cuda", "auto"}
        Where the sampling runs (``"auto"``: the GPU when torch sees one); samples come back as numpy arrays.
        GPSSI draws its random numbers with numpy, so either device gives the same samples (up to
        rounding at the level set); the other samplers use the device's own random streams, so a GPU draws
        other samples than the CPU for the same seed (each reproducible on its own).

    Subclasses set :attr:`name` and implement :meth:`_draw` (a batch of samples given their indices).
    """

    #: Short identifier used by the CLI's ``--source`` and the Slicer "source" choice.
    name: ClassVar[str] = ""

    def __init__(self, reference: np.ndarray, spacing: Sequence[float] | None = None, *, device: str = "cpu"):
        self.reference = check_mask(reference, "reference mask")
        self.spacing = check_spacing(spacing, self.reference.ndim)
        self.device = check_device(device)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.reference.shape

    @abc.abstractmethod
    def _draw(self, seed: int, indices: range) -> np.ndarray:
        """Samples ``indices`` of ``seed``: boolean array ``(len(indices), *shape)``."""

    def sample_batches(self, n: int, seed: int = 0, batch_size: int = 8) -> Iterator[np.ndarray]:
        """Yield ``n`` samples in stacks of at most ``batch_size``: boolean arrays ``(b, *shape)``.

        Sample ``i`` is the same whatever the batch size (each sample has its own generator).
        """
        n, seed, batch_size = self._check_request(n, seed, batch_size)
        for start in range(0, n, batch_size):
            yield self._draw(seed, range(start, min(n, start + batch_size)))

    def sample(self, n: int, seed: int = 0, batch_size: int = 8) -> Iterator[np.ndarray]:
        """Yield ``n`` samples one at a time: boolean arrays of the reference's shape."""
        for batch in self.sample_batches(n, seed, batch_size):
            yield from batch

    def parameters(self) -> dict[str, Any]:
        """The parameters that define the distribution (for reports and file metadata)."""
        return {"source": self.name}

    @staticmethod
    def _check_request(n: int, seed: int, batch_size: int) -> tuple[int, int, int]:
        if isinstance(n, (bool, np.bool_)) or int(n) != n or n < 1:
            raise ValueError(f"the number of samples must be a positive integer, got {n!r}")
        if isinstance(batch_size, (bool, np.bool_)) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        return int(n), check_seed(seed), int(batch_size)


def _check_positive(value: float, name: str, what: str) -> float:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive {what}, got {value}")
    return float(value)


def _check_probability(value: float, name: str) -> float:
    if not (np.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


class LogOddsSampler(SegmentationSampler):
    """Independent Bernoulli voxels with ``P(inside) = sigmoid(−d / scale)`` (papers/000 section 2, [3]).

    ``d`` is the signed Euclidean distance (mm, negative inside), so ``P(inside) > 1/2`` inside the
    reference and ``< 1/2`` outside; ``scale`` (mm) is the inverse slope of the log-odds map: the voxels
    on either side of the border have ``P = sigmoid(±step/scale)``.

    Attributes
    ----------
    probability : ndarray of float32, shape of the reference
        ``P(inside)`` per voxel.
    """

    name = "logodds"

    def __init__(self, reference: np.ndarray, spacing: Sequence[float] | None = None, *, scale: float = 1.0,
                 device: str = "cpu"):
        super().__init__(reference, spacing, device=device)
        self.scale = _check_positive(scale, "scale", "length in mm")
        distance = signed_euclidean_distance(self.reference, self.spacing)
        self.probability = special.expit(-distance / self.scale).astype(np.float32)   # no overflow far away
        self._probability = torch.from_numpy(self.probability).to(self.device)

    def parameters(self) -> dict[str, Any]:
        return {"source": self.name, "scale_mm": self.scale}

    def _bernoulli(self, seed: int, indices: range) -> torch.Tensor:
        out = torch.empty((len(indices), *self.shape), dtype=torch.bool, device=self.device)
        for row, index in enumerate(indices):
            uniform = torch.rand(self.shape, generator=torch_generator(seed, index, self.device), device=self.device)
            torch.lt(uniform, self._probability, out=out[row])
        return out

    def _draw(self, seed: int, indices: range) -> np.ndarray:
        return self._bernoulli(seed, indices).cpu().numpy()


class StapleICMSampler(LogOddsSampler):
    """STAPLE's generative model followed by ICM relaxation (papers/000 section 2, [2]).

    Each voxel is first drawn independently with ``P(D = 1) = p P(T = 1) + (1 − q) P(T = 0)``, where the
    true label's probability ``P(T = 1) = sigmoid(−d / scale)`` comes from the reference's signed distance
    ``d`` (as for :class:`LogOddsSampler`), ``p`` is the rater's sensitivity and ``q`` its specificity.
    Then ``n_icm`` sweeps of Iterated Conditional Modes on an Ising prior set every voxel to the label
    that maximises ``log P(D = l) + β · #{face neighbours labelled l}``; each sweep updates the two
    checkerboard colours in turn (a voxel's face neighbours all have the other colour), which is ICM's
    sequential update done in parallel and never oscillates.

    Defaults ``p = 0.68, q = 0.66`` are those of the paper's Fig. 1.
    """

    name = "staple-icm"

    def __init__(self, reference: np.ndarray, spacing: Sequence[float] | None = None, *, scale: float = 1.0,
                 sensitivity: float = 0.68, specificity: float = 0.66, beta: float = 1.0, n_icm: int = 3,
                 device: str = "cpu"):
        self.sensitivity = _check_probability(sensitivity, "sensitivity p")
        self.specificity = _check_probability(specificity, "specificity q")
        if not (np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a coupling >= 0, got {beta}")
        if int(n_icm) != n_icm or n_icm < 0:
            raise ValueError(f"n_icm must be a number of ICM sweeps >= 0, got {n_icm}")
        self.beta, self.n_icm = float(beta), int(n_icm)
        super().__init__(reference, spacing, scale=scale, device=device)
        truth = self._probability
        observed = self.sensitivity * truth + (1.0 - self.specificity) * (1.0 - truth)
        self.probability = observed.cpu().numpy()
        self._probability = observed
        # data term of ICM: log P(D = 1) − log P(D = 0), finite even for p or q in {0, 1}
        clipped = observed.clamp(1e-6, 1 - 1e-6)
        self._data_logit = torch.log(clipped) - torch.log1p(-clipped)
        ndim = self.reference.ndim
        grids = torch.meshgrid(*[torch.arange(n, device=self.device) for n in self.shape], indexing="ij")
        parity = sum(grids) % 2
        self._colours = (parity == 0, parity == 1)
        self._n_neighbours = self._count_neighbours(torch.ones((1, *self.shape), device=self.device))[0]
        self._ndim = ndim

    def parameters(self) -> dict[str, Any]:
        return {"source": self.name, "scale_mm": self.scale, "sensitivity": self.sensitivity,
                "specificity": self.specificity, "beta": self.beta, "n_icm": self.n_icm}

    @staticmethod
    def _count_neighbours(labels: torch.Tensor) -> torch.Tensor:
        """Number of face neighbours labelled 1, for a float stack ``(B, *shape)`` (outside the grid = 0)."""
        count = torch.zeros_like(labels)
        for axis in range(1, labels.ndim):
            length = labels.shape[axis]
            if length > 1:
                count.narrow(axis, 1, length - 1).add_(labels.narrow(axis, 0, length - 1))
                count.narrow(axis, 0, length - 1).add_(labels.narrow(axis, 1, length - 1))
        return count

    def _draw(self, seed: int, indices: range) -> np.ndarray:
        labels = self._bernoulli(seed, indices).float()
        for _ in range(self.n_icm):
            for colour in self._colours:
                ones = self._count_neighbours(labels)
                # log-posterior of 1 minus that of 0: data logit + β (n1 − n0), n0 = n_neighbours − n1
                score = self._data_logit + self.beta * (2.0 * ones - self._n_neighbours)
                labels = torch.where(colour, (score > 0).float(), labels)
        return (labels > 0.5).cpu().numpy()


def _gpssi(reference, spacing=None, *, image=None, **parameters):
    from .gpssi import GPSSISampler

    return GPSSISampler(reference, image, spacing, **parameters)


#: Sampler constructors by source name: ``SOURCES[name](reference, spacing, image=..., **parameters)``.
SOURCES = {
    "gpssi": _gpssi,
    "logodds": lambda reference, spacing=None, *, image=None, **parameters: LogOddsSampler(reference, spacing, **parameters),
    "staple-icm": lambda reference, spacing=None, *, image=None, **parameters: StapleICMSampler(reference, spacing, **parameters),
}


def _network_source(name: str):
    # Imported on use: the networks package builds on this module's SegmentationSampler.
    def create(reference, spacing=None, *, image=None, **parameters):
        from .networks.sampler import network_sources

        return network_sources()[name](reference, spacing, image=image, **parameters)
    return create


#: The shipped networks of :data:`SegmentationUncertaintyLib.networks.sampler.SHIPPED_MODELS` (``model=``
#: names another file of the same architecture).
SOURCES.update({name: _network_source(name) for name in ("ssn", "phiseg", "prob-unet", "mc-dropout")})


def create_sampler(source: str, reference: np.ndarray, image: np.ndarray | None = None,
                   spacing: Sequence[float] | None = None, **parameters: Any) -> SegmentationSampler:
    """The sampler named ``source`` (one of :data:`SOURCES`) around ``reference``.

    ``image`` is used by GPSSI (geodesic mean) and ignored by the baselines, which depend on the
    reference's shape only (that is the paper's point against them). ``parameters`` go to the sampler's
    constructor (e.g. ``omega0``, ``gamma`` for GPSSI; ``scale`` for log-odds; ``sensitivity``,
    ``specificity``, ``beta``, ``n_icm`` for STAPLE-ICM).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown sampler source {source!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[source](reference, spacing, image=image, **parameters)
