"""Pictures of slices (:func:`slice_view`) are oriented as Slicer's own slice views, whatever order a file
stores its voxels in; the reference orientations are read from slicer-core's slice node."""

from __future__ import annotations

import numpy as np
import pytest

from SegmentationUncertaintyLib.geometry import Geometry, slice_view


def slicer_screen_axes(orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """RAS directions of the screen's rightward and upward axes in Slicer's ``orientation`` view."""
    import vtk
    from slicer import vtkMRMLSliceNode

    matrix = vtk.vtkMatrix3x3()
    getattr(vtkMRMLSliceNode, f"Get{orientation}SliceToRASMatrix")(matrix)
    columns = np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])
    return columns[:, 0], columns[:, 1]


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    out = np.eye(3)
    out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
    return out


# index axes (i, j, k) -> RAS: RAS-ordered NIfTI, LPS-ordered DICOM/NRRD, a sagittal stack (k runs right-left),
# a coronal stack (k runs anterior-posterior, j inferior) and an oblique axial grid
GEOMETRIES = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "sagittal stack": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "coronal stack": np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "oblique": rotation(2, 12.0) @ rotation(0, 9.0) @ np.diag([-1.0, -1.0, 1.0]),
}


def picture_steps(geometry: Geometry, shape, view, index: int) -> tuple[np.ndarray, np.ndarray]:
    """RAS unit vectors of one step right and one step up in the picture of slice ``index``."""
    coded = np.arange(int(np.prod(shape))).reshape(shape)
    picture = view.image(coded, index)

    def ras(code):
        k, j, i = np.unravel_index(int(code), shape)
        return (geometry.ijk_to_ras() @ np.array([i, j, k, 1.0]))[:3]

    right = ras(picture[1, 1]) - ras(picture[1, 0])
    up = ras(picture[0, 0]) - ras(picture[1, 0])
    return right / np.linalg.norm(right), up / np.linalg.norm(up)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_slices_are_drawn_as_slicer_draws_them(name):
    geometry = Geometry(spacing=(2.0, 1.2, 0.8), origin=(5.0, -3.0, 7.0), directions=GEOMETRIES[name])
    shape = (6, 7, 8)
    view = slice_view(geometry, shape)
    right, up = picture_steps(geometry, shape, view, 2)
    # the pictures are across the index axis nearest superior-inferior
    normal = geometry.directions[:, 2 - view.slice_axis]
    assert abs(normal[2]) == pytest.approx(np.abs(geometry.directions[2]).max())
    expected_right, expected_up = slicer_screen_axes("Axial")
    tolerance = 0.999 if name != "oblique" else np.cos(np.radians(16.0))
    assert right @ expected_right > tolerance and up @ expected_up > tolerance, (right, up)
    assert (view.column_label, view.row_label) == ("right → left", "anterior → posterior")
    assert view.extent(shape) == (0.0, shape[view.column_axis] * geometry.spacing[view.column_axis],
                                  shape[view.row_axis] * geometry.spacing[view.row_axis], 0.0)


@pytest.mark.parametrize("orientation, directions, labels", [
    ("Coronal", np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
     ("right → left", "superior → inferior")),
    ("Sagittal", np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
     ("anterior → posterior", "superior → inferior")),
])
def test_a_single_slice_is_drawn_in_its_own_plane(orientation, directions, labels):
    """A 2-D image (one slice) of a coronal or sagittal plane is shown as that plane, like Slicer's view of it."""
    geometry = Geometry(spacing=(3.0, 1.0, 1.0), directions=directions)
    shape = (1, 9, 10)
    view = slice_view(geometry, shape)
    assert view.slice_axis == 0
    right, up = picture_steps(geometry, shape, view, 0)
    expected_right, expected_up = slicer_screen_axes(orientation)
    assert right @ expected_right > 0.999 and up @ expected_up > 0.999
    assert (view.column_label, view.row_label) == labels


def test_the_same_anatomy_stored_in_two_orders_gives_the_same_pictures():
    """A volume in RAS order and the same voxels in LPS order (the first two index axes reversed) look the same."""
    rng = np.random.default_rng(0)
    volume = rng.random((5, 6, 7))
    ras = Geometry(spacing=(2.0, 1.0, 1.5))
    shape = volume.shape
    origin = ras.ijk_to_ras() @ np.array([shape[2] - 1, shape[1] - 1, 0, 1.0])
    lps = Geometry(spacing=(2.0, 1.0, 1.5), origin=tuple(origin[:3]), directions=np.diag([-1.0, -1.0, 1.0]))
    flipped = volume[:, ::-1, ::-1]
    a, b = slice_view(ras, shape), slice_view(lps, shape)
    assert np.allclose(a.slice_sums(volume), b.slice_sums(flipped), rtol=1e-12)
    for k in range(shape[0]):
        assert np.array_equal(a.image(volume, k), b.image(flipped, k))


def test_zoom_frames_the_structure_with_its_margin_inside_the_picture():
    view = slice_view(Geometry(spacing=(2.0, 0.5, 1.0)), (3, 40, 30))
    picture = np.zeros((40, 30), dtype=bool)
    picture[10:20, 5:8] = True                     # rows 10-19 (0.5 mm), columns 5-7 (1 mm)
    (left, right), (bottom, top) = view.zoom(picture, 3.0)
    assert (left, right) == (2.0, 11.0) and (bottom, top) == (13.0, 2.0)
    # the margin stops at the picture's border, and an empty picture is shown whole
    assert view.zoom(picture, 50.0) == ((0.0, 30.0), (20.0, 0.0)) == view.zoom(np.zeros_like(picture), 3.0)
