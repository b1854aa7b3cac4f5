"""End-to-end scenario of the ConsensusFusion module, shared by the pytest suite and the module's self-test
inside Slicer (``ConsensusFusionTest``): raters around a real structure, fused, every output checked.

Example
-------
>>> volume, raters = add_rater_case("mni152-ventricles")           # doctest: +SKIP
>>> outputs = check_fusion(ConsensusFusionLogic(), volume, raters)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from SegmentationUncertaintyLib import metrics
from SegmentationUncertaintyLogic.nodes import (add_segmentation, add_volume, geometry_of_volume, segment_ids,
                                                segment_mask, table_rows)
from SegmentationUncertaintyLogic.sample_scenes import cropped_sample_case

from .logic import RATER_COLUMNS, ConsensusFusionLogic, FusionOutputs

#: The rater that over-segments one half of the structure by 3 voxels.
OUTLIER = "outlier"


def rater_masks(reference: np.ndarray) -> dict[str, np.ndarray]:
    """Five plausible raters of one structure: as drawn, one voxel more, one voxel less, shifted by one
    voxel, and an outlier who adds a 3-voxel rim on one half of it."""
    half = np.zeros_like(reference)
    half[: reference.shape[0] // 2] = True
    return {"as drawn": reference, "generous": ndi.binary_dilation(reference),
            "tight": ndi.binary_erosion(reference), "shifted": np.roll(reference, 1, axis=2),
            OUTLIER: reference | (ndi.binary_dilation(reference, iterations=3) & half)}


def add_rater_case(key: str = "mni152-ventricles", margin_mm: float = 6.0):
    """Add a sample image cropped around its reference, and a "Raters" segmentation of :func:`rater_masks`.

    Returns
    -------
    (vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode)
    """
    title, cropped = cropped_sample_case(key, margin_mm)
    volume = add_volume(cropped.image, cropped.geometry, f"{title} cropped")
    return volume, add_segmentation(rater_masks(next(iter(cropped.masks.values()))), volume, "Raters")


def check_fusion(logic: ConsensusFusionLogic, volume, raters, method: str = "student-t") -> FusionOutputs:
    """Fuse every segment of ``raters`` on ``volume`` and check every output.

    Checks node types, names and geometry; the consensus segment is the consensus probability above 1/2
    and close to the raters; each τ volume is its rater's τ map; the table has one row per rater whose
    Dice to the consensus matches the segments read back; progress runs from 0 to 1.
    """
    import slicer

    messages = []
    outputs = logic.fuse(raters, volume, method=method,
                         progress=lambda fraction, message: messages.append((fraction, message)))
    ids = segment_ids(raters)
    names = [raters.GetSegmentation().GetSegment(i).GetName() for i in ids]
    masks = [segment_mask(raters, i, volume) for i in ids]
    fused = outputs.result
    expected = geometry_of_volume(volume).ijk_to_ras()

    consensus = outputs.consensus
    assert consensus.IsA("vtkMRMLSegmentationNode") and consensus.GetName() == f"{raters.GetName()} consensus"
    assert [consensus.GetSegmentation().GetSegment(i).GetName() for i in segment_ids(consensus)] == ["consensus"]
    consensus_mask = segment_mask(consensus, segment_ids(consensus)[0], volume)
    assert np.array_equal(consensus_mask, fused.mask)
    assert len(outputs.probabilities) == 1
    probability = slicer.util.arrayFromVolume(outputs.probabilities[0])
    assert outputs.probabilities[0].GetName() == f"{raters.GetName()} consensus probability"
    np.testing.assert_allclose(probability, 1.0 - fused.probabilities[0], atol=1e-6)
    assert np.array_equal(consensus_mask, probability > 0.5), "the consensus is not the probability above 1/2"
    assert metrics.dice(consensus_mask, masks[0]) > 0.85, "the consensus is far from the raters"

    robust = method == "student-t"
    assert len(outputs.tau) == (len(ids) if robust else 0)
    for name, node, tau in zip(names, outputs.tau, fused.tau if robust else []):
        assert node.GetName() == f"{name} tau"
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node), tau, atol=1e-6)
    for node in (*outputs.probabilities, *outputs.tau):
        assert node.IsA("vtkMRMLScalarVolumeNode")
        assert np.allclose(geometry_of_volume(node).ijk_to_ras(), expected), f"{node.GetName()} is off the grid"

    rows = table_rows(outputs.raterTable)
    assert outputs.raterTable.GetName() == f"{raters.GetName()} raters"
    assert list(rows[0]) == list(RATER_COLUMNS) and [row["rater"] for row in rows] == names
    np.testing.assert_allclose([row["Dice to consensus"] for row in rows],
                               [metrics.dice(mask, consensus_mask) for mask in masks], rtol=1e-9)
    assert all(row["cluster"] == 1 for row in rows)
    if robust:
        np.testing.assert_allclose([row["mean tau"] for row in rows], fused.mean_tau, rtol=1e-6)
        np.testing.assert_allclose([row["relative tau"] for row in rows], fused.relative_tau, rtol=1e-6)
        assert all(row["nu"] > 0 for row in rows)
    assert outputs.summary.startswith(f"{len(ids)} raters fused ({method})")

    fractions = [fraction for fraction, _ in messages]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    return outputs
