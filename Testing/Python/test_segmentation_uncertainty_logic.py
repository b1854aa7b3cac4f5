"""SegmentationUncertaintyLogic on a real slicer-core scene and the real MNI152 sample."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from mrml_checks import assert_unchanged, node_snapshot
from SegmentationUncertaintyLib import metrics
from SegmentationUncertaintyLogic.logic import SegmentationUncertaintyLogic, UncertaintyMaps
from SegmentationUncertaintyLogic.nodes import add_segmentation, add_volume, geometry_of_volume, segment_mask


@pytest.fixture
def case(slicer_scene):
    logic = SegmentationUncertaintyLogic()
    volume, reference = logic.loadSampleCase("mni152-ventricles")
    mask = segment_mask(reference, reference.GetSegmentation().GetNthSegmentID(0), volume)
    # Plausible "raters": the reference grown or shrunk by up to 2 voxels, and shifted by one voxel.
    samples = {
        "grown 1": ndi.binary_dilation(mask), "grown 2": ndi.binary_dilation(mask, iterations=2),
        "shrunk 1": ndi.binary_erosion(mask), "as drawn": mask, "shifted": np.roll(mask, 1, axis=2),
    }
    segmentation = add_segmentation(samples, volume, "Raters")
    return logic, volume, reference, segmentation, samples


def test_maps_and_metrics_of_samples(case):
    import slicer

    logic, volume, reference, segmentation, samples = case
    before = [node_snapshot(n, volume) for n in (volume, reference, segmentation)]
    messages = []
    maps = logic.computeUncertaintyMaps(volume, segmentation, reference=reference,
                                        progress=lambda f, m: messages.append((f, m)))
    for snapshot, node in zip(before, (volume, reference, segmentation)):
        assert_unchanged(snapshot, node, volume)

    stack = np.stack(list(samples.values()))
    frequency = slicer.util.arrayFromVolume(maps.frequency)
    np.testing.assert_allclose(frequency, stack.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(maps.entropy), metrics.entropy_map(frequency), atol=1e-6)
    # For hard masks the γ-map is a function of the frequency: 2·(−log ε)·f(1 − f).
    gamma = slicer.util.arrayFromVolume(maps.gamma)
    assert gamma[frequency == 0].max() == 0 and gamma[frequency == 1].max() == 0
    ratio = gamma[(frequency > 0) & (frequency < 1)] / (frequency * (1 - frequency))[(frequency > 0) & (frequency < 1)]
    assert np.ptp(ratio) < 1e-3 * ratio.mean()

    for node in (maps.frequency, maps.entropy, maps.gamma):
        assert node.GetName().startswith("Raters ")
        geometry, expected = geometry_of_volume(node), geometry_of_volume(volume)
        assert geometry.spacing == expected.spacing and geometry.origin == expected.origin
    table = maps.metrics.GetTable()
    values = {table.GetValue(r, 0).ToString(): table.GetValue(r, 1).ToDouble() for r in range(table.GetNumberOfRows())}
    assert values["number of samples"] == 5
    assert values["mean pairwise Dice"] == pytest.approx(metrics.mean_pairwise_dice(stack))
    assert 0.5 < values["mean Dice to reference"] < 1.0
    assert values["mean HD95 to reference (mm)"] > 0
    assert messages[0][0] == 0.0 and messages[-1][0] == 1.0
    assert all(a[0] <= b[0] for a, b in zip(messages, messages[1:]))


def test_output_nodes_are_reused_when_passed(case):
    import slicer

    logic, volume, _reference, segmentation, _samples = case
    first = logic.computeUncertaintyMaps(volume, segmentation)
    count = slicer.mrmlScene.GetNumberOfNodes()
    second = logic.computeUncertaintyMaps(volume, segmentation, outputs=first)
    assert second.entropy is first.entropy and second.metrics is first.metrics
    assert slicer.mrmlScene.GetNumberOfNodes() == count


def test_probability_volumes_as_input(slicer_scene):
    from SegmentationUncertaintyLib.geometry import Geometry

    logic = SegmentationUncertaintyLogic()
    rng = np.random.default_rng(3)
    geometry = Geometry(spacing=(2.0, 1.0, 1.0))
    image = add_volume(rng.normal(size=(6, 10, 12)).astype(np.float32), geometry, "image")
    probs = [np.clip(rng.uniform(size=(6, 10, 12)), 0, 1).astype(np.float32) for _ in range(3)]
    nodes = [add_volume(p, geometry, f"p{i}") for i, p in enumerate(probs)]
    maps = logic.computeUncertaintyMaps(image, nodes)
    import slicer

    np.testing.assert_allclose(slicer.util.arrayFromVolume(maps.frequency), np.mean(probs, axis=0), atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(maps.gamma), metrics.gamma_map(np.stack(probs)), atol=1e-5)


def test_bad_inputs_raise_before_work_and_leave_the_scene(case):
    import slicer

    logic, volume, reference, segmentation, _samples = case
    empty = add_segmentation({"nothing": np.zeros(slicer.util.arrayFromVolume(volume).shape, bool)}, volume, "Empty")
    count = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="image volume is missing"):
        logic.computeUncertaintyMaps(None, segmentation)
    with pytest.raises(ValueError, match="at least two segments"):
        logic.computeUncertaintyMaps(volume, reference)
    with pytest.raises(ValueError, match="no segment"):
        logic.computeUncertaintyMaps(volume, segmentation, segmentIds=["not there", "nor this"])
    with pytest.raises(ValueError, match="reference segment is empty"):
        logic.computeUncertaintyMaps(volume, segmentation, reference=empty)
    with pytest.raises(ValueError, match="at least two probability volumes"):
        logic.computeUncertaintyMaps(volume, [volume])
    assert slicer.mrmlScene.GetNumberOfNodes() == count


def test_overlay_display(slicer_scene):
    import slicer

    from SegmentationUncertaintyLib.geometry import Geometry

    composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    values = np.zeros((4, 8, 8), np.float32)
    values[1:3, 2:6, 2:6] = np.linspace(0.2, 1.0, 32).reshape(2, 4, 4)
    node = add_volume(values, Geometry((1.0, 1.0, 1.0)), "entropy")
    logic = SegmentationUncertaintyLogic()
    display = logic.showOverlay(node, colorTable="Iron", opacity=0.4)
    assert composite.GetForegroundVolumeID() == node.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeIron"
    assert display.GetApplyThreshold() and 0 < display.GetLowerThreshold() <= 0.2  # zero hidden, data shown
    assert display.GetWindow() == pytest.approx(0.8, rel=1e-3) and display.GetLevel() == pytest.approx(0.6, rel=1e-3)
    legends = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())
               if node.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode")]
    assert len(legends) == 1 and legends[0].GetTitleText() == "entropy"
    logic.showOverlay(node)  # showing again keeps one legend
    assert sum(node.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode")
               for i in range(node.GetNumberOfDisplayNodes())) == 1
    with pytest.raises(ValueError, match="unknown colour table"):
        logic.showOverlay(node, colorTable="Nope")
    # another map: its legend replaces the first one's on screen; hiding the overlay hides its legend
    other = add_volume(values * 2, Geometry((1.0, 1.0, 1.0)), "gamma")
    logic.showOverlay(other)
    visible = [n.GetDisplayableNode().GetName() for n in slicer.util.getNodesByClass("vtkMRMLColorLegendDisplayNode")
               if n.GetVisibility()]
    assert visible == ["gamma"]
    logic.hideOverlay()
    assert composite.GetForegroundVolumeID() is None
    assert not any(n.GetVisibility() for n in slicer.util.getNodesByClass("vtkMRMLColorLegendDisplayNode"))
