"""Uncertainty panel: sample case, sample/rater set, maps overlaid on the image, metrics, downloads."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from SegmentationUncertaintyLogic.logic import SegmentationUncertaintyLogic, UncertaintyMaps
from SegmentationUncertaintyLogic.nodes import save_table_csv, save_volume, table_rows

from .widgets import (apply_inputs, download_links, guarded, init_status, inputs_click, multi_segment_sets,
                      number_text, safe_name, status_area, table)

P = "su"
MAPS = {"entropy": "Entropy", "frequency": "Frequency", "gamma": "γ (cross-entropy)"}
#: Legend titles (short: the legend scales its title to its width).
LEGENDS = {"entropy": "entropy (bits)", "frequency": "frequency", "gamma": "γ (nats)"}


class UncertaintyPanel:
    """Thin view over :class:`SegmentationUncertaintyLogic`."""

    title = "Uncertainty maps"
    icon = "mdi-chart-bell-curve-cumulative"

    def __init__(self, app) -> None:
        self.app = app
        self.server = app.server
        self.logic = SegmentationUncertaintyLogic()
        self.maps: dict[str, UncertaintyMaps] = {}  # by sample-set node ID
        self.legends: dict[str, str] = {}  # legend title by map volume node ID
        state = self.server.state
        init_status(state, P)
        state[f"{P}_cases"] = [{"title": t, "value": k} for k, t in app.case_titles.items()]
        state[f"{P}_case"] = app.case
        state[f"{P}_sets"] = []
        state[f"{P}_set"] = None
        state[f"{P}_metrics"] = []
        state[f"{P}_overlay"] = None
        state[f"{P}_overlays"] = []
        state[f"{P}_opacity"] = 0.6
        state[f"{P}_color"] = self.logic.colorTables[0]
        state[f"{P}_colors"] = list(self.logic.colorTables)
        state[f"{P}_files"] = []
        state.change(f"{P}_opacity", f"{P}_color")(self._restyle)

    # ----------------------------------------------------------------------------------------- view
    def build(self) -> None:
        with v3.VCard(variant="flat"), v3.VCardText():
            html.Div("Sample case", classes="text-subtitle-2")
            with html.Div(classes="d-flex ga-2 align-center"):
                v3.VSelect(v_model=(f"{P}_case",), items=(f"{P}_cases",), density="compact", hide_details=True,
                           data_testid="su-case", __properties=[("data_testid", "data-testid")])
                v3.VBtn("Load", click=inputs_click(self.load_case, [f"{P}_case"]), size="small", data_testid="su-load-case",
                        __properties=[("data_testid", "data-testid")])
            html.Div("Samples or raters", classes="text-subtitle-2 mt-4")
            v3.VSelect(v_model=(f"{P}_set",), items=(f"{P}_sets",), density="compact", hide_details=True,
                       placeholder="Generate samples or load a multi-rater case", data_testid="su-set",
                       __properties=[("data_testid", "data-testid")])
            v3.VBtn("Compute maps", click=inputs_click(self.compute, [f"{P}_set"]), block=True, classes="my-2", color="primary",
                    disabled=(f"!{P}_set || {P}_busy",), data_testid="su-compute",
                    __properties=[("data_testid", "data-testid")])
            status_area(P)
            html.Div("Overlay on the image", classes="text-subtitle-2 mt-2")
            with v3.VBtnToggle(v_model=(f"{P}_overlay",), density="compact", divided=True, classes="flex-wrap",
                               data_testid="su-overlay", __properties=[("data_testid", "data-testid")]):
                v3.VBtn("None", value=None, size="small", click=(self.choose_overlay, "[null]"))
                v3.VBtn("{{ o.title }}", v_for=f"o in {P}_overlays", key="o.value", value=("o.value",),
                        size="small", click=(self.choose_overlay, "[o.value]"))
            v3.VSlider(v_model=(f"{P}_opacity",), min=0, max=1, step=0.05, label="Opacity", density="compact",
                       hide_details=True, classes="mt-2", data_testid="su-opacity",
                       __properties=[("data_testid", "data-testid")])
            v3.VSelect(v_model=(f"{P}_color",), items=(f"{P}_colors",), label="Colour map", density="compact",
                       hide_details=True, classes="mt-2", data_testid="su-color",
                       __properties=[("data_testid", "data-testid")])
            html.Div("Metrics", classes="text-subtitle-2 mt-4", v_show=(f"{P}_metrics.length",))
            table(f"{P}_metrics", [("metric", "Metric"), ("value", "Value")], "su-metrics")
            download_links(f"{P}_files", "su-downloads")

    # -------------------------------------------------------------------------------------- actions
    def refresh_sets(self, select: str | None = None) -> None:
        """List the scene's segmentations with at least two segments (sample or rater sets)."""
        items = multi_segment_sets(self.app.scene)
        state = self.server.state
        with state:
            state[f"{P}_sets"] = items
            if select is not None or state[f"{P}_set"] not in [i["value"] for i in items]:
                state[f"{P}_set"] = select if select is not None else (items[-1]["value"] if items else None)

    def add_overlay_choices(self, choices: dict[str, str], legends: dict[str, str] | None = None) -> None:
        """Offer more overlays (e.g. τ maps from the fusion panel): volume node ID -> title (and legend title)."""
        self.legends.update(legends or choices)
        with self.server.state as state:
            existing = [o for o in state[f"{P}_overlays"] if o["value"] not in choices]
            state[f"{P}_overlays"] = existing + [{"title": t, "value": k} for k, t in choices.items()]

    @guarded(P)
    def load_case(self, inputs: dict | None = None) -> None:
        apply_inputs(self.server.state, inputs)
        self.app.load_case(self.server.state[f"{P}_case"])
        with self.server.state as state:
            state[f"{P}_status"] = f"Loaded {self.app.case_titles[state[f'{P}_case']]}"

    def reset(self) -> None:
        """A new case: forget the previous case's maps and list its sets."""
        self.maps.clear()
        self.legends.clear()
        with self.server.state as state:
            state[f"{P}_metrics"], state[f"{P}_overlays"], state[f"{P}_files"] = [], [], []
            state[f"{P}_overlay"] = None
            state[f"{P}_case"] = self.app.case
        self.refresh_sets()

    @guarded(P)
    def compute(self, inputs: dict | None = None) -> None:
        state = self.server.state
        apply_inputs(state, inputs)
        samples = self.app.scene.GetNodeByID(state[f"{P}_set"]) if state[f"{P}_set"] else None
        if samples is None:
            raise ValueError("choose a set of samples or raters first")
        maps = self.logic.computeUncertaintyMaps(self.app.volume, samples, reference=self.app.reference_node(),
                                                 outputs=self.maps.get(samples.GetID()))
        self.maps[samples.GetID()] = maps
        files = self._export(samples, maps)
        with state:
            state[f"{P}_metrics"] = [{"metric": r["metric"], "value": number_text(r["value"], 4)}
                                     for r in table_rows(maps.metrics)]
            state[f"{P}_files"] = files
            state[f"{P}_status"] = f"Maps of {samples.GetName()} computed"
        self.add_overlay_choices({getattr(maps, key).GetID(): title for key, title in MAPS.items()},
                                 {getattr(maps, key).GetID(): title for key, title in LEGENDS.items()})
        self.show_overlay(maps.entropy.GetID())

    def show_overlay(self, node_id: str | None) -> None:
        state = self.server.state
        with state:
            state[f"{P}_overlay"] = node_id
        node = self.app.scene.GetNodeByID(node_id) if node_id else None
        if node is None:
            self.logic.hideOverlay()
        else:
            self.logic.showOverlay(node, colorTable=state[f"{P}_color"], opacity=float(state[f"{P}_opacity"]),
                                   title=self.legends.get(node_id))
        # The samples' outlines would hide the map under them: show them only without an overlay.
        samples = self.app.scene.GetNodeByID(state[f"{P}_set"]) if state[f"{P}_set"] else None
        if samples is not None and samples is not self.app.reference_node() and samples.GetDisplayNode():
            samples.GetDisplayNode().SetVisibility(node is None)
        self.app.render()

    @guarded(P, new_status=False)
    def choose_overlay(self, node_id: str | None) -> None:
        self.show_overlay(node_id)

    def _restyle(self, **_) -> None:
        self.app.after_state_change(self.choose_overlay, self.server.state[f"{P}_overlay"])

    def _export(self, samples, maps: UncertaintyMaps) -> list[dict]:
        downloads = self.app.downloads
        base = safe_name(samples.GetName())
        names = []
        for key in MAPS:
            name = f"{base}_{key}.nrrd"
            save_volume(getattr(maps, key), str(downloads.path(name)))
            names.append(name)
        save_table_csv(maps.metrics, str(downloads.path(f"{base}_metrics.csv")))
        names.append(f"{base}_metrics.csv")
        return downloads.entries(names)
