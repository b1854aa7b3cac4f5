"""Reading and writing images, masks and Slicer segmentations (NRRD, NIfTI, ``.seg.nrrd``) with SimpleITK.

Arrays follow the core's convention: ``[z, y, x]``, geometry as :class:`~SegmentationUncertaintyLib.geometry.Geometry`
(spacing per array axis in mm, RAS origin and directions). A 2-D file is read as a single slice
``(1, Y, X)`` with a 1 mm slice thickness; a file with more than three axes is refused, except the
4-D multi-layer ``.seg.nrrd`` that 3D Slicer writes.

Slicer's ``.seg.nrrd``: one labelmap per *layer* (a 3-D file has one layer; a 4-D file, read by SimpleITK
as a vector image, one per component). Segment ``i`` is described by the header keys ``Segment{i}_ID``,
``_Name``, ``_Color`` (RGB in [0, 1]), ``_Layer``, ``_LabelValue`` and ``_Extent``; a segment is the
voxels of its layer that hold its label value. ``Segmentation_ReferenceImageExtentOffset`` places a
cropped file in its reference image. Files written by Slicer before layers existed have no
``_LabelValue``: there, segment ``i`` is the nonzero voxels of component ``i``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from SegmentationUncertaintyLib.colors import distinct_colors
from SegmentationUncertaintyLib.geometry import Geometry, apply_geometry_to_sitk, geometry_from_sitk

__all__ = ["Segment", "Segmentation", "read_image", "read_segmentation", "write_segmentation", "write_map",
           "distinct_colors", "run_command"]

_SEGMENTATION_HEADER = {
    "Segmentation_MasterRepresentation": "Binary labelmap",
    "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
}


@dataclass
class Segment:
    """One named structure: a boolean mask ``(Z, Y, X)`` with its identifier and display colour."""

    name: str
    mask: np.ndarray
    id: str = ""
    color: tuple[float, float, float] | None = None


@dataclass
class Segmentation:
    """Segments on one voxel grid."""

    segments: list[Segment]
    geometry: Geometry

    @property
    def names(self) -> list[str]:
        return [segment.name for segment in self.segments]

    def select(self, key: str | int | None = None) -> Segment:
        """The segment named (or with the identifier) ``key``, or at index ``key`` (an int or a string
        of digits that is no segment's name); ``None`` is allowed only when there is a single segment."""
        if not self.segments:
            raise ValueError("the reference is empty: it has no segment (no nonzero label)")
        if key is None:
            if len(self.segments) > 1:
                raise ValueError(f"the segmentation has {len(self.segments)} segments {self.names}; "
                                 "choose one by name or index")
            return self.segments[0]
        for segment in self.segments:
            if str(key) in (segment.name, segment.id):
                return segment
        if isinstance(key, (int, np.integer)) or str(key).lstrip("-").isdigit():
            index = int(key)
            if -len(self.segments) <= index < len(self.segments):
                return self.segments[index]
            raise ValueError(f"segment index {index} is out of range: there are {len(self.segments)} segments")
        raise ValueError(f"no segment named {key!r}; the segments are {self.names}")


def _read(path: str | os.PathLike) -> sitk.Image:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    try:
        return sitk.ReadImage(path)
    except RuntimeError as error:
        raise ValueError(f"cannot read {path} as an image (NRRD, NIfTI, MHA, ...): {str(error).strip().splitlines()[-1]}") \
            from error


def _as_3d(image: sitk.Image, path: str) -> sitk.Image:
    """A 3-D image: 2-D files become one slice of 1 mm; more axes are refused."""
    if image.GetDimension() == 2:
        spacing, origin = image.GetSpacing(), image.GetOrigin()
        direction = np.asarray(image.GetDirection()).reshape(2, 2)
        volume = sitk.JoinSeries([image])
        volume.SetSpacing((*spacing, 1.0))
        volume.SetOrigin((*origin, 0.0))
        full = np.eye(3)
        full[:2, :2] = direction
        volume.SetDirection(tuple(full.ravel()))
        return volume
    if image.GetDimension() != 3:
        raise ValueError(f"{path} has {image.GetDimension()} axes; give a 2-D or 3-D image (one channel, one "
                         "time point)")
    return image


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a scalar image: float32 array ``(Z, Y, X)`` and its geometry.

    Raises ``ValueError`` for a missing or unreadable file, a vector (multi-channel) image or more than
    three axes.
    """
    image = _read(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel (4-D or "
                         "multi-channel); give a scalar 2-D or 3-D image")
    image = _as_3d(image, os.fspath(path))
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False), geometry_from_sitk(image)


def _parse_color(text: str | None) -> tuple[float, float, float] | None:
    try:
        values = tuple(float(v) for v in text.split())
    except (AttributeError, ValueError):
        return None
    return values if len(values) == 3 else None


def _resample_like(image: sitk.Image, shape: Sequence[int], geometry: Geometry) -> sitk.Image:
    reference = sitk.Image([int(n) for n in shape[::-1]], image.GetPixelID(), image.GetNumberOfComponentsPerPixel())
    apply_geometry_to_sitk(reference, geometry)
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def read_segmentation(path: str | os.PathLike, reference: tuple[Sequence[int], Geometry] | None = None) -> Segmentation:
    """Read a Slicer ``.seg.nrrd`` (one- or multi-layer) or a label map (NRRD, NIfTI, ...).

    Parameters
    ----------
    path : str or path
    reference : (shape, Geometry), optional
        Grid to return the segments on (nearest-neighbour resampling; a cropped ``.seg.nrrd`` is put
        back in its place). Default: the file's own grid.

    Returns
    -------
    Segmentation
        For a ``.seg.nrrd``, its segments in header order with names, identifiers and colours; for a
        label map without segment metadata, one segment per nonzero label value, named ``label_<value>``.
    """
    image = _read(path)
    keys = set(image.GetMetaDataKeys())
    meta = {key: image.GetMetaData(key) for key in keys}
    if image.GetNumberOfComponentsPerPixel() == 1:
        image = _as_3d(image, os.fspath(path))
    elif image.GetDimension() != 3:
        raise ValueError(f"{path}: a multi-layer segmentation must be 3-D with one component per layer")
    if reference is not None:
        image = _resample_like(image, reference[0], reference[1])
    geometry = geometry_from_sitk(image)
    array = sitk.GetArrayFromImage(image)
    layers = array[..., None] if image.GetNumberOfComponentsPerPixel() == 1 else array  # (Z, Y, X, layers)
    if not np.issubdtype(layers.dtype, np.integer):
        if not np.all(np.isfinite(layers)) or np.any(layers != np.round(layers)):
            raise ValueError(f"{path} is not a label map: its voxels hold non-integer values")
        layers = layers.astype(np.int64)
    segments = []
    index = 0
    while f"Segment{index}_ID" in keys or f"Segment{index}_Name" in keys:
        prefix = f"Segment{index}_"
        has_label = prefix + "LabelValue" in keys
        layer = int(meta.get(prefix + "Layer", index if not has_label else 0))
        if not 0 <= layer < layers.shape[-1]:
            raise ValueError(f"{path}: segment {index} lies in layer {layer} but the file has {layers.shape[-1]}")
        values = layers[..., layer]
        mask = values == int(meta[prefix + "LabelValue"]) if has_label else values != 0
        name = meta.get(prefix + "Name", meta.get(prefix + "ID", f"Segment_{index}"))
        segments.append(Segment(name, mask, meta.get(prefix + "ID", name), _parse_color(meta.get(prefix + "Color"))))
        index += 1
    if not segments:  # a plain label map
        if layers.shape[-1] != 1:
            raise ValueError(f"{path} has {layers.shape[-1]} components per voxel but no segment metadata")
        labels = layers[..., 0]
        for value in np.unique(labels):
            if value != 0:
                segments.append(Segment(f"label_{value}", labels == value, str(value)))
    return Segmentation(segments, geometry)


def _to_sitk(array: np.ndarray, geometry: Geometry, is_vector: bool = False) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=is_vector)
    apply_geometry_to_sitk(image, geometry)
    return image


def _check_geometry(shape: Sequence[int], geometry: Geometry) -> None:
    if not isinstance(geometry, Geometry):
        raise ValueError(f"geometry must be a Geometry, got {type(geometry).__name__}")
    if len(shape) != 3:
        raise ValueError(f"arrays to write must be 3-D (Z, Y, X), got shape {tuple(shape)}")


def write_segmentation(path: str | os.PathLike, masks: np.ndarray | Sequence[np.ndarray], geometry: Geometry,
                       names: Sequence[str] | None = None,
                       colors: Sequence[Sequence[float]] | None = None, crop: bool = True) -> None:
    """Write masks as a Slicer ``.seg.nrrd``: one segment per mask, each on its own layer (they may overlap).

    Parameters
    ----------
    path : str or path
        Output file, normally ending in ``.seg.nrrd``.
    masks : ndarray (N, Z, Y, X) or sequence of N masks (Z, Y, X)
        Boolean masks on the grid described by ``geometry``.
    geometry : Geometry
    names : sequence of str, optional
        Segment names (and identifiers); default ``Segment_1``, ... .
    colors : sequence of RGB in [0, 1], optional
        Default :func:`distinct_colors`.
    crop : bool
        Store only the bounding box of the union of the masks (as Slicer does), with
        ``Segmentation_ReferenceImageExtentOffset`` giving its place in the full grid.
    """
    masks = [np.asarray(m, dtype=bool) for m in (masks if not isinstance(masks, np.ndarray) or masks.ndim == 4
                                                   else [masks])]
    if not masks:
        raise ValueError("no mask to write")
    shape = masks[0].shape
    _check_geometry(shape, geometry)
    if any(m.shape != shape for m in masks):
        raise ValueError("all masks must have the same shape")
    names = [f"Segment_{i + 1}" for i in range(len(masks))] if names is None else [str(n) for n in names]
    colors = distinct_colors(len(masks)) if colors is None else [tuple(float(c) for c in rgb) for rgb in colors]
    if len(names) != len(masks) or len(colors) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(names)} names and {len(colors)} colours")
    lower = np.zeros(3, dtype=int)
    upper = np.asarray(shape)
    if crop:
        union = np.zeros(shape, dtype=bool)
        for mask in masks:
            union |= mask
        if union.any():
            hits = [np.nonzero(union.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
            lower = np.array([h[0] for h in hits])
            upper = np.array([h[-1] + 1 for h in hits])
    box = tuple(slice(a, b) for a, b in zip(lower, upper))
    layers = np.stack([m[box] for m in masks], axis=-1).astype(np.uint8)  # (z, y, x, N)
    origin = geometry.ijk_to_ras() @ np.array([*lower[::-1], 1.0])
    cropped = Geometry(geometry.spacing, tuple(origin[:3]), geometry.directions)
    image = _to_sitk(layers if len(masks) > 1 else layers[..., 0], cropped, is_vector=len(masks) > 1)
    header = dict(_SEGMENTATION_HEADER)
    header["Segmentation_ReferenceImageExtentOffset"] = " ".join(str(int(v)) for v in lower[::-1])
    for i, (name, color, mask) in enumerate(zip(names, colors, masks)):
        local = mask[box]
        if local.any():
            hits = [np.nonzero(local.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in (2, 1, 0)]
            extent = " ".join(f"{h[0]} {h[-1]}" for h in hits)
        else:
            extent = "0 -1 0 -1 0 -1"
        header.update({f"Segment{i}_ID": name, f"Segment{i}_Name": name, f"Segment{i}_NameAutoGenerated": "0",
                       f"Segment{i}_Color": " ".join(f"{c:g}" for c in color), f"Segment{i}_ColorAutoGenerated": "0",
                       f"Segment{i}_Layer": str(i if len(masks) > 1 else 0), f"Segment{i}_LabelValue": "1",
                       f"Segment{i}_Extent": extent, f"Segment{i}_Tags": "|"})
    for key, value in header.items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, os.fspath(path), useCompression=True)


def write_map(path: str | os.PathLike, array: np.ndarray, geometry: Geometry) -> None:
    """Write a float map ``(Z, Y, X)`` (frequency, entropy, ...) as a compressed NRRD / NIfTI volume."""
    array = np.asarray(array)
    _check_geometry(array.shape, geometry)
    sitk.WriteImage(_to_sitk(array.astype(np.float32, copy=False), geometry), os.fspath(path), useCompression=True)


def run_command(program: str, run, args) -> tuple[int, dict | None]:
    """Run a command's ``run(args)``: bad input (``ValueError``) or a failed write (``OSError``) prints
    ``<program>: error: ...`` on stderr and gives exit status 2, else ``(0, summary)``."""
    import sys

    try:
        return 0, run(args)
    except ValueError as error:
        message = str(error)
    except OSError as error:
        message = f"cannot write the results: {error}"
    print(f"{program}: error: {message}", file=sys.stderr)
    return 2, None
