"""Helpers for logic tests: snapshots proving that input nodes are left as they were."""

from __future__ import annotations

import numpy as np


def node_snapshot(node, reference_volume=None):
    """Modification time and a copy of the data of a volume or segmentation node."""
    import slicer

    from SegmentationUncertaintyLogic.nodes import segment_ids, segment_mask

    if node.IsA("vtkMRMLSegmentationNode"):
        ids = segment_ids(node)
        segmentation = node.GetSegmentation()
        return (node.GetMTime(), tuple(ids), tuple(segmentation.GetSegment(i).GetName() for i in ids),
                tuple(segment_mask(node, i, reference_volume).tobytes() for i in ids))
    return node.GetMTime(), np.array(slicer.util.arrayFromVolume(node), copy=True).tobytes()


def assert_unchanged(before, node, reference_volume=None):
    after = node_snapshot(node, reference_volume)
    assert after[1:] == before[1:], f"the data of input node '{node.GetName()}' changed"
    assert after[0] == before[0], f"input node '{node.GetName()}' was modified (MTime changed)"
