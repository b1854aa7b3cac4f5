"""GPSSI sampler panel: source, DICE slider with live ω0 and the ω0–DICE curve, N, seed, advanced, Generate."""

from __future__ import annotations

import math

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from GPSSISamplerLib.logic import GPSSISamplerLogic, SamplerOutputs
from SegmentationUncertaintyLogic.nodes import save_segmentation, save_table_csv, save_volume, table_rows

from .widgets import (apply_inputs, clear_messages, download_links, guarded, init_status, inputs_click, safe_name,
                      status_area, table)

P = "gp"
#: State keys that Generate reads.
INPUTS = [f"{P}_{key}" for key in ("source", "dice", "n", "seed", "gamma", "h", "omega1")]
T = [("data_testid", "data-testid")]


def curve_svg(omega0, dice, chosen_omega0=None, chosen_dice=None, width=300, height=160) -> str:
    """The ω0–DICE curve (log ω0 axis) as an inline SVG, with the chosen point marked."""
    left, right, top, bottom = 38, 8, 8, 28
    lx = [math.log10(w) for w in omega0]
    x0, x1 = min(lx), max(lx)
    y0, y1 = min(min(dice), chosen_dice or 1.0) - 0.01, 1.0

    def xy(w, d):
        x = left + (math.log10(w) - x0) / max(x1 - x0, 1e-9) * (width - left - right)
        y = top + (y1 - d) / max(y1 - y0, 1e-9) * (height - top - bottom)
        return x, y

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(w, d) for w, d in zip(omega0, dice)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'style="background:#1e1e1e;font:10px sans-serif" data-testid="gp-curve-svg">',
             f'<polyline fill="none" stroke="#56b4e9" stroke-width="2" points="{points}"/>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>',
             f'<text x="{width / 2}" y="{height - 6}" fill="#ccc" text-anchor="middle">ω0 (mm², log scale)</text>',
             f'<text x="10" y="{height / 2}" fill="#ccc" transform="rotate(-90 10 {height / 2})" '
             f'text-anchor="middle">DICE</text>',
             f'<text x="{left - 3}" y="{top + 8}" fill="#ccc" text-anchor="end">{y1:.2f}</text>',
             f'<text x="{left - 3}" y="{height - bottom}" fill="#ccc" text-anchor="end">{y0:.2f}</text>']
    if chosen_omega0 is not None and chosen_dice is not None:
        x, y = xy(chosen_omega0, chosen_dice)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#e69f00"/>')
    parts.append("</svg>")
    return "".join(parts)


class SamplerPanel:
    """Thin view over :class:`GPSSISamplerLogic`."""

    title = "GPSSI sampler"
    icon = "mdi-chart-bubble"

    def __init__(self, app) -> None:
        self.app = app
        self.server = app.server
        self.logic = GPSSISamplerLogic()
        self.outputs: SamplerOutputs | None = None
        state = self.server.state
        init_status(state, P)
        state[f"{P}_sources"] = [{"title": t, "value": k} for k, t in self.logic.sources.items()]
        state[f"{P}_source"] = "gpssi"
        state[f"{P}_dice"] = 0.85
        state[f"{P}_omega0_text"] = "—"
        state[f"{P}_curve_svg"] = ""
        state[f"{P}_n"] = 20
        state[f"{P}_seed"] = 1
        state[f"{P}_gamma"] = ""
        state[f"{P}_h"] = 1.0
        state[f"{P}_omega1"] = ""
        state[f"{P}_measured"] = ""
        state[f"{P}_rows"] = []
        state[f"{P}_files"] = []
        state.change(f"{P}_dice")(self._on_dice)

    # ----------------------------------------------------------------------------------------- view
    def build(self) -> None:
        with v3.VCard(variant="flat"), v3.VCardText():
            html.Div("Reference: the segment selected in the segment editor", classes="text-caption mb-2")
            v3.VSelect(v_model=(f"{P}_source",), items=(f"{P}_sources",), label="Source", density="compact",
                       hide_details=True, __properties=T, data_testid="gp-source")
            with html.Div(v_show=(f"{P}_source === 'gpssi'",)):
                v3.VSlider(v_model=(f"{P}_dice",), min=0.5, max=0.99, step=0.01, label="DICE", density="compact",
                           hide_details=True, thumb_label="always", classes="mt-6", __properties=T,
                           data_testid="gp-dice")
                html.Div(f"target mean pairwise DICE {{{{ {P}_dice.toFixed(2) }}}} ↔ ω0 = {{{{ {P}_omega0_text }}}}",
                         classes="text-caption", __properties=T, data_testid="gp-omega0")
                html.Div(v_html=(f"{P}_curve_svg",), classes="my-2")
            with html.Div(classes="d-flex ga-2 mt-2"):
                v3.VTextField(v_model_number=(f"{P}_n",), type="number", label="Samples", density="compact",
                              hide_details=True, __properties=T, data_testid="gp-n")
                v3.VTextField(v_model_number=(f"{P}_seed",), type="number", label="Seed", density="compact",
                              hide_details=True, __properties=T, data_testid="gp-seed")
            with v3.VExpansionPanels(variant="accordion", classes="mt-2"):
                with v3.VExpansionPanel(title="Advanced"), v3.VExpansionPanelText():
                    v3.VTextField(v_model=(f"{P}_gamma",), label="γ (geodesic contrast; empty = 100 / mean image)",
                                  density="compact", hide_details=True, classes="mb-2")
                    v3.VTextField(v_model_number=(f"{P}_h",), type="number", label="h (image smoothing, mm)",
                                  density="compact", hide_details=True, classes="mb-2")
                    v3.VTextField(v_model=(f"{P}_omega1",), label="ω1 (correlation length, mm; empty = default)",
                                  density="compact", hide_details=True)
            v3.VBtn("Generate", click=inputs_click(self.generate, INPUTS), block=True, color="primary", classes="my-2",
                    disabled=(f"{P}_busy",), __properties=T, data_testid="gp-generate")
            status_area(P)
            html.Div(f"Measured mean pairwise DICE: {{{{ {P}_measured }}}}", v_show=(f"{P}_measured",),
                     classes="text-subtitle-2", __properties=T, data_testid="gp-measured")
            table(f"{P}_rows", [("sample", "Sample"), ("volume", "Volume (ml)"), ("dice", "Dice to ref.")],
                  "gp-table")
            download_links(f"{P}_files", "gp-downloads")

    # -------------------------------------------------------------------------------------- actions
    def reset(self) -> None:
        """A new case: forget the previous samples."""
        self.outputs = None
        with self.server.state as state:
            state[f"{P}_measured"], state[f"{P}_rows"], state[f"{P}_files"] = "", [], []
            state[f"{P}_omega0_text"], state[f"{P}_curve_svg"] = "—", ""
            clear_messages(state, P)

    def _parameters(self) -> dict:
        state = self.server.state

        def optional(key, what):
            text = str(state[key] if state[key] is not None else "").strip()
            if not text:
                return None
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{what} must be a number, got {text!r}") from None

        return {"gamma": optional(f"{P}_gamma", "γ"), "h": float(state[f"{P}_h"] or 1.0),
                "omega1": optional(f"{P}_omega1", "ω1")}

    def _reference(self):
        node = self.app.reference_node()
        if node is None:
            raise ValueError("there is no reference segmentation: load a case or draw one with the segment editor")
        return node, self.app.reference_segment_id() or None

    def _on_dice(self, **_) -> None:
        """Live ω0 for the slider, from the cached curve (computed by Generate)."""
        if self.outputs is None or self.outputs.omega0 is None or self.server.state[f"{P}_busy"]:
            return
        try:
            reference, segment_id = self._reference()
            omega0 = self.logic.omega0ForDice(self.app.volume, reference, float(self.server.state[f"{P}_dice"]),
                                              segment_id, seed=int(self.server.state[f"{P}_seed"]),
                                              **self._parameters())
            self._show_curve(omega0)
        except ValueError as error:
            self.server.state[f"{P}_omega0_text"] = f"— ({error})"

    def _show_curve(self, omega0: float) -> None:
        reference, segment_id = self._reference()
        curve = self.logic.diceCurve(self.app.volume, reference, segment_id, seed=int(self.server.state[f"{P}_seed"]),
                                     **self._parameters())
        with self.server.state as state:
            state[f"{P}_omega0_text"] = f"{omega0:.4g} mm²"
            state[f"{P}_curve_svg"] = curve_svg(curve.omega0, curve.monotone_dice, omega0, curve.dice_at(omega0))

    @guarded(P)
    def generate(self, inputs: dict | None = None) -> None:
        state = self.server.state
        apply_inputs(state, inputs)
        reference, segment_id = self._reference()
        try:
            n, seed = int(state[f"{P}_n"]), int(state[f"{P}_seed"])
        except (TypeError, ValueError):
            raise ValueError("the number of samples and the seed must be whole numbers") from None
        source = state[f"{P}_source"]
        self.outputs = self.logic.generate(self.app.volume, reference, segment_id, source=source,
                                           targetDice=float(state[f"{P}_dice"]), numberOfSamples=n, seed=seed,
                                           outputs=None, **(self._parameters() if source == "gpssi" else {}))
        out = self.outputs
        if out.omega0 is not None:
            self._show_curve(out.omega0)
        files = self._export(out)
        with state:
            state[f"{P}_measured"] = f"{out.measuredDice:.3f}"
            state[f"{P}_rows"] = [{"sample": r["sample"], "volume": f"{r['volume (ml)']:.2f}",
                                   "dice": f"{r['Dice to reference']:.3f}"} for r in table_rows(out.table)]
            state[f"{P}_files"] = files
            state[f"{P}_status"] = f"{n} {source} samples generated"
        self.app.on_samples_generated(out.samples)

    def _export(self, out: SamplerOutputs) -> list[dict]:
        downloads = self.app.downloads
        base = safe_name(out.samples.GetName())
        save_segmentation(out.samples, str(downloads.path(f"{base}.seg.nrrd")))
        names = [f"{base}.seg.nrrd"]
        for key in ("frequency", "entropy", "meanLevel"):
            node = getattr(out, key)
            if node is not None:
                names.append(f"{base}_{key}.nrrd")
                save_volume(node, str(downloads.path(names[-1])))
        save_table_csv(out.table, str(downloads.path(f"{base}_table.csv")))
        names.append(f"{base}_table.csv")
        if out.curveTable is not None:
            save_table_csv(out.curveTable, str(downloads.path(f"{base}_omega0_dice.csv")))
            names.append(f"{base}_omega0_dice.csv")
        return downloads.entries(names)
