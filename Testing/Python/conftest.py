"""Shared fixtures: a real slicer-core MRML scene per test, and the sample cases read once per session."""

from __future__ import annotations

import os

import pytest

# Headless VTK rendering for anything that renders (web app, screenshots).
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture
def slicer_scene():
    """A fresh, initialised MRML scene wired into ``slicer.mrmlScene`` / ``slicer.util``."""
    from SegmentationUncertaintyLogic.standalone import create_scene

    core = create_scene()
    yield core
    core.scene.Clear(1)


@pytest.fixture(scope="session")
def mni152():
    from SegmentationUncertaintyLib.sample_data import load_mni152

    return load_mni152()


@pytest.fixture(scope="session")
def colin27():
    from SegmentationUncertaintyLib.sample_data import load_colin27

    return load_colin27()


@pytest.fixture
def screenshot_dir(tmp_path):
    """Where browser tests save their screenshots: ``Resources/Screenshots`` when ``UPDATE_SCREENSHOTS=1``
    (to refresh the README pictures), else the test's temporary folder."""
    from pathlib import Path

    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        path = Path(__file__).resolve().parents[2] / "Resources" / "Screenshots"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path
