"""Input checks shared by the core: fail early, with a message that says what is wrong and how to fix it."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of ``ndim`` positive floats (mm); ``None`` means 1 mm per axis."""
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(spacing) != ndim:
        raise ValueError(f"spacing has {len(spacing)} values but the array has {ndim} axes; "
                         "give one voxel size in mm per array axis, in array order (z, y, x)")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive voxel sizes in mm, got {spacing}")
    return spacing


def check_ndim(array: np.ndarray, name: str) -> None:
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2-D or 3-D array, got {array.ndim}-D with shape {array.shape}; "
                         "pass one channel / one time point at a time")


def check_mask(mask: np.ndarray, name: str = "reference mask", *, allow_empty: bool = False,
               allow_full: bool = False) -> np.ndarray:
    """Return ``mask`` as a boolean array after checking dimension and content."""
    mask = np.asarray(mask)
    check_ndim(mask, name)
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number):
            raise ValueError(f"{name} must be a numeric or boolean array, got dtype {mask.dtype}")
        if np.issubdtype(mask.dtype, np.floating) and not np.all(np.isfinite(mask)):
            raise ValueError(f"{name} contains NaN or infinite values")
        mask = mask > 0
    if not allow_empty and not mask.any():
        raise ValueError(f"{name} is empty: draw or select a non-empty segment first")
    if not allow_full and mask.all():
        raise ValueError(f"{name} covers the whole image, so it has no boundary; "
                         "crop the image or use a smaller structure")
    return mask


def check_image(image: np.ndarray, name: str = "image", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``image`` as float32 after checking dimension, finiteness and (optionally) shape."""
    image = np.asarray(image)
    check_ndim(image, name)
    if shape is not None and image.shape != tuple(shape):
        raise ValueError(f"{name} has shape {image.shape} but the mask has shape {tuple(shape)}; "
                         "resample them onto the same grid first")
    image = image.astype(np.float32, copy=False)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name} contains NaN or infinite values; fill or mask them first")
    return image


def check_device(device) -> "torch.device":
    """Return ``device`` as a ``torch.device`` after checking it is ``"cpu"``, an available ``"cuda"``, or
    ``"auto"`` (CUDA when torch sees a GPU, else the CPU)."""
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device
