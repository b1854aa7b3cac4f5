"""Sample cases as MRML nodes: a real image volume and its reference segmentation.

Example
-------
>>> volume, segmentation = load_sample_case("mni152-ventricles")
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from SegmentationUncertaintyLib import sample_data

from .nodes import add_segmentation, add_volume


def _mni152():
    case = sample_data.load_mni152()
    return case, {"lateral ventricles": case.masks["lateral_ventricles"]}


def _colin27_hippocampus():
    case = sample_data.load_colin27(("Hippocampus_L",))
    return case, {"left hippocampus": case.masks["Hippocampus_L"]}


def _mni152_raters():
    case = sample_data.load_mni152_ventricle_raters()
    return case, dict(case.masks)


#: Case key -> (title, loader returning the SampleCase and the named reference masks: one reference, or
#: several raters of one structure).
SAMPLE_CASES: dict[str, tuple[str, Callable]] = {
    "mni152-ventricles": ("MNI152 T1 — lateral ventricles", _mni152),
    "colin27-hippocampus": ("Colin27 T1 — left hippocampus (AAL)", _colin27_hippocampus),
    "mni152-ventricle-raters": ("MNI152 T1 — lateral ventricles, 5 raters", _mni152_raters),
}

DEFAULT_CASE = "mni152-ventricles"


def cropped_sample_case(key: str, margin_mm: float):
    """A sample case cropped around its references (seconds, not minutes, of work in tests and self-tests).

    Returns
    -------
    (str, SampleCase)
        The image's short title and the cropped case, whose ``masks`` are the case's named references.
    """
    if key not in SAMPLE_CASES:
        raise ValueError(f"unknown sample case {key!r}; choose one of {sorted(SAMPLE_CASES)}")
    title, loader = SAMPLE_CASES[key]
    case, references = loader()
    return title.split(" — ")[0], replace(case, masks=references, maps={}).crop(margin_mm)


def load_sample_case(key: str = DEFAULT_CASE):
    """Add a sample case to ``slicer.mrmlScene``: a volume node and a segmentation node with the reference
    (named "Reference"), or with one segment per rater (named "Raters") for a multi-rater case.

    Parameters
    ----------
    key : str
        One of :data:`SAMPLE_CASES`.

    Returns
    -------
    (vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode)
    """
    if key not in SAMPLE_CASES:
        raise ValueError(f"unknown sample case {key!r}; choose one of {sorted(SAMPLE_CASES)}")
    title, loader = SAMPLE_CASES[key]
    case, references = loader()
    volume = add_volume(case.image, case.geometry, title.split(" — ")[0])
    segmentation = add_segmentation(references, volume, "Raters" if len(references) > 1 else "Reference")
    return volume, segmentation
