"""Show a map volume as the slice views' foreground overlay: colour table, window/level, opacity,
zero transparent, colour legend. Shared by the three modules (entropy, frequency, γ, τ maps)."""

from __future__ import annotations

import numpy as np

from .nodes import require_node

#: Colour tables offered for maps, by display name -> colour node ID of Slicer's default colour nodes.
COLOR_TABLES = {
    "Heat (PET)": "vtkMRMLPETProceduralColorNodePET-Heat",
    "Iron": "vtkMRMLColorTableNodeIron",
    "Rainbow": "vtkMRMLColorTableNodeRainbow",
    "fMRI": "vtkMRMLColorTableNodefMRI",
    "Grey": "vtkMRMLColorTableNodeGrey",
}
DEFAULT_COLOR_TABLE = "Heat (PET)"


def show_map_overlay(map_volume, *, color_table: str = DEFAULT_COLOR_TABLE, opacity: float = 0.6,
                     window: float | None = None, level: float | None = None, zero_transparent: bool = True,
                     legend: bool = True, title: str | None = None):
    """Display ``map_volume`` in the foreground of every slice view.

    Parameters
    ----------
    map_volume : vtkMRMLScalarVolumeNode
        The map (entropy, frequency, γ, τ, ...), on the background image's grid or any grid.
    color_table : str
        A key of :data:`COLOR_TABLES` or any colour node ID.
    opacity : float
        Foreground opacity in [0, 1].
    window, level : float, optional
        Display range; default: the map's range (min of the non-zero values to max).
    zero_transparent : bool
        Voxels equal to 0 (certain, or outside the region of interest) are not drawn.
    legend : bool
        Add (or update) a colour legend for the map.

    Returns
    -------
    vtkMRMLScalarVolumeDisplayNode
        The map's display node.
    """
    import slicer

    require_node(map_volume, "vtkMRMLScalarVolumeNode", "map volume")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    color_id = COLOR_TABLES.get(color_table, color_table)
    if slicer.mrmlScene.GetNodeByID(color_id) is None:
        raise ValueError(f"unknown colour table {color_table!r}; choose one of {sorted(COLOR_TABLES)}")
    values = slicer.util.arrayFromVolume(map_volume)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 1.0
    positive = finite[finite > 0]
    bottom = float(positive.min()) if positive.size and zero_transparent else float(finite.min()) if finite.size else 0.0
    if window is None or level is None:
        low, high = min(bottom, top), max(top, bottom + 1e-6)
        window, level = high - low, (high + low) / 2.0

    if map_volume.GetDisplayNode() is None:
        map_volume.CreateDefaultDisplayNodes()
    display = map_volume.GetDisplayNode()
    with _modifying(display):
        display.SetAndObserveColorNodeID(color_id)
        display.AutoWindowLevelOff()
        display.SetWindowLevel(float(window), float(level))
        display.SetInterpolate(False)
        if zero_transparent:
            # Thresholding hides voxels below the lower bound: a tiny positive bound hides exact zeros only.
            display.AutoThresholdOff()
            display.SetLowerThreshold(min(bottom, top) * 0.5 if bottom > 0 else 1e-6)
            display.SetUpperThreshold(max(top, 1e-6) * 2.0)
            display.ApplyThresholdOn()
        else:
            display.ApplyThresholdOff()
    slicer.util.setSliceViewerLayers(foreground=map_volume, foregroundOpacity=opacity)
    # one legend on screen: the overlay's (the previous overlay's legend would otherwise stay beside it)
    _hide_legends(keep=map_volume if legend else None)
    if legend:
        _show_legend(map_volume, title or map_volume.GetName())
    return display


class _modifying:
    """Batch display-node changes into one Modified event."""

    def __init__(self, node) -> None:
        self.node = node

    def __enter__(self):
        self.was = self.node.StartModify()
        return self.node

    def __exit__(self, *exc):
        self.node.EndModify(self.was)


def _show_legend(map_volume, title: str):
    import slicer

    legend = None
    for index in range(map_volume.GetNumberOfDisplayNodes()):
        node = map_volume.GetNthDisplayNode(index)
        if node is not None and node.IsA("vtkMRMLColorLegendDisplayNode"):
            legend = node
    if legend is None:
        legend = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode", f"{map_volume.GetName()} legend")
        map_volume.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetAndObservePrimaryDisplayNode(map_volume.GetDisplayNode())
    legend.SetTitleText(title)
    legend.SetVisibility(True)
    return legend


def _hide_legends(keep=None) -> None:
    """Hide the colour legends of every map volume but ``keep``."""
    import slicer

    for legend in slicer.util.getNodesByClass("vtkMRMLColorLegendDisplayNode"):
        shown = legend.GetDisplayableNode()
        if shown is not None and shown is not keep and shown.IsA("vtkMRMLScalarVolumeNode"):
            legend.SetVisibility(False)


def hide_overlay() -> None:
    """Remove any foreground overlay from the slice views, and its colour legend."""
    import slicer

    slicer.util.setSliceViewerLayers(foreground=None)
    _hide_legends()
