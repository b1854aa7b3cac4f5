"""Voxel-grid geometry shared by the sample data, the CLI and the Slicer logic."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Where a ``[k, j, i]`` array lies in patient space.

    Parameters
    ----------
    spacing : tuple of float, shape (3,)
        Voxel size per array axis ``(sz, sy, sx)`` in mm (the core's convention).
    origin : tuple of float, shape (3,)
        RAS position (mm) of the centre of voxel ``[0, 0, 0]`` (Slicer's volume origin).
    directions : ndarray, shape (3, 3)
        Column ``c`` is the RAS unit vector of index axis ``c`` in *Slicer's* order ``(i, j, k)``
        (Slicer's ``IJKToRASDirections``).
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    directions: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be three positive sizes in mm (sz, sy, sx), got {self.spacing!r}")
        directions = np.asarray(self.directions, dtype=float)
        if directions.shape != (3, 3):
            raise ValueError(f"directions must be a 3x3 matrix, got shape {directions.shape}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "directions", directions)

    @property
    def spacing_ijk(self) -> tuple[float, float, float]:
        """Voxel size in Slicer's ``(i, j, k)`` order (mm)."""
        return self.spacing[::-1]

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` to RAS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.directions * np.asarray(self.spacing_ijk)[None, :]
        matrix[:3, 3] = self.origin
        return matrix

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray) -> "Geometry":
        """Inverse of :meth:`ijk_to_ras` (spacing from the column norms)."""
        matrix = np.asarray(matrix, dtype=float)
        columns = matrix[:3, :3]
        spacing_ijk = np.linalg.norm(columns, axis=0)
        return cls(spacing=tuple(spacing_ijk[::-1]), origin=tuple(matrix[:3, 3]),
                   directions=columns / spacing_ijk[None, :])


# ITK stores geometry in LPS, Slicer in RAS: the two differ by a flip of the first two axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def geometry_from_sitk(image) -> Geometry:
    """:class:`Geometry` of a 3-D SimpleITK image (LPS on disk, RAS here)."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
    directions = _LPS_TO_RAS @ np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    return Geometry(spacing=tuple(image.GetSpacing())[::-1], origin=tuple(origin), directions=directions)


def apply_geometry_to_sitk(image, geometry: Geometry) -> None:
    """Set spacing, origin and direction of a 3-D SimpleITK image from ``geometry`` (RAS → LPS)."""
    image.SetSpacing(geometry.spacing_ijk)
    image.SetOrigin(tuple(_LPS_TO_RAS @ np.asarray(geometry.origin)))
    image.SetDirection(tuple((_LPS_TO_RAS @ geometry.directions).ravel()))



@dataclass(frozen=True)
class SliceView:
    """How to draw slices of a ``[k, j, i]`` array as Slicer's slice views (and radiologists) do, whatever
    order the file stores the voxels in (:func:`slice_view`): axial pictures with anterior at the top and
    the patient's right on the left; a single coronal or sagittal slice with superior at the top (right,
    or anterior, on the left). Oblique grids are shown along their nearest patient axes.

    Attributes
    ----------
    slice_axis : int
        Array axis across the pictures: one picture per index along it.
    row_axis, column_axis : int
        Array axes drawn top to bottom and left to right.
    flip_rows, flip_columns : bool
        Whether those axes run backwards on the screen.
    row_spacing, column_spacing : float
        Their voxel sizes (mm).
    row_label, column_label : str
        The patient directions down the picture and across it, e.g. ``"right → left"``.
    """

    slice_axis: int
    row_axis: int
    column_axis: int
    flip_rows: bool
    flip_columns: bool
    row_spacing: float
    column_spacing: float
    row_label: str
    column_label: str

    def image(self, volume: np.ndarray, index: int) -> np.ndarray:
        """The picture of slice ``index``, ``(rows, columns)``, row 0 at the top."""
        plane = np.take(volume, index, axis=self.slice_axis)
        if self.row_axis > self.column_axis:
            plane = plane.T
        return plane[::-1 if self.flip_rows else 1, ::-1 if self.flip_columns else 1]

    def slice_sums(self, volume: np.ndarray) -> np.ndarray:
        """Sum of ``volume`` over each slice, ``(n_slices,)``: e.g. to show the slice where a mask is largest."""
        return np.moveaxis(volume, self.slice_axis, 0).reshape(volume.shape[self.slice_axis], -1).sum(axis=1)

    def extent(self, volume_shape) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` in mm for ``matplotlib``'s ``imshow`` and ``contour`` (``origin="upper"``),
        0 at the picture's top-left corner."""
        rows, columns = volume_shape[self.row_axis], volume_shape[self.column_axis]
        return 0.0, columns * self.column_spacing, rows * self.row_spacing, 0.0

    def zoom(self, picture: np.ndarray, margin_mm: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(xlim, ylim)`` in the mm of :meth:`extent` around the true pixels of ``picture`` (a picture from
        :meth:`image`) with ``margin_mm`` on each side, within the picture; all of it when none is true."""
        height, width = picture.shape[0] * self.row_spacing, picture.shape[1] * self.column_spacing
        rows, columns = np.nonzero(picture)
        if rows.size == 0:
            return (0.0, width), (height, 0.0)
        left = max(0.0, columns.min() * self.column_spacing - margin_mm)
        right = min(width, (columns.max() + 1) * self.column_spacing + margin_mm)
        top = max(0.0, rows.min() * self.row_spacing - margin_mm)
        bottom = min(height, (rows.max() + 1) * self.row_spacing + margin_mm)
        return (left, right), (bottom, top)


_R, _A, _S = 0, 1, 2
_ACROSS = {_R: "right → left", _A: "anterior → posterior", _S: "superior → inferior"}


def slice_view(geometry: Geometry, shape: tuple[int, int, int] | None = None) -> SliceView:
    """The :class:`SliceView` of arrays on ``geometry``'s grid: axial slices, or the one plane of a
    ``shape`` with a single slice."""
    # array axis a is Slicer's index axis 2 - a; its RAS direction is that column of the directions
    along = [np.asarray(geometry.directions[:, 2 - a], dtype=float) for a in range(3)]
    single = [a for a in range(3) if shape is not None and shape[a] == 1]
    slice_axis = single[0] if len(single) == 1 else int(np.argmax([abs(v[_S]) for v in along]))
    in_plane = [a for a in range(3) if a != slice_axis]
    normal = np.abs(along[slice_axis])
    up = _A if normal[_S] >= normal.max() else _S          # axial: anterior up; coronal, sagittal: superior
    row_axis = max(in_plane, key=lambda a: abs(along[a][up]))
    column_axis = next(a for a in in_plane if a != row_axis)
    column = np.abs(along[column_axis])
    left = _R if column[_R] >= column[_A] else _A           # the patient's right, or anterior, on the left
    # an index rising towards the side drawn first (top, left) runs backwards on the screen
    flip_rows, flip_columns = bool(along[row_axis][up] > 0), bool(along[column_axis][left] > 0)
    return SliceView(slice_axis=slice_axis, row_axis=row_axis, column_axis=column_axis, flip_rows=flip_rows,
                     flip_columns=flip_columns, row_spacing=geometry.spacing[row_axis],
                     column_spacing=geometry.spacing[column_axis], row_label=_ACROSS[up], column_label=_ACROSS[left])
