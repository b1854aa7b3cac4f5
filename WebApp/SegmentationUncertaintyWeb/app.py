"""Web app: trame-slicer's views and segment editor, a sample case, and the Segmentation Uncertainty panels.

Run ``make app`` (or ``segmentation-uncertainty-app --host 127.0.0.1 --port 8080``) and open the URL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless rendering

from trame.app import TrameApp  # noqa: E402
from trame_slicer import module as trame_slicer_module  # noqa: E402
from trame_slicer.app.logic import SegmentationAppLogic  # noqa: E402
from trame_slicer.app.ui import SegmentationAppUI  # noqa: E402
from trame_slicer.app.ui.control_button import ControlButton  # noqa: E402
from trame_slicer.core import SlicerApp  # noqa: E402

from SegmentationUncertaintyLogic.sample_scenes import DEFAULT_CASE, SAMPLE_CASES, load_sample_case  # noqa: E402
from SegmentationUncertaintyLogic.standalone import wire_slicer_util  # noqa: E402

from .fusion_panel import FusionPanel  # noqa: E402
from .sampler_panel import SamplerPanel  # noqa: E402
from .uncertainty_panel import UncertaintyPanel  # noqa: E402
from .widgets import Downloads  # noqa: E402

TITLE = "Segmentation Uncertainty"
PANELS = (UncertaintyPanel, SamplerPanel, FusionPanel)


class SegmentationUncertaintyApp(TrameApp):
    """trame-slicer's segmentation app with our scene wiring, a sample case and our side panels."""

    def __init__(self, server=None, case: str = DEFAULT_CASE, downloads_dir: str | None = None):
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = app = SlicerApp()
        wire_slicer_util(app.scene, app.app_logic, {
            "Colors": app.color_logic, "Volumes": app.volumes_logic,
            "Segmentations": app.segmentations_logic, "SubjectHierarchy": app.subject_hierarchy_logic,
            "Data": app.data_logic,
        })
        self.downloads = Downloads(self.server, Path(downloads_dir or tempfile.mkdtemp(prefix="su-downloads-")))
        self.case_titles = {key: title for key, (title, _loader) in SAMPLE_CASES.items()}
        self.case = case
        self.volume = None
        self._logic = SegmentationAppLogic(self.server, app)
        self._ui = SegmentationAppUI(self.server, self._logic.layout_manager)
        self.panels = [panel_type(self) for panel_type in PANELS]
        self._add_panels()
        self._logic.set_ui(self._ui)
        # Choosing another 3D preset in trame-slicer's volume panel asks for the volume rendering: show it then.
        self._preset_key = self._logic._volume_properties_logic.name.preset_3d_name
        self._preset_3d = self.server.state[self._preset_key]
        self.server.state.change(self._preset_key)(self._on_preset_3d)
        self.server.state["trame__title"] = TITLE
        self.server.state["trame__favicon"] = None
        self.load_case(case)

    @property
    def panel_names(self) -> set[str]:
        return {type(panel).__name__ for panel in self.panels}

    @property
    def scene(self):
        return self.slicer_app.scene

    def _add_panels(self) -> None:
        ui = self._ui
        for panel in self.panels:
            active = f"{ui.name.active_tool} === '{type(panel).__name__}'"
            with ui.layout.drawer:
                from trame.widgets import html

                with html.Div(v_if=(active,)):
                    panel.build()
            with ui.layout.toolbar:
                ControlButton(icon=panel.icon, name=panel.title, classes="mt-1",
                              click=f"{ui.name.active_tool} = {active} ? null : '{type(panel).__name__}';"
                                    f"{ui.name.is_drawer_visible} = {ui.name.active_tool} !== null",
                              active=(active,), disabled=(f"!{ui.name.is_volume_loaded}",),
                              __properties=[("data_testid", "data-testid")],
                              data_testid=f"open-{type(panel).__name__}")
        ui.layout.title.set_text(f"{TITLE} — {SAMPLE_CASES[self.case][0]}")
        ui.layout.flush_content()

    def load_case(self, case: str) -> None:
        """Replace the scene's data with a sample case and show it in the views."""
        if case not in SAMPLE_CASES:
            raise ValueError(f"unknown sample case {case!r}")
        state, names = self.server.state, self._ui.name
        panel_open = state[names.active_tool] if state[names.active_tool] in self.panel_names else None
        self.scene.Clear()
        self.volume, _segmentation = load_sample_case(case)
        self.case = case
        self.slicer_app.display_manager.show_volume(self.volume, do_reset_views=True)
        # Same signal as trame-slicer's file loading: the editor takes the scene's segmentation ...
        self._logic._load_files_logic.volume_loaded(self.volume)
        self.show_volume_rendering(False)
        if panel_open:  # ... and opens itself in the drawer: stay on the panel that loaded the case.
            state[names.active_tool] = panel_open
            state[names.is_drawer_visible] = True
        self._ui.layout.title.set_text(f"{TITLE} — {SAMPLE_CASES[case][0]}")
        self._ui.layout.flush_content()
        for panel in self.panels:
            panel.reset()

    def show_volume_rendering(self, visible: bool) -> None:
        """Show or hide the volume rendering of the image in the 3D view (hidden by default).

        Rendered on the CPU (Mesa), one frame of it takes seconds, and trame-rca renders every view in the
        server's event loop: while it renders, the slice views' new pictures wait unsent, so an overlay
        change reached the browser seconds late, or only after the next interaction (issue 6).
        """
        if self.volume is None:
            return
        display = self.slicer_app.volume_rendering.get_vr_display_node(self.volume)
        if display is not None:
            display.SetVisibility(visible)

    def _on_preset_3d(self, **kwargs) -> None:
        preset = kwargs[self._preset_key]
        if preset != self._preset_3d:  # (not the start-up flush of the default)
            self._preset_3d = preset
            self.show_volume_rendering(True)

    def panel(self, panel_type):
        return next(p for p in self.panels if isinstance(p, panel_type))

    def on_samples_generated(self, samples_node) -> None:
        """New samples: offer them to the uncertainty panel (selected) and to the fusion panel, and render."""
        self.panel(UncertaintyPanel).refresh_sets(select=samples_node.GetID())
        self.panel(FusionPanel).refresh_sets()
        self.render()

    def on_fused(self, outputs) -> None:
        """A new consensus: offer its probability and τ maps as overlays in the uncertainty panel, and render."""
        self.panel(UncertaintyPanel).add_overlay_choices(
            {node.GetID(): node.GetName() for node in [*outputs.probabilities, *outputs.tau]})
        self.render()

    def reference_node(self):
        """The segmentation being edited in the segment editor (the reference)."""
        return self.slicer_app.segmentation_editor.active_segmentation_node

    def reference_segment_id(self) -> str:
        return self.slicer_app.segmentation_editor.get_active_segment_id()

    def after_state_change(self, action, *args) -> None:
        """Run a panel's guarded ``action(*args)`` (a coroutine) as its own task, after the state change."""
        asyncio.ensure_future(action(*args))

    def render(self) -> None:
        """Render the slice views now and twice more shortly after, so that the newest picture is the last
        one sent even if a frame is lost on the way. Only the slice views: an overlay changes nothing in
        the 3D view, whose displayable managers schedule its own renders when its content changes."""
        views = list(self.slicer_app.view_manager.get_slice_views())
        loop = asyncio.get_event_loop()
        for delay in (0.0, 0.3, 1.0):
            loop.call_later(delay, lambda: [view.schedule_render() for view in views])

    @property
    def ui(self):
        return self._ui.layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"{TITLE} web app (trame-slicer)")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                        help="address to serve on (default $HOST or 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")),
                        help="port (default $PORT or 8080)")
    parser.add_argument("--case", default=DEFAULT_CASE, choices=sorted(SAMPLE_CASES),
                        help=f"sample case shown at start (default {DEFAULT_CASE}; the page can load the others)")
    parser.add_argument("--downloads", help="folder for exported results (default: a new temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    # The server shares the CPUs with rendering and, often, the browser: torch's default of one thread per
    # core then spins against them and a 5 s sampling run takes minutes on 2 cores.
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    app = SegmentationUncertaintyApp(case=args.case, downloads_dir=args.downloads)
    app.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=True,
                     exec_mode="main", timeout=0)


if __name__ == "__main__":
    main()
