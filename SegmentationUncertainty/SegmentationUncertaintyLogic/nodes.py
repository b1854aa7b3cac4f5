"""Arrays in and out of MRML volume and segmentation nodes, with the core's geometry convention.

Arrays are ``[k, j, i]`` (``slicer.util.arrayFromVolume``'s order); :class:`Geometry` carries spacing
per array axis and the RAS origin and directions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from SegmentationUncertaintyLib.colors import SEGMENT_COLORS, distinct_colors  # noqa: F401 (re-exported)
from SegmentationUncertaintyLib.geometry import Geometry


def geometry_of_volume(volume_node) -> Geometry:
    """:class:`Geometry` of a volume node (spacing, origin and IJK-to-RAS directions)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return Geometry.from_ijk_to_ras(np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]))


def add_volume(array: np.ndarray, geometry: Geometry, name: str, node_class: str = "vtkMRMLScalarVolumeNode"):
    """Add a new volume node holding a copy of ``array`` (shape (Z, Y, X)) placed by ``geometry``."""
    import slicer

    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(array), geometry.ijk_to_ras(), name, node_class)
    return node


def add_segmentation(masks: Mapping[str, np.ndarray], reference_volume, name: str,
                     colors: Sequence[Sequence[float]] | None = None):
    """Add a new segmentation node with one segment per named mask, on ``reference_volume``'s grid.

    Parameters
    ----------
    masks : mapping of str to ndarray of bool, shape (Z, Y, X)
        Segment names to masks on the reference volume's voxel grid.
    reference_volume : vtkMRMLScalarVolumeNode
        Gives the geometry; the segmentation's reference image geometry is set from it.
    colors : sequence of RGB triples in [0, 1], optional
        One per segment; default :data:`SEGMENT_COLORS` in turn.
    """
    node = new_or_cleared_segmentation(reference_volume, name)
    for index, (segment_name, mask) in enumerate(masks.items()):
        add_segment(node, segment_name, mask, reference_volume, colors[index] if colors is not None else None)
    return node


def segment_mask(segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    """Boolean mask (Z, Y, X) of one segment, resampled onto ``reference_volume``'s grid."""
    import slicer

    return np.asarray(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume)) > 0


def segment_ids(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def save_segmentation(segmentation_node, path: str) -> None:
    """Write a ``.seg.nrrd`` file that desktop Slicer opens (raises ``OSError`` on failure)."""
    import slicer

    storage = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.WriteData(segmentation_node):
            raise OSError(f"could not write segmentation to {path}")
    finally:
        storage.UnRegister(None)


def load_segmentation(path: str, name: str | None = None):
    """Read a ``.seg.nrrd`` file into a new segmentation node (raises ``OSError`` on failure)."""
    import os

    import slicer

    if not os.path.exists(path):
        raise OSError(f"no segmentation file at {path}")
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or os.path.basename(path).split(".")[0])
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        slicer.mrmlScene.RemoveNode(storage)
        slicer.mrmlScene.RemoveNode(node)
        raise OSError(f"could not read a segmentation from {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node


def require_node(node, class_name: str, what: str):
    """Raise a ``ValueError`` naming ``what`` unless ``node`` is a ``class_name`` in the scene."""
    if node is None:
        raise ValueError(f"{what} is missing: select one")
    if not node.IsA(class_name):
        raise ValueError(f"{what} must be a {class_name}, got {node.GetClassName()} '{node.GetName()}'")
    if node.GetScene() is None:
        raise ValueError(f"{what} '{node.GetName()}' is not in a scene")
    return node


def require_segment(segmentation_node, segment_id: str | None, what: str) -> str:
    """Check that ``segment_id`` (default: the first segment) exists in ``segmentation_node``; return it."""
    require_node(segmentation_node, "vtkMRMLSegmentationNode", what)
    ids = segment_ids(segmentation_node)
    if not ids:
        raise ValueError(f"{what} '{segmentation_node.GetName()}' has no segment: draw one first")
    if segment_id is None:
        return ids[0]
    if segment_id not in ids:
        raise ValueError(f"{what} '{segmentation_node.GetName()}' has no segment '{segment_id}'; it has {ids}")
    return segment_id


def update_or_add_volume(array: np.ndarray, reference_volume, name: str, node=None):
    """Write ``array`` into ``node`` (a volume the caller passed as output) or into a new volume node,
    with ``reference_volume``'s geometry."""
    import slicer

    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.CopyOrientation(reference_volume)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


#: Node attribute of a volume of structure probabilities in [0, 1] made by the modules: ``"samples"`` for a
#: sampler's frequency map (a probabilistic rater: e.g. a network's), ``"consensus"`` for a fusion's consensus.
PROBABILITY_MAP_ATTRIBUTE = "SegmentationUncertainty.ProbabilityMap"


def mark_probability_map(volume_node, origin: str):
    """Mark ``volume_node`` as a probability map of ``origin`` (:data:`PROBABILITY_MAP_ATTRIBUTE`); returns it."""
    volume_node.SetAttribute(PROBABILITY_MAP_ATTRIBUTE, origin)
    return volume_node


def probability_maps(scene) -> list:
    """The scene's volumes marked by :func:`mark_probability_map`, in the order they were added."""
    nodes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
             for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    return [node for node in nodes if node.GetAttribute(PROBABILITY_MAP_ATTRIBUTE)]


def write_table(columns: Mapping[str, Sequence], name: str, node=None):
    """Fill a table node (new, or the one passed) with named columns of numbers or strings."""
    import slicer
    import vtk

    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    table.Initialize()
    for column_name, values in columns.items():
        values = list(values)
        if values and all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
            array = vtk.vtkDoubleArray()
        else:
            array = vtk.vtkStringArray()
            values = [str(v) for v in values]
        array.SetName(column_name)
        for value in values:
            array.InsertNextValue(float(value) if isinstance(array, vtk.vtkDoubleArray) else value)
        table.AddColumn(array)
    node.Modified()
    return node



def save_volume(volume_node, path: str) -> None:
    """Write a volume node to ``path`` (``.nrrd``, ``.nii.gz``, ...; raises ``OSError`` on failure)."""
    import slicer

    storage = slicer.mrmlScene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(volume_node):
            raise OSError(f"could not write volume '{volume_node.GetName()}' to {path}")
    finally:
        storage.UnRegister(None)


def table_rows(table_node) -> list[dict[str, object]]:
    """Rows of a table node as dictionaries (numbers as float, others as str)."""
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, name in enumerate(names):
            value = table.GetValue(r, c)
            row[name] = value.ToDouble() if value.IsNumeric() else value.ToString()
        rows.append(row)
    return rows


def save_table_csv(table_node, path: str) -> None:
    """Write a table node as CSV (header row, then one line per row)."""
    import csv

    rows = table_rows(table_node)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def add_segment(segmentation_node, name: str, mask: np.ndarray, reference_volume,
                color: Sequence[float] | None = None) -> str:
    """Append one segment holding ``mask`` (on ``reference_volume``'s grid); return its ID."""
    import slicer

    segmentation = segmentation_node.GetSegmentation()
    if color is None:
        color = SEGMENT_COLORS[segmentation.GetNumberOfSegments() % len(SEGMENT_COLORS)]
    segment_id = segmentation.AddEmptySegment(name, name, list(color))
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.asarray(mask, dtype=np.uint8), segmentation_node, segment_id,
                                                     reference_volume)
    return segment_id


def new_or_cleared_segmentation(reference_volume, name: str, node=None):
    """A segmentation node on ``reference_volume``'s geometry: ``node`` emptied, or a new one."""
    import slicer

    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
    else:
        node.GetSegmentation().RemoveAllSegments()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    return node


def require_volume(volume_node, what: str) -> tuple[int, ...]:
    """Check that ``volume_node`` is a scalar volume in the scene holding voxels; return its array shape
    ``(Z, Y, X)`` (``slicer.util.arrayFromVolume``'s order)."""
    require_node(volume_node, "vtkMRMLScalarVolumeNode", what)
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise ValueError(f"{what} '{volume_node.GetName()}' holds no voxels: load or compute it first")
    return tuple(int(d) for d in image.GetDimensions()[::-1])


class Cancelled(Exception):
    """A logic call's ``progress`` callback returned ``False``; the nodes the call had created were removed."""


class LogicRun:
    """Progress reports and new output nodes of one logic call.

    :meth:`report` forwards ``(fraction, message)`` to the caller's ``progress`` callback and raises
    :class:`Cancelled` when it returns ``False`` (not merely a falsy value); :meth:`output` fills an output
    field, creating a node only when the caller passed none. Used as a context manager, it removes the
    nodes it created when the call fails or is cancelled, so that a failed call leaves no new node behind
    (nodes the caller passed are kept, possibly partly rewritten).

    Example
    -------
    >>> with LogicRun(progress) as run:                                            # doctest: +SKIP
    ...     run.report(0.5, "half way")
    ...     run.output(outputs, "entropy", lambda node: update_or_add_volume(a, ref, "entropy", node))
    """

    def __init__(self, progress=None) -> None:
        self.progress = progress
        self.created: list = []

    def report(self, fraction: float, message: str) -> None:
        if self.progress is not None and self.progress(fraction, message) is False:
            raise Cancelled(f"cancelled at: {message}")

    def output(self, outputs, name: str, make):
        """Set ``outputs.<name>`` to ``make(current node or None)``; remember the node if it is new."""
        existing = getattr(outputs, name)
        node = make(existing)
        if existing is None:
            self.created.append(node)
        setattr(outputs, name, node)
        return node

    def created_node(self, node):
        """Remember a node the call created outside :meth:`output` (removed if the call fails)."""
        self.created.append(node)
        return node

    def __enter__(self) -> "LogicRun":
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is not None:
            import slicer

            for node in reversed(self.created):
                if node is not None and node.GetScene() is not None:
                    slicer.mrmlScene.RemoveNode(node)
        return False


def reference_grid_volume(segmentation_node):
    """A scene-less volume node on ``segmentation_node``'s reference image geometry (the grid it was drawn
    on), to read its segments as arrays and place outputs when no image volume is given."""
    import slicer
    import vtk

    geometry = segmentation_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    matrix, extent = vtk.vtkMatrix4x4(), [0] * 6
    if not geometry or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, matrix, extent):
        raise ValueError(f"segmentation '{segmentation_node.GetName()}' has no reference image geometry: "
                         "select the image its segments were drawn on")
    dimensions = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    if min(dimensions) < 1:
        raise ValueError(f"segmentation '{segmentation_node.GetName()}' has an empty reference image geometry: "
                         "select the image its segments were drawn on")
    # Move the origin to the extent's first voxel so that the volume's IJK start at 0.
    corner = matrix.MultiplyPoint([extent[0], extent[2], extent[4], 1.0])
    for row in range(3):
        matrix.SetElement(row, 3, corner[row])
    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetName(f"{segmentation_node.GetName()} grid")
    volume.SetIJKToRASMatrix(matrix)
    image = vtk.vtkImageData()
    image.SetDimensions(dimensions)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    volume.SetAndObserveImageData(image)
    return volume


def require_output_nodes(outputs, classes: Mapping[str, str], inputs: Sequence) -> None:
    """Check the output nodes a caller passed: each field of ``outputs`` named in ``classes`` (a node, a list
    of nodes, or ``None``) holds nodes of that class, in the scene, none of them one of the ``inputs``
    (inputs are never overwritten)."""
    for name, class_name in classes.items():
        value = getattr(outputs, name)
        for node in (value if isinstance(value, (list, tuple)) else [value]):
            if node is None:
                continue
            require_node(node, class_name, f"output '{name}'")
            if any(node is other for other in inputs):
                raise ValueError(f"output '{name}' is the input node '{node.GetName()}': inputs are never "
                                 "overwritten, pick another node or none (a new one is created)")
