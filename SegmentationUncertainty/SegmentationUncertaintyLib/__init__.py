"""Segmentation Uncertainty compute core.

Arrays in, arrays out: numpy, scipy, torch and SimpleITK only (never slicer, vtk or qt), so that the
same code serves the Slicer modules, the web app, the command-line tools and plain Python scripts.

Conventions shared by every function of the core
-------------------------------------------------
* Arrays are indexed like Slicer's ``arrayFromVolume`` and SimpleITK's ``GetArrayFromImage``:
  ``[k, j, i]`` = ``[z, y, x]`` in 3-D and ``[y, x]`` in 2-D.
* ``spacing`` is given per *array axis*, in the same order, in millimetres: ``(sz, sy, sx)``.
* Masks are boolean (or 0/1) arrays; probability maps are float arrays in [0, 1].
* Signed distances are negative inside a structure and positive outside, in mm.
* Random work takes a ``seed``; the same seed gives the same result on the same device.
* Heavy kernels take ``device="cpu" | "cuda"`` and run in torch; inputs and outputs are numpy.
"""

from .geometry import Geometry

__all__ = ["Geometry"]
