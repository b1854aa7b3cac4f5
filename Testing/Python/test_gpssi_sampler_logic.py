"""GPSSISamplerLogic on a real slicer-core scene with the real MNI152 ventricles and Colin27 hippocampus,
cropped around the structure so that every test runs in seconds.

Tests whose point is not the image-driven mean use the Euclidean one (``EUCLIDEAN``, γ = 0), which is
cheaper; the end-to-end scenario runs the geodesic mean on both structures."""

import numpy as np
import pytest

from GPSSISamplerLib.logic import GPSSISamplerLogic, SamplerOutputs, SamplingCancelled
from GPSSISamplerLib.testing import add_cropped_sample_case, check_gpssi_generation, sample_masks
from mrml_checks import assert_unchanged, node_snapshot
from SegmentationUncertaintyLib.geodesic import signed_euclidean_distance
from SegmentationUncertaintyLogic.nodes import (add_segmentation, add_volume, geometry_of_volume, segment_mask,
                                                table_rows)

EUCLIDEAN = {"gamma": 0.0}


@pytest.fixture
def ventricles(slicer_scene):
    """Cropped MNI152 T1 and its lateral-ventricles reference, in a fresh scene."""
    return add_cropped_sample_case("mni152-ventricles", margin_mm=5.0)


@pytest.fixture
def hippocampus(slicer_scene):
    """Cropped Colin27 T1 and its left-hippocampus reference (AAL, drawn by hand), in a fresh scene."""
    return add_cropped_sample_case("colin27-hippocampus", margin_mm=6.0)


@pytest.mark.parametrize("key", ["colin27-hippocampus", "mni152-ventricles"])
def test_gpssi_end_to_end_leaves_inputs_unchanged(slicer_scene, key):
    volume, reference = add_cropped_sample_case(key, margin_mm=5.0)
    before = [node_snapshot(node, volume) for node in (volume, reference)]
    check_gpssi_generation(GPSSISamplerLogic(), volume, reference, targetDice=0.9, numberOfSamples=12, seed=3)
    for snapshot, node in zip(before, (volume, reference)):
        assert_unchanged(snapshot, node, volume)


def test_same_seed_gives_same_samples_and_another_seed_others(ventricles):
    volume, reference = ventricles
    logic = GPSSISamplerLogic()
    first = logic.generate(volume, reference, omega0=4.0, numberOfSamples=4, seed=7, **EUCLIDEAN)
    again = GPSSISamplerLogic().generate(volume, reference, omega0=4.0, numberOfSamples=4, seed=7, **EUCLIDEAN)
    other = logic.generate(volume, reference, omega0=4.0, numberOfSamples=4, seed=8, **EUCLIDEAN)
    a, b, c = (np.stack(sample_masks(out.samples, volume)) for out in (first, again, other))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert first.samples is not again.samples  # no outputs passed: new nodes each time


def test_output_nodes_are_reused_only_when_passed(ventricles):
    import slicer

    volume, reference = ventricles
    logic = GPSSISamplerLogic()
    first = logic.generate(volume, reference, targetDice=0.9, numberOfSamples=6, seed=1, **EUCLIDEAN)
    nodes = dict(vars(first))
    count = slicer.mrmlScene.GetNumberOfNodes()
    second = logic.generate(volume, reference, omega0=3 * first.omega0, numberOfSamples=3, seed=2, outputs=first,
                            **EUCLIDEAN)
    assert second is first
    for name in ("samples", "frequency", "entropy", "meanLevel", "table", "curveTable", "curveChart"):
        assert getattr(second, name) is nodes[name], name
    assert slicer.mrmlScene.GetNumberOfNodes() == count
    assert second.samples.GetSegmentation().GetNumberOfSegments() == 3
    assert len(table_rows(second.table)) == 3
    assert table_rows(second.curveTable)[0]["chosen omega0 (mm2)"] == pytest.approx(3 * nodes["omega0"])
    np.testing.assert_allclose(slicer.util.arrayFromVolume(second.frequency),
                               np.mean(sample_masks(second.samples, volume), axis=0), atol=1e-6)

    # Only the nodes given are reused: the others are created.
    partial = logic.generate(volume, reference, omega0=2.0, numberOfSamples=2,
                             outputs=SamplerOutputs(frequency=first.frequency), **EUCLIDEAN)
    assert partial.frequency is first.frequency and partial.samples is not first.samples


def test_dice_curve_and_calibration(ventricles):
    import slicer

    volume, reference = ventricles
    logic = GPSSISamplerLogic()
    curve = logic.diceCurve(volume, reference, seed=0, **EUCLIDEAN)
    assert np.all(np.diff(curve.omega0) > 0)
    assert curve.dice[0] > 0.99 and curve.dice[-1] < curve.dice[0] - 0.1
    omega_high, omega_low = (logic.omega0ForDice(volume, reference, d, **EUCLIDEAN) for d in (0.95, 0.8))
    assert 0 < omega_high < omega_low
    assert logic.model(volume, reference, **EUCLIDEAN) is logic.model(volume, reference, **EUCLIDEAN)  # cached
    assert logic.isModelReady(volume, reference, **EUCLIDEAN) and not logic.isModelReady(volume, reference)

    count = slicer.mrmlScene.GetNumberOfNodes()
    plotted = logic.plotDiceCurve(volume, reference, 0.95, **EUCLIDEAN)
    assert plotted.omega0 == pytest.approx(logic.omega0ForDice(volume, reference, 0.95, **EUCLIDEAN))
    assert plotted.curveChart.IsA("vtkMRMLPlotChartNode") and plotted.curveChart.GetNumberOfPlotSeriesNodes() == 2
    # curve table + chart + two series
    assert slicer.mrmlScene.GetNumberOfNodes() == count + 4
    again = logic.plotDiceCurve(volume, reference, omega0=omega_low, outputs=plotted, **EUCLIDEAN)
    assert again.curveChart is plotted.curveChart and slicer.mrmlScene.GetNumberOfNodes() == count + 4
    assert table_rows(again.curveTable)[0]["chosen DICE"] == pytest.approx(0.8, abs=1e-6)


def test_editing_the_reference_rebuilds_the_model(ventricles):
    import slicer

    volume, reference = ventricles
    logic = GPSSISamplerLogic()
    model = logic.model(volume, reference, source="logodds")
    segment_id = reference.GetSegmentation().GetNthSegmentID(0)
    grown = np.roll(segment_mask(reference, segment_id, volume), 1, axis=0)
    slicer.util.updateSegmentBinaryLabelmapFromArray(grown.astype(np.uint8), reference, segment_id, volume)
    rebuilt = logic.model(volume, reference, source="logodds")
    assert rebuilt is not model and np.array_equal(rebuilt.reference, grown)


def test_advanced_parameters_on_colin27_hippocampus(hippocampus):
    import slicer

    volume, reference = hippocampus
    logic = GPSSISamplerLogic()
    mask = segment_mask(reference, reference.GetSegmentation().GetNthSegmentID(0), volume)
    spacing = geometry_of_volume(volume).spacing
    # γ = 0 turns the geodesic mean into the Euclidean signed distance; ω1 and ω0 are used as given.
    out = logic.generate(volume, reference, gamma=0.0, omega1=6.0, omega0=3.0, numberOfSamples=3, seed=0)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(out.meanLevel), signed_euclidean_distance(mask, spacing),
                               atol=1e-4)
    assert out.parameters["gamma"] == 0.0 and out.parameters["omega1_mm"] == 6.0
    assert out.omega0 == 3.0 and table_rows(out.curveTable)[0]["chosen omega0 (mm2)"] == 3.0
    # The image-driven mean (default γ) differs, and is anchored at strong edges: |μ| grows faster.
    geodesic = logic.generate(volume, reference, omega0=3.0, numberOfSamples=2, seed=0)
    mu = slicer.util.arrayFromVolume(geodesic.meanLevel)
    assert np.array_equal(mu < 0, mask)
    assert geodesic.parameters["gamma"] > 0
    assert np.mean(np.abs(mu)) > 1.2 * np.mean(np.abs(slicer.util.arrayFromVolume(out.meanLevel)))


@pytest.mark.parametrize("source", ["logodds", "staple-icm"])
def test_baseline_sources(hippocampus, source):
    import slicer

    volume, reference = hippocampus
    before = [node_snapshot(node, volume) for node in (volume, reference)]
    out = GPSSISamplerLogic().generate(volume, reference, source=source, scale=2.0, numberOfSamples=5, seed=4)
    masks = sample_masks(out.samples, volume)
    assert len(masks) == 5 and out.samples.GetName() == f"left hippocampus {source} samples"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(out.frequency), np.mean(masks, axis=0), atol=1e-6)
    assert out.meanLevel is None and out.curveChart is None and out.omega0 is None
    assert out.parameters == {**out.parameters, "source": source, "scale_mm": 2.0}
    assert 0.3 < out.measuredDice < 1.0
    for snapshot, node in zip(before, (volume, reference)):
        assert_unchanged(snapshot, node, volume)


@pytest.mark.parametrize("source", ["ssn", "mc-dropout"])
def test_network_sources_give_samples_in_the_same_form(ventricles, source):
    import slicer

    volume, reference = ventricles
    before = [node_snapshot(node, volume) for node in (volume, reference)]
    logic = GPSSISamplerLogic()
    out = logic.generate(volume, reference, source=source, numberOfSamples=4, seed=2)
    masks = sample_masks(out.samples, volume)
    assert len(masks) == 4 and out.parameters["source"] == source
    np.testing.assert_allclose(slicer.util.arrayFromVolume(out.frequency), np.mean(masks, axis=0), atol=1e-6)
    dices = [row["Dice to reference"] for row in table_rows(out.table)]
    assert min(dices) > 0.6, dices  # the shipped networks find the ventricles around the reference
    assert 0.6 < out.measuredDice < 1.0 and len({m.tobytes() for m in masks}) > 1
    again = logic.generate(volume, reference, source=source, numberOfSamples=4, seed=2)
    np.testing.assert_array_equal(sample_masks(again.samples, volume), masks)
    for snapshot, node in zip(before, (volume, reference)):
        assert_unchanged(snapshot, node, volume)


def test_cancel_removes_the_nodes_it_created(ventricles):
    import slicer

    volume, reference = ventricles
    logic = GPSSISamplerLogic()
    count = slicer.mrmlScene.GetNumberOfNodes()
    stop_at_sample_3 = lambda _fraction, message: message != "Sample 3/6"  # noqa: E731
    stop_at_the_end = lambda fraction, _message: fraction < 1.0  # noqa: E731  (after every node was written)
    for stop in (stop_at_sample_3, stop_at_the_end):
        with pytest.raises(SamplingCancelled):
            logic.generate(volume, reference, targetDice=0.9, numberOfSamples=6, progress=stop, **EUCLIDEAN)
        assert slicer.mrmlScene.GetNumberOfNodes() == count
    # Nodes the caller passed survive a cancel.
    kept = logic.generate(volume, reference, omega0=2.0, numberOfSamples=2, **EUCLIDEAN)
    count = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(SamplingCancelled):
        logic.generate(volume, reference, omega0=2.0, numberOfSamples=6, progress=stop_at_sample_3,
                       outputs=SamplerOutputs(samples=kept.samples), **EUCLIDEAN)
    assert slicer.mrmlScene.GetNumberOfNodes() == count and kept.samples.GetScene() is not None


def test_bad_inputs_raise_before_work_and_leave_the_scene(ventricles):
    import slicer

    volume, reference = ventricles
    shape = slicer.util.arrayFromVolume(volume).shape
    empty = add_segmentation({"nothing": np.zeros(shape, bool)}, volume, "Empty")
    elsewhere = add_volume(np.zeros((8, 8, 8), np.float32), geometry_of_volume(volume).__class__(
        spacing=(1.0, 1.0, 1.0), origin=(900.0, 900.0, 900.0)), "Elsewhere")
    no_voxels = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "No voxels")
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "A table")
    logic = GPSSISamplerLogic()
    count = slicer.mrmlScene.GetNumberOfNodes()
    cases = [
        ({"imageVolume": None}, "input volume is missing"),
        ({"imageVolume": reference}, "must be a vtkMRMLScalarVolumeNode"),
        ({"imageVolume": no_voxels}, "holds no voxels"),
        ({"referenceSegmentation": None}, "reference segmentation is missing"),
        ({"referenceSegmentId": "not there"}, "has no segment 'not there'"),
        ({"referenceSegmentation": empty}, "is empty on the grid"),
        ({"imageVolume": elsewhere}, "is empty on the grid of 'Elsewhere'"),  # geometry mismatch
        ({"source": "magic"}, "unknown source"),
        ({"numberOfSamples": 1}, "at least 2"),
        ({"numberOfSamples": 2.5}, "at least 2"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"targetDice": 1.2}, "strictly between 0 and 1"),
        ({"targetDice": None}, "give a target DICE or an ω0"),
        ({"omega0": -1.0}, "ω0 must be a positive number"),
        ({"omega1": -3.0}, "omega1"),
        ({"h": -1.0}, "h must be"),
        ({"source": "logodds", "scale": 0.0}, "scale must be a positive"),
        ({"outputs": SamplerOutputs(samples=reference)}, "is the input node"),
        ({"outputs": SamplerOutputs(frequency=table)}, "must be a vtkMRMLScalarVolumeNode"),
        ({"outputs": {"samples": None}}, "outputs must be a SamplerOutputs"),
    ]
    for changes, message in cases:
        arguments = {"imageVolume": volume, "referenceSegmentation": reference, "numberOfSamples": 3,
                     "omega0": None, "targetDice": 0.9, **EUCLIDEAN, **changes}
        with pytest.raises(ValueError, match=message):
            logic.generate(**arguments)
        assert slicer.mrmlScene.GetNumberOfNodes() == count, f"{changes} left nodes behind"
    with pytest.raises(ValueError, match="give a target DICE or an ω0"):
        logic.plotDiceCurve(volume, reference, **EUCLIDEAN)
    assert slicer.mrmlScene.GetNumberOfNodes() == count
