"""The slicer-core scene fixture: volumes and segmentations on a real MRML scene, .seg.nrrd on disk."""

import numpy as np
import pytest

from SegmentationUncertaintyLib.geometry import Geometry
from SegmentationUncertaintyLogic.nodes import (add_segmentation, add_volume, geometry_of_volume, load_segmentation,
                                                save_segmentation, segment_ids, segment_mask)

ROTATION = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about S: not axis-aligned with RAS


@pytest.fixture
def volume(slicer_scene):
    rng = np.random.default_rng(0)
    geometry = Geometry(spacing=(2.5, 0.8, 0.6), origin=(-10.0, 20.0, 5.0), directions=ROTATION)
    return add_volume(rng.normal(size=(12, 20, 16)).astype(np.float32), geometry, "image")


def test_volume_geometry_round_trip(volume):
    geometry = geometry_of_volume(volume)
    assert geometry.spacing == pytest.approx((2.5, 0.8, 0.6))
    assert geometry.origin == pytest.approx((-10.0, 20.0, 5.0))
    np.testing.assert_allclose(geometry.directions, ROTATION, atol=1e-12)


def test_mask_round_trip_through_segmentation_node_and_seg_nrrd(volume, slicer_scene, tmp_path):
    import slicer

    zz, yy, xx = np.mgrid[:12, :20, :16]
    ball = (((zz - 6) * 2.5) ** 2 + ((yy - 9) * 0.8) ** 2 + ((xx - 7) * 0.6) ** 2) < 5.0 ** 2
    box = np.zeros_like(ball)
    box[2:5, 3:15, 9:14] = True
    segmentation = add_segmentation({"ball": ball, "box": box}, volume, "raters")
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    ids = segment_ids(segmentation)
    np.testing.assert_array_equal(segment_mask(segmentation, ids[0], volume), ball)
    np.testing.assert_array_equal(segment_mask(segmentation, ids[1], volume), box)

    path = tmp_path / "raters.seg.nrrd"
    save_segmentation(segmentation, str(path))
    assert path.stat().st_size > 0
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    loaded = load_segmentation(str(path))
    assert slicer.mrmlScene.GetNumberOfNodes() > nodes_before
    loaded_ids = segment_ids(loaded)
    names = [loaded.GetSegmentation().GetSegment(i).GetName() for i in loaded_ids]
    assert names == ["ball", "box"]
    np.testing.assert_array_equal(segment_mask(loaded, loaded_ids[0], volume), ball)
    np.testing.assert_array_equal(segment_mask(loaded, loaded_ids[1], volume), box)


def test_missing_segmentation_file_is_a_clear_error(slicer_scene, tmp_path):
    import slicer

    count = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(OSError, match="no segmentation file"):
        load_segmentation(str(tmp_path / "absent.seg.nrrd"))
    assert slicer.mrmlScene.GetNumberOfNodes() == count


def test_each_test_gets_a_fresh_scene(slicer_scene):
    import slicer

    assert slicer.mrmlScene is slicer_scene.scene
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
