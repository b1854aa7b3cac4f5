"""A trained network as a :class:`~SegmentationUncertaintyLib.samplers.SegmentationSampler`, so that the
GPSSI sampler module offers SSN, PHiSeg, Prob. U-Net and MC dropout next to GPSSI.

Given a volume (or a 2-D image), a reference segmentation and a model file, the sampler normalises the
image as the file records, runs the network around the reference (a box of the reference plus a margin;
2-D models slice by slice over the slices the reference occupies, 3-D models on the box at once) and
yields boolean samples on the reference's grid, like GPSSI's. For SSN, every batch of samples costs one
forward pass (of up to 32 slices, or of the box); for MC dropout, one pass per sample.

Seeding follows the interface: sample ``i`` of seed ``s`` is drawn with torch's generator seeded from
``(s, i, group of slices)``, inside ``torch.random.fork_rng`` (the caller's generator state is untouched), so the
same seed gives the same samples whatever the batch size.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..samplers import SegmentationSampler
from .io import LoadedModel, check_input_channels, load_model, shipped_model_path
from .ssn import StochasticSegmentationNetwork
from .unet import crop_to, pad_to_multiple

__all__ = ["NetworkSampler", "SHIPPED_MODELS", "network_sources"]

#: Shipped model (``SegmentationUncertainty/Resources/Models/<name>.pt``) of each network source.
SHIPPED_MODELS = {"ssn": "ssn_2d", "phiseg": "phiseg_2d", "prob-unet": "prob_unet_2d", "mc-dropout": "mc_dropout_2d"}


@contextmanager
def _seeded(device: torch.device, *keys: int) -> Iterator[None]:
    state = np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(state >> np.uint64(1)))
        yield


class NetworkSampler(SegmentationSampler):
    """Segmentation samples from a trained network around a reference.

    Parameters
    ----------
    reference : ndarray of bool, shape (Z, Y, X) or (Y, X)
        Reference segmentation: the samples are drawn around it (and, for models whose inputs include
        ``"reference"``, the network sees it).
    image : ndarray, shape of ``reference``, or (channels, *shape) for multi-channel models
        Intensities in any units (normalised as the model file records).
    spacing : sequence of float, optional
        Voxel size in mm (kept for the interface and reports; the networks run on the voxel grid, and the
        shipped ones were trained at 1 mm).
    model : str, Path or LoadedModel
        Model file (see :mod:`.io`) or a loaded model.
    device : {"cpu", "cuda", "auto"}
    margin : int or None
        Voxels added around the reference's bounding box (in-plane for 2-D models); ``None``: the whole
        grid (every slice for a 2-D model).
    temperature, class_scale :
        SSN only: scaling of the covariance after inference (:meth:`.ssn.LowRankLogits.scaled`).
    structure_class : int
        Class of the network's output that is the structure (1 for a binary model).
    """

    name = "network"

    def __init__(self, reference: np.ndarray, image: np.ndarray, spacing: Sequence[float] | None = None, *,
                 model: str | Path | LoadedModel, device: str = "cpu", margin: int | None = 16,
                 temperature: float = 1.0, class_scale: Sequence[float] | None = None, structure_class: int = 1):
        super().__init__(reference, spacing, device=device)
        loaded = model if isinstance(model, LoadedModel) else load_model(model, device=str(self.device))
        network = loaded.model.to(self.device).eval()
        self.loaded = loaded
        self.architecture = loaded.architecture
        if (temperature != 1.0 or class_scale is not None) and not isinstance(network, StochasticSegmentationNetwork):
            raise ValueError(f"temperature and class_scale scale an SSN's covariance; a {self.architecture!r} "
                             "network has none")
        if not 0 < structure_class < network.n_classes:
            raise ValueError(f"structure_class must be a foreground class in 1..{network.n_classes - 1}, "
                             f"got {structure_class}")
        if margin is not None and margin < 0:
            raise ValueError(f"margin must be a number of voxels >= 0 or None, got {margin}")
        channels = check_input_channels(image, loaded.image_channels, network.spatial_dims)
        if channels.shape[1:] != self.shape:
            raise ValueError(f"the image has shape {channels.shape[1:]} but the reference has {self.shape}; "
                             "resample them onto the same grid first")
        if network.spatial_dims == 3 and self.reference.ndim != 3:
            raise ValueError("a 3-D model needs a 3-D reference and image")
        self.temperature = float(temperature)
        self.class_scale = None if class_scale is None else [float(s) for s in class_scale]
        self.structure_class = int(structure_class)
        self.margin = margin
        self._network = network
        normalized = np.stack([loaded.normalization.apply(c) for c in channels])
        roi = loaded.normalization.roi(normalized[0])
        stack = [normalized[i] for i in range(normalized.shape[0])]
        if "reference" in loaded.inputs:
            stack.insert(loaded.inputs.index("reference"), self.reference.astype(np.float32))
        inputs = np.stack(stack)
        self._units = self._make_units(inputs, roi)

    # ------------------------------------------------------------------------------------ layout

    def _box(self, axes: range) -> tuple[slice, ...]:
        """Bounding box of the reference plus the margin along ``axes`` (whole extent elsewhere)."""
        coords = np.argwhere(self.reference)
        box = []
        for axis, size in enumerate(self.shape):
            if self.margin is None or axis not in axes:
                box.append(slice(0, size))
            else:
                lo = max(int(coords[:, axis].min()) - self.margin, 0)
                hi = min(int(coords[:, axis].max()) + 1 + self.margin, size)
                box.append(slice(lo, hi))
        return tuple(box)

    def _make_units(self, inputs: np.ndarray, roi: np.ndarray, slice_batch: int = 32) -> list[tuple]:
        """The pieces the network runs on: (indices into the sample per batch entry, padded input
        ``(B, C, *S)``, padded roi ``(B, 1, *S)``, unpadded spatial shape)."""
        network = self._network
        if network.spatial_dims == self.reference.ndim:
            box = self._box(range(self.reference.ndim))
            groups = [([box], inputs[(slice(None), *box)][None], roi[box][None])]
        else:  # a 2-D model on a volume: the slices along the first axis, a batch of them per forward pass
            box = self._box(range(1, 3))
            slices = np.flatnonzero(self.reference.any(axis=(1, 2))) if self.margin is not None \
                else np.arange(self.shape[0])
            groups = []
            for start in range(0, len(slices), slice_batch):
                zs = slices[start:start + slice_batch]
                groups.append(([(int(z), *box[1:]) for z in zs],
                               np.moveaxis(inputs[:, zs][(slice(None), slice(None), *box[1:])], 1, 0),
                               roi[zs][(slice(None), *box[1:])]))
        units = []
        for indices, x, r in groups:
            x_t, shape = pad_to_multiple(torch.as_tensor(np.ascontiguousarray(x)).to(self.device),
                                         network.size_multiple)
            r_t, _ = pad_to_multiple(torch.as_tensor(np.ascontiguousarray(r), dtype=torch.float32)[:, None]
                                     .to(self.device), network.size_multiple)
            units.append((indices, x_t, r_t, shape))
        return units

    # ---------------------------------------------------------------------------------- sampling

    def _prepare(self, x: torch.Tensor, roi: torch.Tensor):
        if isinstance(self._network, StochasticSegmentationNetwork):
            return self._network.prepare_sampling(x, roi, self.temperature, self.class_scale)
        return self._network.prepare_sampling(x, roi)

    def _draw(self, seed: int, indices: range) -> np.ndarray:
        out = np.zeros((len(indices), *self.shape), dtype=bool)
        with torch.no_grad():
            for unit, (where, x, roi, shape) in enumerate(self._units):
                draw = self._prepare(x, roi)
                for row, i in enumerate(indices):
                    with _seeded(self.device, seed, i, unit):
                        logits = crop_to(draw(1)[0], shape)
                    masks = (logits.argmax(1) == self.structure_class).cpu().numpy()
                    for index, mask in zip(where, masks):
                        out[row][index] = mask
        return out

    def predict(self) -> np.ndarray | None:
        """Foreground probability of the model's point prediction on the reference's grid (float32),
        or ``None`` for models without one (MC dropout, PHiSeg, Prob. U-Net: use the sample frequency)."""
        out = np.zeros(self.shape, dtype=np.float32)
        with torch.no_grad():
            for where, x, roi, shape in self._units:
                logits = self._network.predict_logits(x, roi)
                if logits is None:
                    return None
                probability = crop_to(torch.softmax(logits, 1)[:, self.structure_class], shape).cpu().numpy()
                for index, p in zip(where, probability):
                    out[index] = p
        return out

    def parameters(self) -> dict[str, Any]:
        parameters = {"source": self.name, "architecture": self.architecture,
                      "model": None if self.loaded.path is None else str(self.loaded.path), "margin": self.margin}
        if isinstance(self._network, StochasticSegmentationNetwork):
            parameters.update(temperature=self.temperature, class_scale=self.class_scale)
        return parameters


def network_sources() -> dict[str, Any]:
    """Constructors of the shipped network samplers by source name, in the form of
    :data:`SegmentationUncertaintyLib.samplers.SOURCES`: ``SOURCES[name](reference, spacing, image=..., **p)``.

    ``p`` may name another ``model`` file of the same architecture (a user's own training).
    """
    def make(name: str):
        def create(reference, spacing=None, *, image=None, **parameters):
            if image is None:
                raise ValueError(f"the {name} sampler needs the image: the network segments it")
            parameters.setdefault("model", shipped_model_path(SHIPPED_MODELS[name]))
            sampler = NetworkSampler(reference, image, spacing, **parameters)
            sampler.name = name  # the source the user chose, as reported in parameters()["source"]
            return sampler
        return create
    return {name: make(name) for name in SHIPPED_MODELS}
