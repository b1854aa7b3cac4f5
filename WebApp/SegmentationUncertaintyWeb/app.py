"""Web app: trame-slicer's slice/3-D views and segment editor with a sample case loaded.

Run ``make app`` (or ``segmentation-uncertainty-app --host 127.0.0.1 --port 8080``) and open the URL.
"""

from __future__ import annotations

import argparse
import logging
import os

from trame.app import TrameApp
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import SegmentationAppLogic
from trame_slicer.app.ui import SegmentationAppUI
from trame_slicer.core import SlicerApp

from SegmentationUncertaintyLogic.sample_scenes import DEFAULT_CASE, SAMPLE_CASES, load_sample_case
from SegmentationUncertaintyLogic.standalone import wire_slicer_util

TITLE = "Segmentation Uncertainty"


class SegmentationUncertaintyApp(TrameApp):
    """trame-slicer's segmentation app with our scene wiring and a sample case."""

    def __init__(self, server=None, case: str = DEFAULT_CASE):
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        app = self.slicer_app
        wire_slicer_util(app.scene, app.app_logic, {
            "Colors": app.color_logic, "Volumes": app.volumes_logic,
            "Segmentations": app.segmentations_logic, "SubjectHierarchy": app.subject_hierarchy_logic,
            "Data": app.data_logic,
        })
        self._logic = SegmentationAppLogic(self.server, app)
        self._ui = SegmentationAppUI(self.server, self._logic.layout_manager)
        self._ui.layout.title.set_text(f"{TITLE} — {SAMPLE_CASES[case][0]}")
        self._ui.layout.flush_content()
        self._logic.set_ui(self._ui)
        self.server.state["trame__title"] = TITLE
        self.server.state["trame__favicon"] = None
        self.load_case(case)

    def load_case(self, case: str) -> None:
        """Replace the scene's data with a sample case and show it in the views."""
        self.slicer_app.scene.Clear()
        volume, _segmentation = load_sample_case(case)
        self.slicer_app.display_manager.show_volume(volume, do_reset_views=True)
        # Same signal as trame-slicer's file loading: the editor takes the scene's segmentation.
        self._logic._load_files_logic.volume_loaded(volume)

    @property
    def ui(self):
        return self._ui.layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"{TITLE} web app (trame-slicer)")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--case", default=DEFAULT_CASE, choices=sorted(SAMPLE_CASES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = SegmentationUncertaintyApp(case=args.case)
    app.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=True,
                     exec_mode="main", timeout=0)


if __name__ == "__main__":
    main()
