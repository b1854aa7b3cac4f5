"""End-to-end scenario of the GPSSISampler module, shared by the pytest suite and the module's self-test
inside Slicer (``GPSSISamplerTest``): one function that runs the logic on real data and asserts on every
output.

Example
-------
>>> volume, reference = add_cropped_sample_case("mni152-ventricles")     # doctest: +SKIP
>>> outputs = check_gpssi_generation(GPSSISamplerLogic(), volume, reference)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from SegmentationUncertaintyLib import metrics
from SegmentationUncertaintyLogic.nodes import (add_segmentation, add_volume, geometry_of_volume, segment_ids,
                                                segment_mask, table_rows)
from SegmentationUncertaintyLogic.sample_scenes import cropped_sample_case

from .logic import CURVE_COLUMNS, GPSSISamplerLogic, SamplerOutputs


def add_cropped_sample_case(key: str = "mni152-ventricles", margin_mm: float = 5.0):
    """Add a sample case cropped around its reference (seconds, not minutes, of GPSSI work) to the scene.

    Returns
    -------
    (vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode)
    """
    title, cropped = cropped_sample_case(key, margin_mm)
    volume = add_volume(cropped.image, cropped.geometry, f"{title} cropped")
    return volume, add_segmentation(cropped.masks, volume, "Reference")


def reference_geometry(volume) -> str:
    """The segmentation "reference image geometry" string of ``volume``'s grid."""
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, volume.GetImageData().GetExtent())


def sample_masks(samples, volume) -> list[np.ndarray]:
    """The masks of all segments of a samples segmentation, read back on ``volume``'s grid."""
    return [segment_mask(samples, segment_id, volume) for segment_id in segment_ids(samples)]


def check_gpssi_generation(logic: GPSSISamplerLogic, volume, reference, targetDice: float = 0.9,
                           numberOfSamples: int = 12, seed: int = 3) -> SamplerOutputs:
    """Generate GPSSI samples around the first segment of ``reference`` and check every output.

    Checks node types, names, geometry and colours; the frequency map equals the mean of the sample
    segments read back and the entropy map is its binary entropy; the mean level function is negative
    exactly inside the reference; the table holds each sample's volume and Dice to the reference; the
    measured mean pairwise DICE equals that of the segments and is near the target; ω0 is the one the
    curve gives for the target and the chart marks it; progress runs from 0 to 1.
    """
    import slicer

    messages = []
    outputs = logic.generate(volume, reference, targetDice=targetDice, numberOfSamples=numberOfSamples, seed=seed,
                             progress=lambda fraction, message: messages.append((fraction, message)))
    segment_id = reference.GetSegmentation().GetNthSegmentID(0)
    name = reference.GetSegmentation().GetSegment(segment_id).GetName()
    reference_mask = segment_mask(reference, segment_id, volume)
    expected_geometry = geometry_of_volume(volume)

    kinds = {"samples": "vtkMRMLSegmentationNode", "frequency": "vtkMRMLScalarVolumeNode",
             "entropy": "vtkMRMLScalarVolumeNode", "meanLevel": "vtkMRMLScalarVolumeNode",
             "table": "vtkMRMLTableNode", "curveTable": "vtkMRMLTableNode", "curveChart": "vtkMRMLPlotChartNode"}
    for field_name, class_name in kinds.items():
        node = getattr(outputs, field_name)
        assert node is not None and node.IsA(class_name), f"{field_name} is not a {class_name}: {node}"
        assert node.GetScene() is slicer.mrmlScene, f"{field_name} is not in the scene"
        assert node.GetName().startswith(name), f"{field_name} '{node.GetName()}' is not named after '{name}'"
        assert node is not volume and node is not reference
    for node in (outputs.frequency, outputs.entropy, outputs.meanLevel):
        assert np.array_equal(geometry_of_volume(node).ijk_to_ras(), expected_geometry.ijk_to_ras()), \
            f"{node.GetName()} is not on the image's grid"
        assert slicer.util.arrayFromVolume(node).shape == reference_mask.shape

    samples = outputs.samples
    ids = segment_ids(samples)
    assert len(ids) == numberOfSamples
    names = [samples.GetSegmentation().GetSegment(i).GetName() for i in ids]
    assert names == [f"sample {i + 1:03d}" for i in range(numberOfSamples)], names
    colors = {tuple(round(c, 4) for c in samples.GetSegmentation().GetSegment(i).GetColor()) for i in ids}
    assert len(colors) == numberOfSamples, "sample colours are not distinct"
    assert samples.GetSegmentation().GetConversionParameter("Reference image geometry") == reference_geometry(volume)

    masks = sample_masks(samples, volume)
    stack = np.stack(masks)
    frequency = slicer.util.arrayFromVolume(outputs.frequency)
    np.testing.assert_allclose(frequency, stack.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(outputs.entropy), metrics.entropy_map(frequency, 2),
                               atol=1e-6)
    assert 0 < np.count_nonzero((frequency > 0) & (frequency < 1)), "all samples are identical"
    mean_level = slicer.util.arrayFromVolume(outputs.meanLevel)
    assert np.array_equal(mean_level < 0, reference_mask), "the mean level function is not negative inside"

    rows = table_rows(outputs.table)
    assert [row["sample"] for row in rows] == names
    np.testing.assert_allclose([row["volume (ml)"] for row in rows],
                               [metrics.volume_ml(m, expected_geometry.spacing) for m in masks], rtol=1e-9)
    np.testing.assert_allclose([row["Dice to reference"] for row in rows],
                               [metrics.dice(m, reference_mask) for m in masks], rtol=1e-9)

    assert abs(outputs.measuredDice - metrics.mean_pairwise_dice(stack)) < 1e-9
    assert abs(outputs.measuredDice - targetDice) < 0.03, f"measured DICE {outputs.measuredDice}, target {targetDice}"
    assert outputs.omega0 == logic.omega0ForDice(volume, reference, targetDice, seed=seed)
    assert outputs.parameters["source"] == "gpssi" and outputs.parameters["omega0"] == outputs.omega0

    chart = outputs.curveChart
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    for index in range(2):
        assert chart.GetNthPlotSeriesNode(index).GetTableNodeID() == outputs.curveTable.GetID()
    curve_rows = table_rows(outputs.curveTable)
    curve = logic.diceCurve(volume, reference, seed=seed)
    np.testing.assert_allclose([row[CURVE_COLUMNS[0]] for row in curve_rows], curve.omega0)
    assert curve_rows[0][CURVE_COLUMNS[2]] == outputs.omega0
    assert abs(curve_rows[0][CURVE_COLUMNS[3]] - targetDice) < 1e-6, "the chosen point is not at the target"

    fractions = [fraction for fraction, _ in messages]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    return outputs
