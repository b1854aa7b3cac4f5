"""Consensus fusion panel: raters (checkable segments, or probability maps such as the samplers' frequency maps),
method, link, smoothness, mixture, Fuse, rater table, τ maps."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ConsensusFusionLib.logic import ConsensusFusionLogic, FusionOutputs
from SegmentationUncertaintyLib.fusion import default_smoothness_mm
from SegmentationUncertaintyLogic.nodes import (PROBABILITY_MAP_ATTRIBUTE, probability_maps, save_segmentation,
                                                save_table_csv, save_volume, segment_ids, table_rows)
from SegmentationUncertaintyLogic.overlays import hide_overlay

from .widgets import (apply_inputs, clear_messages, download_links, guarded, init_status, inputs_click,
                      multi_segment_sets, number_text, safe_name, status_area, table)

P = "cf"
#: State keys that Fuse reads.
INPUTS = [f"{P}_{key}" for key in ("kind", "selected", "selected_maps", "method", "link", "smoothness", "mixture")]
#: The logit suits smooth maps (a network's softmax), not frequency maps of a few samples, mostly exactly 0 or 1
#: (bench/frequency_maps_fusion.py): the square root stays the default.
LINK_TITLES = {"sqrt": "Square root (Hellinger)", "logit": "Logit (log-odds: smooth maps)"}
T = [("data_testid", "data-testid")]
#: The panel's kinds of raters -> the fusion's (whose default smoothness the panel starts from).
KINDS = {"segments": "mask", "maps": "probability"}
#: Rater table columns: (key in the logic's table, title in the page). What a reader compares raters by comes
#: first, where the narrow drawer shows it; the model's parameters follow (the table scrolls sideways).
COLUMNS = [("rater", "Rater"), ("relative tau", "Rel. τ"), ("Dice to consensus", "Dice"),
           ("HD95 to consensus (mm)", "HD95 (mm)"), ("bias", "Bias"), ("variance", "Variance"), ("nu", "ν"),
           ("cluster", "Cluster")]


class FusionPanel:
    """Thin view over :class:`ConsensusFusionLogic`."""

    title = "Consensus fusion"
    icon = "mdi-account-group"

    def __init__(self, app) -> None:
        self.app = app
        self.server = app.server
        self.logic = ConsensusFusionLogic()
        self.outputs: FusionOutputs | None = None
        self.shown_tau: int | None = None  # the rater whose τ map is overlaid
        self.fused_set = None  # the segmentation whose segments were fused (hidden under a τ map)
        self.known_maps: set[str] = set()  # probability maps listed so far (new sampler maps come checked)
        state = self.server.state
        init_status(state, P)
        state[f"{P}_sets"] = []
        state[f"{P}_set"] = None
        state[f"{P}_raters"] = []
        state[f"{P}_selected"] = []
        state[f"{P}_kind"] = "segments"
        state[f"{P}_maps"] = []
        state[f"{P}_selected_maps"] = []
        state[f"{P}_links"] = [{"title": t, "value": k} for k, t in LINK_TITLES.items()]
        state[f"{P}_link"] = "sqrt"
        state[f"{P}_methods"] = [{"title": t, "value": k} for k, t in self.logic.methods.items()]
        state[f"{P}_method"] = "student-t"
        state[f"{P}_smoothness"] = default_smoothness_mm(KINDS[state[f"{P}_kind"]])
        state[f"{P}_mixture"] = False
        state[f"{P}_summary"] = ""
        state[f"{P}_rows"] = []
        state[f"{P}_tau_raters"] = []
        state[f"{P}_tau"] = None
        state[f"{P}_files"] = []
        state.change(f"{P}_set")(self._on_set)
        state.change(f"{P}_kind")(self._on_kind)

    # ----------------------------------------------------------------------------------------- view
    def build(self) -> None:
        with v3.VCard(variant="flat"), v3.VCardText():
            html.Div("Raters", classes="text-subtitle-2")
            with v3.VBtnToggle(v_model=(f"{P}_kind",), mandatory=True, density="compact", divided=True,
                               color="primary", classes="my-1", __properties=T, data_testid="cf-kind"):
                v3.VBtn("Segments", value="segments", size="small")
                v3.VBtn("Probability maps", value="maps", size="small")
            with html.Div(v_show=(f"{P}_kind === 'segments'",)):
                v3.VSelect(v_model=(f"{P}_set",), items=(f"{P}_sets",), density="compact", hide_details=True,
                           placeholder="Load the multi-rater case or generate samples", __properties=T,
                           data_testid="cf-set")
                with html.Div(classes="my-1", __properties=T, data_testid="cf-raters"):
                    v3.VCheckbox(v_for=f"r in {P}_raters", key="r.value", v_model=(f"{P}_selected",),
                                 value=("r.value",), label=("r.title",), density="compact", hide_details=True)
            with html.Div(v_show=(f"{P}_kind === 'maps'",)):
                html.Div("Each run of the GPSSI sampler (any source: GPSSI, a network, a baseline) adds its "
                         "frequency map, a probabilistic rater.", classes="text-caption",
                         v_show=(f"!{P}_maps.length",))
                with html.Div(classes="my-1", __properties=T, data_testid="cf-maps"):
                    v3.VCheckbox(v_for=f"m in {P}_maps", key="m.value", v_model=(f"{P}_selected_maps",),
                                 value=("m.value",), label=("m.title",), density="compact", hide_details=True)
            v3.VSelect(v_model=(f"{P}_method",), items=(f"{P}_methods",), label="Method", density="compact",
                       hide_details=True, classes="mt-2", __properties=T, data_testid="cf-method")
            v3.VSelect(v_model=(f"{P}_link",), items=(f"{P}_links",), label="Link (space where maps are averaged)",
                       density="compact", hide_details=True, classes="mt-2",
                       v_show=(f"['student-t', 'gaussian'].includes({P}_method)",), __properties=T,
                       data_testid="cf-link")
            v3.VTextField(v_model_number=(f"{P}_smoothness",), type="number", density="compact", hide_details=True,
                          label="Smoothness: basis spacing (mm; 0 = no spatial prior)", classes="mt-2",
                          __properties=T, data_testid="cf-smoothness")
            v3.VSwitch(v_model=(f"{P}_mixture",), label="Mixture of consensuses (rater clusters)", color="primary",
                       density="compact", hide_details=True, __properties=T, data_testid="cf-mixture")
            v3.VBtn("Fuse", click=inputs_click(self.fuse, INPUTS), block=True, color="primary", classes="my-2",
                    disabled=(f"{P}_busy || ({P}_kind === 'maps' ? {P}_selected_maps : {P}_selected).length < 2",),
                    __properties=T, data_testid="cf-fuse")
            status_area(P)
            html.Div(f"{{{{ {P}_summary }}}}", v_show=(f"{P}_summary",), classes="text-subtitle-2", __properties=T,
                     data_testid="cf-summary")
            table(f"{P}_rows", COLUMNS, "cf-table")
            html.Div("τ map of rater (low τ: treated as an outlier there)", classes="text-subtitle-2 mt-2",
                     v_show=(f"{P}_tau_raters.length",))
            with v3.VBtnToggle(v_model=(f"{P}_tau",), density="compact", divided=True, classes="flex-wrap",
                               __properties=T, data_testid="cf-tau"):
                v3.VBtn("{{ r.title }}", v_for=f"r in {P}_tau_raters", key="r.value", value=("r.value",),
                        size="small", click=(self.choose_tau, "[r.value]"))
            download_links(f"{P}_files", "cf-downloads")

    # -------------------------------------------------------------------------------------- actions
    def reset(self) -> None:
        """A new case: forget the previous fusion and list the case's rater sets."""
        self.outputs = None
        self.shown_tau = None
        self.fused_set = None
        self.known_maps = set()  # a cleared scene may give its node IDs again
        with self.server.state as state:
            state[f"{P}_summary"], state[f"{P}_rows"], state[f"{P}_tau_raters"], state[f"{P}_files"] = "", [], [], []
            state[f"{P}_tau"] = None
            clear_messages(state, P)
        self.refresh_sets()

    def refresh_sets(self, select: str | None = None) -> None:
        """List the scene's segmentations with at least two segments (keep the choice if it still exists) and
        its probability maps."""
        self.refresh_maps()
        items = multi_segment_sets(self.app.scene)
        with self.server.state as state:
            state[f"{P}_sets"] = items
            values = [i["value"] for i in items]
            if select is not None or state[f"{P}_set"] not in values:
                # Prefer a multi-rater case's raters over generated samples.
                raters = [i["value"] for i in items if i["title"].startswith("Raters")]
                state[f"{P}_set"] = select or (raters or values or [None])[0]
        self._on_set()

    def refresh_maps(self) -> None:
        """List the scene's probability maps; keep the checked ones, and check the samplers' new ones."""
        nodes = probability_maps(self.app.scene)
        ids = {node.GetID() for node in nodes}
        with self.server.state as state:
            checked = set(state[f"{P}_selected_maps"])
            state[f"{P}_maps"] = [{"title": node.GetName(), "value": node.GetID()} for node in nodes]
            state[f"{P}_selected_maps"] = [
                node.GetID() for node in nodes if node.GetID() in checked or (
                    node.GetID() not in self.known_maps and node.GetAttribute(PROBABILITY_MAP_ATTRIBUTE) == "samples")]
        self.known_maps = ids

    def _on_set(self, **_) -> None:
        node = self._set_node()
        raters = [] if node is None else [
            {"title": node.GetSegmentation().GetSegment(i).GetName(), "value": i} for i in segment_ids(node)]
        with self.server.state as state:
            state[f"{P}_raters"] = raters
            state[f"{P}_selected"] = [r["value"] for r in raters]

    def _on_kind(self, **_) -> None:
        # each kind of rater starts from its own smoothness: probability maps fuse better without the prior
        with self.server.state as state:
            state[f"{P}_smoothness"] = default_smoothness_mm(KINDS[state[f"{P}_kind"]])

    def _set_node(self):
        node_id = self.server.state[f"{P}_set"]
        return self.app.scene.GetNodeByID(node_id) if node_id else None

    @guarded(P)
    def fuse(self, inputs: dict | None = None) -> None:
        state = self.server.state
        apply_inputs(state, inputs)
        try:
            smoothness = float(state[f"{P}_smoothness"])
        except (TypeError, ValueError):
            raise ValueError("the smoothness must be a number of mm (0 for no spatial prior)") from None
        if state[f"{P}_kind"] == "maps":
            checked = set(state[f"{P}_selected_maps"])
            raters = [node for node in probability_maps(self.app.scene) if node.GetID() in checked]
            if len(raters) < 2:
                raise ValueError("check at least two probability maps: each run of the GPSSI sampler adds one")
            node = None
        else:
            node = self._set_node()
            if node is None:
                raise ValueError("choose the raters first: load the multi-rater case or generate samples")
            raters = [(node, i) for i in segment_ids(node) if i in set(state[f"{P}_selected"])]
        self.outputs = self.logic.fuse(raters, self.app.volume, method=state[f"{P}_method"], link=state[f"{P}_link"],
                                       smoothness=smoothness, mixture=bool(state[f"{P}_mixture"]))
        self.fused_set = node
        out = self.outputs
        names = [row["rater"] for row in table_rows(out.raterTable)]
        files = self._export(out)
        with state:
            state[f"{P}_summary"] = out.summary
            state[f"{P}_rows"] = [{key: number_text(row[key]) for key, _ in COLUMNS} for row in table_rows(out.raterTable)]
            state[f"{P}_tau_raters"] = [{"title": name, "value": index} for index, name in enumerate(names)] \
                if out.tau else []
            state[f"{P}_files"] = files
            state[f"{P}_status"] = out.summary.split(":")[0]
        self.refresh_maps()  # the consensus's probability map can be a rater too
        self.app.on_fused(out)
        # Show at once where the least trusted rater was treated as an outlier.
        least = out.result.lowest_tau_rater() if out.tau else None
        with state:
            state[f"{P}_tau"] = None if least is None else int(least)
        self.show_tau(state[f"{P}_tau"])

    @guarded(P, new_status=False)
    def choose_tau(self, index: int) -> None:
        """The user chose a rater (clicking the chosen one again unselects it: no overlay).

        Compared with what is shown, not with ``cf_tau``: the toggle's v-model has already sent the click's
        new value (the rater, or none when unselecting) by the time the click itself arrives."""
        self.show_tau(None if self.shown_tau == index else index)

    def show_tau(self, index: int | None) -> None:
        """Overlay one rater's τ map on the image (``None``: no overlay)."""
        if self.outputs is None or not self.outputs.tau:
            return
        if index is None:
            hide_overlay()
        else:
            self.logic.showTau(self.outputs, int(index))
        # The raters' filled segments would cover the map (a rater's low-τ voxels are inside its own segment).
        raters = self.fused_set
        if raters is not None and raters.GetScene() is not None and raters.GetDisplayNode() is not None:
            raters.GetDisplayNode().SetVisibility(index is None)
        self.shown_tau = index
        with self.server.state as state:
            state[f"{P}_tau"] = index
        self.app.render()

    def _export(self, out: FusionOutputs) -> list[dict]:
        downloads = self.app.downloads
        base = safe_name(out.consensus.GetName())
        names = [f"{base}.seg.nrrd"]
        save_segmentation(out.consensus, str(downloads.path(names[0])))
        for node in [*out.probabilities, *out.tau]:
            names.append(f"{safe_name(node.GetName())}.nrrd")
            save_volume(node, str(downloads.path(names[-1])))
        names.append(f"{safe_name(out.raterTable.GetName())}.csv")
        save_table_csv(out.raterTable, str(downloads.path(names[-1])))
        return downloads.entries(names)
