"""The clinician workflow in the browser: the web panels clicked in a real headless Chromium.

One app server serves the module (as one clinician's session would); each test loads the case it needs
through the page's case chooser and sets the inputs it relies on (the server keeps the previous test's
choices, as it would a user's), so the tests do not depend on each other's order.
"""

import re
import time

import numpy as np
import pytest
from playwright.sync_api import expect
from scipy import ndimage as ndi

from web_harness import app_server, browser_page, coloured_pixels, screenshot_array

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WORK_TIMEOUT_MS = 120_000  # generous for the 2-core CI machine; the work itself takes seconds
#: How long a display-only change (overlay on/off, another τ map, colour map) may take to reach the picture
#: in the browser, with nobody touching the view. It takes about a second; before the fix of issue 6 it
#: took 5 to 10 s, or waited for the next interaction with the view.
VIEW_TIMEOUT_S = 5.0
DEFAULT_CASE = "MNI152 T1 — lateral ventricles"
RATERS_CASE = "MNI152 T1 — lateral ventricles, 5 raters"


def by_id(page, testid):
    return page.locator(f'[data-testid="{testid}"]')


def open_panel(page, name):
    button = by_id(page, f"open-{name}")
    button.wait_for(timeout=60_000)
    if "v-btn--active" not in (button.get_attribute("class") or ""):
        button.click()


def wait_done(page, prefix, result_testid):
    """Wait until the panel shows its result or its error; return the error text ('' if none)."""
    page.locator(f'[data-testid="{result_testid}"]:visible, [data-testid="{prefix}-error"]:visible').first.wait_for(
        timeout=WORK_TIMEOUT_MS)
    error = by_id(page, f"{prefix}-error")
    return error.inner_text() if error.count() else ""


def main_view(page):
    return page.locator("img.image-display-area").first


def main_view_rgb(page):
    """The main (axial) view's picture once it has settled, taken without touching the view (no hover, no
    scroll: an interaction with the view makes it render, which would hide a picture that is not sent)."""
    page.wait_for_timeout(1500)
    return screenshot_array(main_view(page))


def changed_fraction(rgb, other):
    """Fraction of the view's pixels that differ clearly between two pictures (not JPEG noise)."""
    return float((np.abs(rgb - other).max(axis=2) > 40).mean())


def view_when(page, condition, what, timeout_s=VIEW_TIMEOUT_S):
    """The main view's picture as soon as ``condition(picture)`` holds, polled for ``timeout_s`` seconds
    without touching the view (the new picture must reach the browser by itself). The picture returned is
    the settled one (the stream sends a low-quality frame first, a high-quality one half a second later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rgb = screenshot_array(main_view(page))
        if condition(rgb):
            page.wait_for_timeout(700)
            settled = screenshot_array(main_view(page))
            return settled if condition(settled) else rgb
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in the view {timeout_s:.0f} s after the change")
        page.wait_for_timeout(200)


def fill_number(page, testid, text):
    """Type into a number field and leave it, so the value reaches the server before the next click."""
    field = by_id(page, testid).locator("input")
    field.fill(text)
    field.press("Tab")
    page.wait_for_timeout(300)


def open_segment_editor(page):
    """Show trame-slicer's segment editor in the side drawer (its toolbar button is the first brush icon)."""
    if not page.locator("button:has(i.mdi-plus):visible").count():
        page.locator("button:has(i.mdi-brush):visible").first.click()
    page.locator("button:has(i.mdi-plus):visible").first.wait_for()


def view_once_changed(page, before, min_fraction=0.05, what="the change"):
    """The main view's picture once at least ``min_fraction`` of its pixels differ from ``before``."""
    return view_when(page, lambda rgb: changed_fraction(rgb, before) > min_fraction, what)


def centre(rgb):
    """The middle of the view, where the overlays are (not their colour legend, beside the head)."""
    h, w = rgb.shape[:2]
    return rgb[h // 4:3 * h // 4, w // 4:3 * w // 4]


def view_once_back_to(page, earlier, what, max_fraction=0.003):
    """The main view's picture once its middle shows ``earlier`` again (all but ``max_fraction`` of it)."""
    return view_when(page, lambda rgb: changed_fraction(centre(rgb), centre(earlier)) < max_fraction, what)


def choose(page, testid, title):
    """Choose an item of a select, as a user would."""
    by_id(page, testid).click()
    page.locator(".v-overlay .v-list-item", has_text=title).first.click()
    by_id(page, testid).get_by_text(title, exact=True).wait_for()
    page.locator(".v-overlay .v-list-item").first.wait_for(state="hidden")  # the menu has closed


def load_case(page, title):
    """Choose a sample case in the uncertainty panel and load it, as a user would."""
    open_panel(page, "UncertaintyPanel")
    choose(page, "su-case", title)
    page.wait_for_timeout(500)  # and the choice has reached the server
    by_id(page, "su-load-case").click()
    by_id(page, "su-status").wait_for(state="hidden")  # cleared when the loading starts
    by_id(page, "su-status").filter(has_text=f"Loaded {title}").wait_for(timeout=WORK_TIMEOUT_MS)
    page.get_by_text(f"Segmentation Uncertainty — {title}", exact=True).first.wait_for()


@pytest.fixture(scope="module")
def app_url():
    with app_server() as url:
        yield url


@pytest.fixture
def page(app_url, tmp_path):
    with browser_page(tmp_path / "chromium") as page:
        page.goto(app_url)
        page.get_by_text("Segmentation Uncertainty — MNI152").first.wait_for(timeout=60_000)
        main_view(page).wait_for(timeout=60_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(tmp_path / "last.png"))  # what the page showed at the end (or failure)


def test_gpssi_samples_at_dice_085_and_entropy_overlay(page, screenshot_dir):
    load_case(page, DEFAULT_CASE)
    before = main_view_rgb(page)
    reference = coloured_pixels(before)  # the filled lateral-ventricles segment
    assert reference.sum() > 500

    open_panel(page, "SamplerPanel")
    choose(page, "gp-source", "GPSSI (Gaussian process)")  # (another test may have left a baseline chosen)
    assert by_id(page, "gp-dice").locator("input").first.input_value() == "0.85"  # the default target
    fill_number(page, "gp-n", "20")
    by_id(page, "gp-generate").click()
    assert wait_done(page, "gp", "gp-measured") == ""
    measured = float(by_id(page, "gp-measured").inner_text().split(":")[-1])
    assert abs(measured - 0.85) <= 0.02
    assert "ω0 =" in by_id(page, "gp-omega0").inner_text() and "mm²" in by_id(page, "gp-omega0").inner_text()
    assert page.locator('[data-testid="gp-curve-svg"] polyline').count() == 1
    by_id(page, "gp-table").locator("tbody tr").nth(19).wait_for(timeout=WORK_TIMEOUT_MS)  # filled just after
    assert by_id(page, "gp-table").locator("tbody tr").count() == 20
    assert by_id(page, "gp-table").locator("thead").inner_text().startswith("Sample")
    links = by_id(page, "gp-downloads").locator("a")
    links.nth(3).wait_for(timeout=WORK_TIMEOUT_MS)
    assert any(name.endswith(".seg.nrrd") for name in links.all_inner_texts()) and links.count() >= 4
    with_samples = main_view_rgb(page)
    page.screenshot(path=str(screenshot_dir / "gpssi_panel.png"))

    open_panel(page, "UncertaintyPanel")
    by_id(page, "su-compute").click()
    assert wait_done(page, "su", "su-metrics") == ""
    by_id(page, "su-metrics").locator("tbody tr").nth(1).wait_for(timeout=WORK_TIMEOUT_MS)
    head = ndi.binary_fill_holes(before.mean(axis=2) > 40)

    def entropy_pixels(rgb):
        """Pixels the entropy overlay colours on the head (not its legend): changed since the samples were
        shown, and coloured."""
        return (np.abs(rgb - with_samples).max(axis=2) > 40) & coloured_pixels(rgb, 40) & head

    with_overlay = view_when(page, lambda rgb: entropy_pixels(rgb).sum() > 200, "the entropy overlay")
    page.screenshot(path=str(screenshot_dir / "uncertainty_panel.png"))
    overlay = entropy_pixels(with_overlay)
    boundary = reference ^ ndi.binary_erosion(reference)
    distance = ndi.distance_transform_edt(~boundary)
    pixels_per_mm = reference.shape[1] / 197.0 * 0.9  # the axial view shows the 197 mm wide brain fitted
    # Around the reference boundary: most overlay pixels within 5 mm of it, none beyond 25 mm.
    assert np.median(distance[overlay]) < 5 * pixels_per_mm
    assert distance[overlay].max() < 25 * pixels_per_mm

    # Display-only changes reach the picture by themselves (issue 6): the overlay off (the samples'
    # outlines come back), on again, then another colour map.
    overlays = by_id(page, "su-overlay")
    overlays.get_by_role("button", name=re.compile("^none$", re.I)).click()
    view_once_back_to(page, with_samples, "the samples without the overlay")
    overlays.get_by_role("button", name=re.compile("^entropy$", re.I)).click()
    view_once_back_to(page, with_overlay, "the entropy overlay shown again")
    choose(page, "su-color", "Grey")
    def recoloured(rgb):
        """The overlay's pixels less saturated, many clearly changed (about 0.8 and 20 % when grey, at 0.6
        opacity over the reference's fill; 1.0 and 4 % for the same picture re-encoded)."""
        changed = (np.abs(rgb - with_overlay).max(axis=2) > 40)[overlay].mean()
        saturation = np.ptp(rgb, axis=2)[overlay].mean() / np.ptp(with_overlay, axis=2)[overlay].mean()
        return changed > 0.1 and saturation < 0.9

    view_when(page, recoloured, "the entropy overlay in the grey colour map")


def test_empty_reference_is_refused_then_a_painted_one_is_sampled(page, screenshot_dir):
    load_case(page, DEFAULT_CASE)
    # A new segment in the segment editor: the reference is now empty.
    open_segment_editor(page)
    page.locator("button:has(i.mdi-plus):visible").first.click()
    open_panel(page, "SamplerPanel")
    fill_number(page, "gp-n", "5")
    by_id(page, "gp-generate").click()
    error = wait_done(page, "gp", "gp-measured")
    assert "empty" in error and "draw it first" in error
    assert "Traceback" not in page.content()

    # The page stays usable: back to the segment editor, paint the new segment with the brush, sample it.
    open_segment_editor(page)
    page.locator("button:has(i.mdi-brush):visible").first.click()  # the editor's Paint effect
    before = main_view_rgb(page)
    box = main_view(page).bounding_box()
    x, y = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.3  # left frontal white matter
    page.mouse.move(x, y)
    page.mouse.down()
    for row in range(4):  # a small filled patch, stroke by stroke
        for step in range(20):
            page.mouse.move(x + 3 * (step if row % 2 == 0 else 19 - step), y + 6 * row, steps=2)
    page.mouse.up()
    painted = np.abs(main_view_rgb(page) - before).max(axis=2) > 40
    assert painted.sum() > 300, "the brush did not paint"

    open_panel(page, "SamplerPanel")
    by_id(page, "gp-generate").click()
    assert wait_done(page, "gp", "gp-measured") == ""
    rows = by_id(page, "gp-table").locator("tbody tr")
    rows.nth(4).wait_for(timeout=WORK_TIMEOUT_MS)  # the table may fill a moment after the summary shows
    assert rows.count() == 5
    dices = [float(rows.nth(i).locator("td").nth(2).inner_text()) for i in range(5)]
    assert min(dices) > 0.6  # samples around the painted reference, not around the ventricles
    by_id(page, "gp-downloads").locator("a").first.wait_for(timeout=WORK_TIMEOUT_MS)
    names = by_id(page, "gp-downloads").locator("a").all_inner_texts()
    # Named after the new segment (the editor names it Segment_<n>), not after the ventricles.
    assert names and all(re.match(r"Segment_\d+_gpssi_samples", name) for name in names), names
    page.screenshot(path=str(screenshot_dir / "paint_and_sample.png"))


def test_bad_sample_count_shows_an_error_and_the_page_stays_usable(page):
    load_case(page, DEFAULT_CASE)
    open_panel(page, "SamplerPanel")
    fill_number(page, "gp-n", "1")
    by_id(page, "gp-generate").click()
    error = by_id(page, "gp-error")
    error.wait_for(timeout=60_000)
    assert "at least 2" in error.inner_text()
    assert "Traceback" not in page.content()
    # Still usable: the panel answers the next action.
    open_panel(page, "UncertaintyPanel")
    by_id(page, "su-compute").wait_for()
    open_panel(page, "SamplerPanel")
    assert by_id(page, "gp-generate").is_enabled()
    # A new case clears the message about the previous one (the server's state outlives this page: a
    # stale error once answered the next test's Generate before its samples came).
    load_case(page, DEFAULT_CASE)
    open_panel(page, "SamplerPanel")
    by_id(page, "gp-error").wait_for(state="detached", timeout=10_000)


def test_student_t_fusion_of_raters_and_tau_overlay(page, screenshot_dir):
    load_case(page, RATERS_CASE)
    open_panel(page, "FusionPanel")
    by_id(page, "cf-kind").get_by_role("button", name="Segments").click()
    raters = by_id(page, "cf-raters").locator("input[type=checkbox]")
    raters.nth(4).wait_for()
    assert raters.count() == 5 and all(raters.nth(i).is_checked() for i in range(5))
    before_fusion = main_view_rgb(page)
    by_id(page, "cf-fuse").click()
    assert wait_done(page, "cf", "cf-summary") == ""
    summary = by_id(page, "cf-summary").inner_text()
    assert "5 raters fused (student-t)" in summary and "least trusted: outlier" in summary
    rows = by_id(page, "cf-table").locator("tbody tr")
    rows.nth(4).wait_for(timeout=WORK_TIMEOUT_MS)
    assert rows.count() == 5
    by_id(page, "cf-downloads").locator("a").nth(5).wait_for(timeout=WORK_TIMEOUT_MS)
    names = by_id(page, "cf-downloads").locator("a").all_inner_texts()
    assert any(n.endswith(".seg.nrrd") for n in names) and sum("tau" in n for n in names) == 5

    # The least trusted rater's τ map is overlaid at once, with nobody touching the view.
    tau_buttons = by_id(page, "cf-tau")
    assert "v-btn--active" in tau_buttons.locator("button", has_text="outlier").get_attribute("class")
    head = ndi.binary_fill_holes(before_fusion.mean(axis=2) > 40)  # not the colour legend beside it

    def low_tau_pixels(rgb):
        """The raters' segments are hidden under a τ map: changed pixels still coloured are the map's."""
        return coloured_pixels(rgb) & (np.abs(rgb - before_fusion).max(axis=2) > 40) & head

    tau = view_when(page, lambda rgb: low_tau_pixels(rgb).sum() > 300, "the outlier's τ map")
    low_tau = low_tau_pixels(tau)
    rows, cols = np.nonzero(low_tau)  # near the ventricles, in the middle of the view, not all over it
    h, w = low_tau.shape
    assert 0.25 * h < np.median(rows) < 0.75 * h and 0.25 * w < np.median(cols) < 0.75 * w
    page.screenshot(path=str(screenshot_dir / "fusion_panel.png"))

    # Another rater's τ map: a different picture (it was trusted where the outlier was not), by itself.
    other = tau_buttons.locator("button", has_text="CSF ≥ 0.5")
    other.click()
    by_id(page, "cf-progress").wait_for(state="hidden")
    assert "v-btn--active" in other.get_attribute("class")
    other_tau = view_once_changed(page, tau, min_fraction=0.002, what="another rater's τ map")
    # The same rater again: no τ map (the raters' segments are shown again).
    other.click()
    by_id(page, "cf-progress").wait_for(state="hidden")
    assert "v-btn--active" not in other.get_attribute("class")
    view_once_changed(page, other_tau, min_fraction=0.002, what="the raters' segments without a τ map")


def test_fusion_of_two_samplers_frequency_maps(page, mni152):
    """The probabilistic raters of the product: each sampler run's frequency map (here GPSSI and the log-odds
    baseline) is offered, checked, and fused into a consensus of the reference's size, without the smoothness
    prior by default (such maps are smooth already: with the prior the Student-t fit of these two maps, cropped,
    takes 26 times as long for a lower Dice, `python bench/frequency_maps_fusion.py 5`; here, uncropped, it ran
    past this test's 120 s wait on the CI machine)."""
    reference_ml = mni152.masks["lateral_ventricles"].sum() * np.prod(mni152.spacing) / 1000.0
    load_case(page, DEFAULT_CASE)
    open_panel(page, "SamplerPanel")
    fill_number(page, "gp-n", "5")
    by_id(page, "gp-generate").click()
    assert wait_done(page, "gp", "gp-measured") == ""
    choose(page, "gp-source", "Log-odds (baseline)")
    by_id(page, "gp-generate").click()
    by_id(page, "gp-status").filter(has_text="5 logodds samples generated").wait_for(timeout=WORK_TIMEOUT_MS)

    open_panel(page, "FusionPanel")
    smoothness = by_id(page, "cf-smoothness").locator("input")
    expect(smoothness).to_have_value("2")
    by_id(page, "cf-kind").get_by_role("button", name="Probability maps").click()
    expect(smoothness).to_have_value("0")
    maps = by_id(page, "cf-maps").locator(".v-checkbox")
    maps.nth(1).wait_for()
    assert maps.count() == 2 and all(maps.nth(i).locator("input").is_checked() for i in range(2))
    assert [t.split()[-2] for t in maps.all_inner_texts()] == ["gpssi", "logodds"]
    choose(page, "cf-link", "Logit (log-odds: smooth maps)")
    choose(page, "cf-link", "Square root (Hellinger)")
    by_id(page, "cf-fuse").click()
    assert wait_done(page, "cf", "cf-summary") == ""
    summary = by_id(page, "cf-summary").inner_text()
    assert "2 raters fused (student-t)" in summary
    # (with the logit link and the smoothness prior these maps lose 40 % of the volume: 10.8 ml)
    assert "no spatial prior" in summary
    consensus_ml = float(re.search(r"consensus ([0-9.]+) ml", summary).group(1))
    assert abs(consensus_ml - reference_ml) < 0.1 * reference_ml, (consensus_ml, reference_ml)
    rows = by_id(page, "cf-table").locator("tbody tr")
    rows.nth(1).wait_for(timeout=WORK_TIMEOUT_MS)
    assert rows.count() == 2 and "logodds frequency" in rows.nth(1).inner_text()
    # the consensus's map joins the list, unchecked: the next fusion still takes the two samplers' maps
    maps.nth(2).wait_for(timeout=WORK_TIMEOUT_MS)
    assert "probability" in maps.nth(2).inner_text() and not maps.nth(2).locator("input").is_checked()
    # segments as raters start from the smoothness prior again
    by_id(page, "cf-kind").get_by_role("button", name="Segments").click()
    expect(smoothness).to_have_value("2")
