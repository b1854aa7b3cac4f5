"""Multi-annotator training sets from real MRIs, with a known annotation distribution.

Images: the MNI ICBM152 2009a T1 (lateral ventricles, split at the mid-sagittal plane) and the Colin27 T1
with its AAL manual structures (hippocampus, thalamus, caudate, putamen; left and right), read by
:mod:`SegmentationUncertaintyLib.sample_data` from installed packages (never downloaded).

Annotations: for every image, ``n_annotations`` segmentations drawn by GPSSI
(:class:`SegmentationUncertaintyLib.gpssi.GPSSISampler`) around the real structure, with its spread
calibrated to a target mean pairwise Dice. The "annotators" are therefore samples of a known distribution:
more of them can be drawn at will, and the annotators' diversity is the target a network sampler should
reach.

* :func:`build_annotated_slices`: 2-D ``size × size`` crops of axial and coronal slices centred on a
  structure (every ``slice_step``-th slice where the structure is at least ``min_area`` pixels and fits in
  the crop), GPSSI in 2-D on each crop.
* :func:`build_annotated_patches`: 3-D ``size³`` patches around each structure (jittered centres), GPSSI
  in 3-D.

Held-out images: along each (structure, orientation), consecutive slices are grouped in blocks of 4 and
every 4th block is held out, so test slices are a few millimetres from the nearest training slice; 3-D
patches: one structure of each side is held out.

Everything is seeded; a built set is cached as ``.npz`` under :func:`default_cache_dir` (keyed by all
parameters and by the source of the GPSSI modules, so that a change to GPSSI rebuilds it), never committed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import IntensityNormalization

__all__ = ["AnnotatedImages", "build_annotated_slices", "build_annotated_patches", "default_cache_dir",
           "COLIN27_STRUCTURES", "DATASET_VERSION"]

#: Bump when the construction changes, so that stale caches are not reused.
DATASET_VERSION = 1

COLIN27_STRUCTURES = ("Hippocampus_L", "Hippocampus_R", "Thalamus_L", "Thalamus_R", "Caudate_L", "Caudate_R",
                      "Putamen_L", "Putamen_R")
_ORIENTATION_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


@dataclass
class AnnotatedImages:
    """Images with several annotations each.

    Attributes
    ----------
    images : ndarray of float32, shape (N, 1, *S)
        Normalised intensities (see ``normalization``).
    annotations : ndarray of bool, shape (N, K, *S)
        ``K`` GPSSI annotations per image.
    references : ndarray of bool, shape (N, *S)
        The real structure (the GPSSI mean).
    rois : ndarray of bool, shape (N, *S)
        Region of interest (head) from the normalised image.
    names : ndarray of str, shape (N,)
        ``case/structure/orientation/index`` of each image.
    split : ndarray of str, shape (N,)
        ``"train"`` or ``"test"``.
    normalization : IntensityNormalization
    parameters : dict
        Construction parameters (target Dice, seed, GPSSI ω0 per image summary, ...).
    """

    images: np.ndarray
    annotations: np.ndarray
    references: np.ndarray
    rois: np.ndarray
    names: np.ndarray
    split: np.ndarray
    normalization: IntensityNormalization = field(default_factory=IntensityNormalization)
    parameters: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 2

    def network_inputs(self) -> np.ndarray:
        """Network input ``(N, 2, *S)`` float32: the normalised image and the reference (0/1), the channels
        ``("image", "reference")`` of the shipped models."""
        return np.concatenate([self.images, self.references[:, None].astype(np.float32)], axis=1)

    def select(self, split: str) -> "AnnotatedImages":
        """The images of one split (``"train"`` or ``"test"``)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        keep = self.split == split
        return replace(self, images=self.images[keep], annotations=self.annotations[keep],
                       references=self.references[keep], rois=self.rois[keep], names=self.names[keep],
                       split=self.split[keep])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, images=self.images, annotations=self.annotations, references=self.references,
                            rois=self.rois, names=self.names, split=self.split,
                            normalization=json.dumps(self.normalization.to_dict()),
                            parameters=json.dumps(self.parameters))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AnnotatedImages":
        with np.load(path, allow_pickle=False) as data:
            return cls(images=data["images"], annotations=data["annotations"], references=data["references"],
                       rois=data["rois"], names=data["names"], split=data["split"],
                       normalization=IntensityNormalization(**json.loads(str(data["normalization"]))),
                       parameters=json.loads(str(data["parameters"])))


def default_cache_dir() -> Path:
    """``$SEGMENTATION_UNCERTAINTY_CACHE/networks`` or ``~/.cache/segmentation-uncertainty/networks``."""
    root = os.environ.get("SEGMENTATION_UNCERTAINTY_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "segmentation-uncertainty"
    return base / "networks"


def _annotator_code() -> str:
    """Digest of the source of the modules that draw the annotations: a change to GPSSI invalidates caches."""
    from .. import geodesic, gp_sampling, gpssi

    digest = hashlib.sha1()
    for module in (geodesic, gp_sampling, gpssi):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def _cache_path(kind: str, parameters: dict[str, Any], cache_dir: str | Path | None) -> Path:
    keyed = dict(parameters, annotator_code=_annotator_code())
    key = hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{kind}_{key}.npz"


# ------------------------------------------------------------------------------------------- sources

def _cases(structures: Sequence[str]) -> list[tuple[str, np.ndarray, dict[str, np.ndarray], tuple[float, ...]]]:
    """(case name, normalised image, masks, spacing) of MNI152 (ventricles split L/R) and Colin27."""
    from .. import sample_data

    normalization = IntensityNormalization()
    cases = []
    mni = sample_data.load_mni152()
    ventricles = mni.masks["lateral_ventricles"]
    # Split at the mid-sagittal plane (RAS x = 0): each side fits in a crop, and is a structure of its own.
    ijk_to_ras = mni.geometry.ijk_to_ras()
    ras_x = ijk_to_ras[0, 0] * np.arange(ventricles.shape[2]) + ijk_to_ras[0, 3]
    left = (ras_x < 0)[None, None, :]
    mni_masks = {"lateral_ventricle_R": ventricles & ~left, "lateral_ventricle_L": ventricles & left}
    cases.append(("mni152", normalization.apply(mni.image), mni_masks, mni.spacing))
    colin = sample_data.load_colin27(structures=tuple(structures))
    cases.append(("colin27", normalization.apply(colin.image), colin.masks, colin.spacing))
    return cases


def _annotate(image: np.ndarray, reference: np.ndarray, spacing: Sequence[float], n: int, target_dice: float,
              seed: int) -> tuple[np.ndarray, float]:
    """``n`` GPSSI samples around ``reference`` at mean pairwise Dice ``target_dice``; returns them and ω0."""
    from ..gpssi import GPSSISampler

    sampler = GPSSISampler(reference, image=image, spacing=spacing)
    omega0 = sampler.calibrate(target_dice, seed=seed)
    samples = np.stack(list(sampler.sample(n, seed=seed + 1)))
    return samples.astype(bool), float(omega0)


class _Collector:
    """Accumulates annotated images, then stacks them into an :class:`AnnotatedImages`."""

    def __init__(self) -> None:
        self.normalization = IntensityNormalization()
        self.records: list[tuple] = []
        self.omegas: list[float] = []

    def __len__(self) -> int:
        return len(self.records)

    def add(self, image: np.ndarray, annotations: np.ndarray, reference: np.ndarray, name: str, split: str,
            omega0: float) -> None:
        self.records.append((image[None], annotations, reference, self.normalization.roi(image), name, split))
        self.omegas.append(omega0)

    def finish(self, parameters: dict[str, Any], path: Path | None) -> AnnotatedImages:
        if not self.records:
            raise ValueError("no image qualified: relax min_area / limit or choose other structures")
        parameters["omega0"] = {"min": float(np.min(self.omegas)), "median": float(np.median(self.omegas)),
                                "max": float(np.max(self.omegas))}
        images, annotations, references, rois, names, split = zip(*self.records)
        result = AnnotatedImages(np.stack(images).astype(np.float32), np.stack(annotations), np.stack(references),
                                 np.stack(rois), np.array(names), np.array(split), self.normalization, parameters)
        if path is not None:
            result.save(path)
        return result


# --------------------------------------------------------------------------------------------- 2-D

def _crop_box(center: Sequence[float], size: int, shape: Sequence[int]) -> tuple[slice, ...]:
    starts = [int(np.clip(round(c - size / 2), 0, s - size)) for c, s in zip(center, shape)]
    return tuple(slice(a, a + size) for a in starts)


def build_annotated_slices(size: int = 64, n_annotations: int = 8, target_dice: float = 0.8, seed: int = 0,
                           slice_step: int = 2, orientations: Sequence[str] = ("axial", "coronal"),
                           min_area: int = 40, margin: int = 4, structures: Sequence[str] = COLIN27_STRUCTURES,
                           cache_dir: str | Path | None = None, use_cache: bool = True,
                           limit: int | None = None) -> AnnotatedImages:
    """2-D multi-annotator set: crops of real MRI slices, each with GPSSI annotations.

    Parameters
    ----------
    size : int
        Crop side in pixels (1 mm).
    n_annotations : int
        GPSSI annotations per slice.
    target_dice : float
        Mean pairwise Dice between the annotations of a slice (GPSSI ω0 calibrated per slice).
    seed : int
    slice_step : int
        Every ``slice_step``-th slice through each structure.
    orientations : sequence of {"axial", "coronal", "sagittal"}
    min_area : int
        Slices where the structure has fewer pixels are skipped, as are slices where it does not fit in
        the crop with ``margin`` pixels to spare.
    structures : sequence of str
        Colin27 AAL structures (the MNI152 lateral ventricles are always included).
    cache_dir, use_cache : where the built set is cached (:func:`default_cache_dir`); ``use_cache=False``
        rebuilds and overwrites.
    limit : int, optional
        Keep only the first ``limit`` slices per structure and orientation (quick tests).
    """
    for orientation in orientations:
        if orientation not in _ORIENTATION_AXIS:
            raise ValueError(f"unknown orientation {orientation!r}; use {sorted(_ORIENTATION_AXIS)}")
    if not 0.0 < target_dice < 1.0:
        raise ValueError(f"target_dice must be in (0, 1), got {target_dice}")
    parameters = dict(kind="slices", version=DATASET_VERSION, size=size, n_annotations=n_annotations,
                      target_dice=target_dice, seed=seed, slice_step=slice_step, orientations=list(orientations),
                      min_area=min_area, margin=margin, structures=list(structures), limit=limit)
    path = _cache_path("slices", parameters, cache_dir)
    if use_cache and path.is_file():
        return AnnotatedImages.load(path)

    images = _Collector()
    for case, volume, masks, spacing in _cases(structures):
        for structure, mask in masks.items():
            for orientation in orientations:
                axis = _ORIENTATION_AXIS[orientation]
                plane_spacing = tuple(s for a, s in enumerate(spacing) if a != axis)
                positions = [i for i in range(mask.shape[axis]) if np.take(mask, i, axis).sum() >= min_area]
                kept = 0
                for rank, position in enumerate(positions[::slice_step]):
                    if limit is not None and kept >= limit:
                        break
                    mask2d = np.take(mask, position, axis)
                    coords = np.argwhere(mask2d)
                    if np.any(coords.max(0) - coords.min(0) + 1 > size - 2 * margin):
                        continue
                    box = _crop_box((coords.min(0) + coords.max(0) + 1) / 2, size, mask2d.shape)
                    image2d = np.take(volume, position, axis)[box]
                    reference = mask2d[box]
                    drawn, omega0 = _annotate(image2d, reference, plane_spacing, n_annotations, target_dice,
                                              seed=seed * 100_003 + 2 * len(images))
                    images.add(image2d, drawn, reference, f"{case}/{structure}/{orientation}/{position}",
                               "test" if (kept // 4) % 4 == 3 else "train", omega0)
                    kept += 1
    return images.finish(parameters, path if use_cache or cache_dir is not None else None)


# --------------------------------------------------------------------------------------------- 3-D

def build_annotated_patches(size: int = 32, n_annotations: int = 8, target_dice: float = 0.8, seed: int = 0,
                            patches_per_structure: int = 4, jitter: int = 4,
                            structures: Sequence[str] = COLIN27_STRUCTURES, test_structures: Sequence[str] = (
                                "Putamen_R", "lateral_ventricle_L"),
                            cache_dir: str | Path | None = None, use_cache: bool = True) -> AnnotatedImages:
    """3-D multi-annotator set: ``size³`` patches around each structure, GPSSI in 3-D.

    Each structure gives ``patches_per_structure`` patches centred at its centroid shifted by up to
    ``jitter`` voxels per axis; structures larger than the patch are cut by it (GPSSI runs on the patch).
    The structures named in ``test_structures`` are held out.
    """
    if not 0.0 < target_dice < 1.0:
        raise ValueError(f"target_dice must be in (0, 1), got {target_dice}")
    parameters = dict(kind="patches", version=DATASET_VERSION, size=size, n_annotations=n_annotations,
                      target_dice=target_dice, seed=seed, patches_per_structure=patches_per_structure,
                      jitter=jitter, structures=list(structures), test_structures=list(test_structures))
    path = _cache_path("patches", parameters, cache_dir)
    if use_cache and path.is_file():
        return AnnotatedImages.load(path)
    rng = np.random.default_rng(seed)
    images = _Collector()
    for case, volume, masks, spacing in _cases(structures):
        for structure, mask in masks.items():
            center = np.argwhere(mask).mean(axis=0)
            for k in range(patches_per_structure):
                box = _crop_box(center + rng.integers(-jitter, jitter + 1, 3), size, mask.shape)
                reference = mask[box]
                if not reference.any() or reference.all():
                    continue
                drawn, omega0 = _annotate(volume[box], reference, spacing, n_annotations, target_dice,
                                          seed=seed * 100_003 + 2 * len(images))
                images.add(volume[box], drawn, reference, f"{case}/{structure}/patch/{k}",
                           "test" if structure in test_structures else "train", omega0)
    return images.finish(parameters, path if use_cache or cache_dir is not None else None)
