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
