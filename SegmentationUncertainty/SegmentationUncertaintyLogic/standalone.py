"""A real MRML scene from the PyPI ``slicer-core`` wheel, usable outside the Slicer application.

Inside desktop Slicer none of this runs: ``slicer.mrmlScene`` and ``slicer.modules`` already exist.
Outside it, the wheel gives MRML, the module logics and Slicer's real ``slicer/util.py``, but nothing
wires them together. :func:`create_scene` builds what Slicer's application does at start-up, for
segmentations to work (colour nodes, the Volumes and Segmentations logics: constructing the latter
registers the segmentation converter rules), and :func:`wire_slicer_util` points ``slicer.mrmlScene``
and ``slicer.modules.<name>.logic()`` at it so that ``slicer.util`` functions and our logic classes
run unchanged. The web app builds its scene with trame-slicer and calls :func:`wire_slicer_util` on it:
one wiring for the tests, the CLI and the web app.

Example
-------
>>> from SegmentationUncertaintyLogic.standalone import create_scene
>>> core = create_scene()
>>> import slicer, numpy as np
>>> node = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6)))
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StandaloneSlicer:
    """The scene, application logic and named module logics of a standalone Slicer core."""

    scene: Any
    app_logic: Any
    logics: dict[str, Any] = field(default_factory=dict)

    def logic(self, name: str):
        return self.logics[name]


class _Module:
    """What ``slicer.modules.<name>`` offers to ``slicer.util``: its logic."""

    def __init__(self, logic) -> None:
        self._logic = logic

    def logic(self):
        return self._logic


class _App:
    """The few ``slicer.app`` calls that ``slicer.util`` makes on scene-only paths."""

    def processEvents(self) -> None:  # noqa: N802 (Slicer API name)
        pass

    def pauseRender(self) -> None:  # noqa: N802
        pass

    def resumeRender(self) -> None:  # noqa: N802
        pass

    def testingEnabled(self) -> bool:  # noqa: N802
        return True


def create_scene() -> StandaloneSlicer:
    """Create a fresh scene with the application and module logics that segmentations need, and wire
    ``slicer.util`` to it.

    Returns
    -------
    StandaloneSlicer
        ``scene``, ``app_logic`` and ``logics`` keyed by Slicer's module logic names
        (``"Colors"``, ``"Volumes"``, ``"Segmentations"``, ``"SubjectHierarchy"``, ``"Data"``).
    """
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    core = StandaloneSlicer(scene, app_logic)
    for name, logic in (
        ("Colors", slicer.vtkMRMLColorLogic()),
        ("Volumes", slicer.vtkSlicerVolumesLogic()),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic()),
        # Removes a node's display and storage nodes with it, as in Slicer (else slicer.util leaks them).
        ("Data", slicer.vtkSlicerDataModuleLogic()),
    ):
        # The application logic first: some logics look up others through it when the scene is set.
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        core.logics[name] = logic
    wire_slicer_util(scene, app_logic, core.logics)
    return core


def wire_slicer_util(scene, app_logic, logics: dict[str, Any]) -> None:
    """Point ``slicer.mrmlScene``, ``slicer.app`` and ``slicer.modules.<name>.logic()`` at a scene.

    Parameters
    ----------
    scene : vtkMRMLScene
    app_logic : vtkSlicerApplicationLogic
    logics : dict
        Module logics by Slicer name (``"Volumes"`` becomes ``slicer.modules.volumes``).
    """
    import slicer

    # Slicer's Colors module registers colour legends; the wheel's scenes lack it (map overlays need it).
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    slicer.mrmlScene = scene
    slicer.app = _App()
    slicer.app.applicationLogic = lambda: app_logic
    slicer.app.mrmlScene = lambda: scene
    modules = getattr(slicer, "modules", None)
    if not isinstance(modules, types.SimpleNamespace):
        modules = types.SimpleNamespace()
        slicer.modules = modules
    for name, logic in logics.items():
        setattr(modules, name.lower(), _Module(logic))
