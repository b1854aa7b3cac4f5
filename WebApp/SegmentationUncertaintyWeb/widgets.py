"""Small pieces shared by the web panels: status line with errors and progress, tables, downloads."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import traceback
from pathlib import Path

from trame.widgets import html
from trame.widgets import vuetify3 as v3

LOG = logging.getLogger(__name__)


def status_area(prefix: str) -> None:
    """Progress bar while ``{prefix}_busy``, the last message, and an error alert the user can close."""
    v3.VProgressLinear(v_show=(f"{prefix}_busy",), indeterminate=True, color="primary", classes="my-2",
                       __properties=[("data_testid", "data-testid")], data_testid=f"{prefix}-progress")
    html.Div(f"{{{{ {prefix}_status }}}}", classes="text-caption my-1", v_show=(f"{prefix}_status",),
             __properties=[("data_testid", "data-testid")], data_testid=f"{prefix}-status")
    v3.VAlert(text=(f"{prefix}_error",), type="error", variant="tonal", density="compact", closable=True,
              v_if=(f"{prefix}_error",), click_close=f"{prefix}_error = ''", classes="my-2",
              __properties=[("data_testid", "data-testid")], data_testid=f"{prefix}-error")


def init_status(state, prefix: str) -> None:
    state[f"{prefix}_busy"] = False
    clear_messages(state, prefix)


def clear_messages(state, prefix: str) -> None:
    """Clear the panel's status line and error (a new case: they were about the previous one)."""
    state[f"{prefix}_status"] = ""
    state[f"{prefix}_error"] = ""


def guarded(prefix: str, new_status: bool = True):
    """Run a panel action with the busy flag on; show a ``ValueError``'s message (bad input) or a short
    note for anything unexpected in the page, never a stack trace, and keep the app usable.
    ``new_status``: the action clears the status line (a display change keeps it)."""

    def decorate(method):
        @functools.wraps(method)
        async def wrapper(self, *args, **kwargs):
            state = self.server.state
            with state:
                state[f"{prefix}_busy"] = True
                state[f"{prefix}_error"] = ""
                if new_status:
                    state[f"{prefix}_status"] = ""
            # Let the browser show the progress bar first (not `network_completion`: with the views
            # streaming images the network is never idle, and it would wait forever).
            await asyncio.sleep(0.1)
            try:
                result = method(self, *args, **kwargs)
                if hasattr(result, "__await__"):
                    await result
            except ValueError as error:
                with state:
                    state[f"{prefix}_error"] = str(error)
            except Exception as error:  # noqa: BLE001 (the page must survive any failure)
                LOG.error("%s failed:\n%s", method.__name__, traceback.format_exc())
                with state:
                    state[f"{prefix}_error"] = f"Unexpected error ({type(error).__name__}): {error}"
            finally:
                with state:
                    state[f"{prefix}_busy"] = False

        return wrapper

    return decorate


def inputs_click(action, keys: list[str]) -> tuple:
    """``click=`` for an action that reads these state keys: their values as the page shows them travel
    with the click (a value typed just before the click may otherwise reach the server after it)."""
    return action, "[{" + ", ".join(f"'{key}': {key}" for key in keys) + "}]"


def apply_inputs(state, inputs: dict | None) -> None:
    """Take the values sent by :func:`inputs_click` into the server's state."""
    if inputs:
        with state:
            for key, value in inputs.items():
                state[key] = value


def table(rows_key: str, headers: list[tuple[str, str]], testid: str) -> None:
    """A compact table of ``state[rows_key]`` (list of dicts) with the given (key, title) columns."""
    v3.VDataTable(items=(rows_key,), headers=(f"{rows_key}_headers", [{"title": t, "key": k} for k, t in headers]),
                  density="compact", items_per_page=-1, hide_default_footer=True, classes="text-caption",
                  __properties=[("data_testid", "data-testid")], data_testid=testid)


def download_links(files_key: str, testid: str) -> None:
    """Links to the files listed in ``state[files_key]`` (dicts with ``name`` and ``url``)."""
    with html.Div(classes="d-flex flex-wrap ga-1 my-2", __properties=[("data_testid", "data-testid")],
                  data_testid=testid):
        with html.A(v_for=f"f in {files_key}", key="f.name", href=("f.url",), download=("f.name",)):
            v3.VChip("{{ f.name }}", size="small", prepend_icon="mdi-download", link=True)


class Downloads:
    """A folder served at ``/downloads`` whose files the panels link to."""

    def __init__(self, server, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        server.enable_module({"serve": {"downloads": str(self.folder)}})

    def path(self, name: str) -> Path:
        return self.folder / name

    def entries(self, names: list[str]) -> list[dict[str, str]]:
        return [{"name": name, "url": f"downloads/{name}"} for name in names if (self.folder / name).exists()]


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "output"


def number_text(value, digits: int = 3) -> str:
    """A table cell: numbers to ``digits`` significant digits, "—" for a missing (NaN) value, text as is."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.{digits}g}"


def multi_segment_sets(scene) -> list[dict[str, str]]:
    """Select items for the scene's segmentations with at least two segments (sample or rater sets)."""
    from SegmentationUncertaintyLogic.nodes import segment_ids

    nodes = [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
             for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    return [{"title": f"{n.GetName()} ({len(segment_ids(n))})", "value": n.GetID()}
            for n in nodes if len(segment_ids(n)) >= 2]
