"""Model files: the network's architecture and configuration, its weights, and the intensity
normalisation its inputs need, in one ``.pt`` file read with ``torch.load(weights_only=True)`` (plain
tensors, numbers, strings, lists and dicts only: loading a file never runs code from it).

A user's own trained model of one of the architectures of :data:`ARCHITECTURES` loads like a shipped one.

Inputs: a model file names its input channels in order (:data:`INPUT_KINDS`): ``"image"`` (an intensity
volume, normalised as recorded) and ``"reference"`` (the reference segmentation the samples are drawn
around, as 0/1). The shipped models take ``("image", "reference")``: like GPSSI, they sample plausible
segmentations around a reference given the image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from ..validation import check_image
from .base import DeterministicUNet, SegmentationNetwork
from .mc_dropout import MCDropoutUNet
from .phiseg import PHiSeg
from .prob_unet import ProbabilisticUNet
from .ssn import StochasticSegmentationNetwork

__all__ = ["ARCHITECTURES", "MODEL_FORMAT", "INPUT_KINDS", "IntensityNormalization", "LoadedModel", "save_model", "load_model",
           "shipped_models_dir", "shipped_model_path", "check_input_channels"]

MODEL_FORMAT = "segmentation-uncertainty-network"
FORMAT_VERSION = 1

#: Architecture name written in a model file → the class that rebuilds it.
ARCHITECTURES: dict[str, type[SegmentationNetwork]] = {
    cls.architecture: cls
    for cls in (DeterministicUNet, StochasticSegmentationNetwork, MCDropoutUNet, PHiSeg, ProbabilisticUNet)
}

#: Kinds of input channel a model file can name.
INPUT_KINDS = ("image", "reference")


def _check_inputs(inputs, in_channels: int) -> tuple[str, ...]:
    inputs = tuple(inputs)
    unknown = [kind for kind in inputs if kind not in INPUT_KINDS]
    if unknown or inputs.count("reference") > 1:
        raise ValueError(f"inputs must name channels among {INPUT_KINDS} (at most one reference), got {inputs}")
    if len(inputs) != in_channels:
        raise ValueError(f"inputs {inputs} name {len(inputs)} channels but the network takes {in_channels}")
    return inputs


@dataclass
class IntensityNormalization:
    """How an image is mapped to network input, recorded in the model file.

    ``method="percentile"``: the ``low`` and ``high`` percentiles of the voxels above the volume's minimum
    (the non-background voxels) are mapped to 0 and 1, so that MRIs in any units give the same input; it is
    computed over the whole volume passed in, not per slice. ``method="none"``: the image is used as is.

    ``roi_threshold``: the region of interest (where SSN's covariance is allowed, papers/003 §5.1) is the
    normalised image above this value, dilated by 2 voxels; ``None``: the whole image.
    """

    method: str = "percentile"
    low: float = 1.0
    high: float = 99.0
    roi_threshold: float | None = 0.02

    def __post_init__(self) -> None:
        if self.method not in ("percentile", "none"):
            raise ValueError(f"unknown intensity normalisation {self.method!r}; use 'percentile' or 'none'")
        if self.method == "percentile" and not 0 <= self.low < self.high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Normalised copy of ``image`` (2-D or 3-D, or ``(channels, *shape)``), float32."""
        image = np.asarray(image, dtype=np.float32)
        if not np.all(np.isfinite(image)):
            raise ValueError("the image contains NaN or infinite values; fill or mask them first")
        if self.method == "none":
            return image.copy()
        foreground = image[image > image.min()]
        values = foreground if foreground.size else image.ravel()
        lo, hi = np.percentile(values, [self.low, self.high])
        scale = float(hi - lo) if hi > lo else 1.0
        return ((image - lo) / scale).astype(np.float32)

    def roi(self, normalized: np.ndarray) -> np.ndarray:
        """Boolean region of interest of a normalised image (same shape)."""
        if self.roi_threshold is None:
            return np.ones(normalized.shape, dtype=bool)
        return ndi.binary_dilation(normalized > self.roi_threshold, iterations=2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A model read from a file: the network (eval mode), its input normalisation, and its metadata."""

    model: SegmentationNetwork
    normalization: IntensityNormalization
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    inputs: tuple[str, ...] = ("image",)

    @property
    def image_channels(self) -> int:
        """Number of image channels the caller passes (the reference channel is the sampler's)."""
        return self.inputs.count("image")

    @property
    def architecture(self) -> str:
        return self.model.architecture


def shipped_models_dir() -> Path:
    """``Resources/Models`` of the SegmentationUncertainty module, where the shipped trained models are.

    A module resource, so that Slicer's extension packaging carries it: relative to this file it is at
    the same place in the source tree (``SegmentationUncertainty/Resources/Models``) and in an installed
    extension (``qt-scripted-modules/Resources/Models``, beside ``SegmentationUncertaintyLib``)."""
    return Path(__file__).resolve().parents[2] / "Resources" / "Models"


def shipped_model_path(name: str) -> Path:
    """Path of the shipped model ``name`` (e.g. ``"ssn_2d"``); the file may not exist."""
    return shipped_models_dir() / f"{name}.pt"


def save_model(path: str | Path, model: SegmentationNetwork, normalization: IntensityNormalization,
               metadata: dict[str, Any] | None = None, inputs: tuple[str, ...] | None = None) -> Path:
    """Write ``model`` (architecture, configuration, weights) and its input normalisation to ``path``.

    ``metadata``: anything JSON-like (training data, command, metrics), kept in the file. ``inputs``: the
    kind of each input channel (:data:`INPUT_KINDS`); default: every channel an image.
    """
    inputs = _check_inputs(("image",) * model.in_channels if inputs is None else inputs, model.in_channels)
    if model.architecture not in ARCHITECTURES:
        raise ValueError(f"cannot save a {type(model).__name__}: its architecture {model.architecture!r} is not "
                         f"one of {sorted(ARCHITECTURES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({
        "format": MODEL_FORMAT, "version": FORMAT_VERSION, "architecture": model.architecture,
        "config": dict(model.config), "state_dict": state, "normalization": normalization.to_dict(),
        "metadata": dict(metadata or {}), "inputs": list(inputs),
    }, path)
    return path


def load_model(path: str | Path, architecture: str | None = None, device: str = "cpu") -> LoadedModel:
    """Read a model file written by :func:`save_model`.

    Parameters
    ----------
    path : str or Path
    architecture : str, optional
        Expected architecture (one of :data:`ARCHITECTURES`); a file holding another one is an error.
    device : {"cpu", "cuda"}

    Raises
    ------
    FileNotFoundError
        No file at ``path`` (the message names the path that was expected).
    ValueError
        Not a model file, another architecture than expected, or weights that do not fit the recorded
        configuration.
    """
    path = Path(path)
    if architecture is not None and architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}: expected a .pt file written by save_model "
                                "(train one with `train-networks` or check the path)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign pickle: say what the file should be
        raise ValueError(f"{path} is not a readable model file ({error})") from error
    if not isinstance(content, dict) or content.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a {MODEL_FORMAT} file (a bare state_dict or another tool's file?); "
                         "save models with SegmentationUncertaintyLib.networks.io.save_model")
    found = content["architecture"]
    if found not in ARCHITECTURES:
        raise ValueError(f"{path} holds an unknown architecture {found!r}; known: {sorted(ARCHITECTURES)}")
    if architecture is not None and found != architecture:
        raise ValueError(f"{path} holds a {found!r} network, but a {architecture!r} network was expected")
    model = ARCHITECTURES[found](**content["config"])
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"the weights in {path} do not fit a {found!r} network with configuration "
                         f"{content['config']}: {error}") from error
    inputs = _check_inputs(content.get("inputs", ("image",) * model.in_channels), model.in_channels)
    model.to(device).eval()
    return LoadedModel(model, IntensityNormalization(**content["normalization"]), dict(content["metadata"]), path,
                       inputs)


def check_input_channels(image: np.ndarray, image_channels: int, spatial_dims: int) -> np.ndarray:
    """Return ``image`` as ``(image_channels, *shape)`` float32 after checking it fits the model.

    A single-channel model takes a 2-D or 3-D array; a multi-channel one takes ``(channels, *shape)``.
    A 2-D model runs slice by slice on a 3-D volume; a 3-D model needs a 3-D volume.
    """
    image = np.asarray(image)
    if image_channels == 1:
        if image.ndim == 4:
            raise ValueError(f"the model takes 1 image channel but the image has shape {image.shape}, read as "
                             f"{image.shape[0]} channels of shape {image.shape[1:]}; pass a single 2-D or 3-D image")
        check_image(image)
        image = image[None]
    else:
        if image.ndim not in (3, 4) or image.shape[0] != image_channels:
            raise ValueError(f"the model takes {image_channels} image channels, stacked as (channels, *shape), "
                             f"but the image has shape {image.shape}; pass one volume per channel the model "
                             "was trained on")
        check_image(image[0])
    if spatial_dims == 3 and image.ndim != 4:
        raise ValueError(f"the model is 3-D but the image is 2-D with shape {image.shape[1:]}; "
                         "use a 2-D model or pass a volume")
    return image.astype(np.float32, copy=False)
