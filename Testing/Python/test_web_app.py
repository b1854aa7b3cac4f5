"""The web app that `make app` serves, opened in a real headless Chromium."""

import numpy as np
import pytest

from web_harness import app_server, browser_page, coloured_pixels, grey_mri_fraction, screenshot_array

@pytest.mark.browser
def test_app_shows_the_mri_and_the_coloured_reference(tmp_path, screenshot_dir):
    with app_server() as url, browser_page(tmp_path / "chromium") as page:
        page.goto(url)
        # The page mounts over a websocket: wait for the app's own elements, then for the views to render.
        page.get_by_text("Segmentation Uncertainty — MNI152").first.wait_for(timeout=60_000)
        views = page.locator("img.image-display-area")
        views.first.wait_for(timeout=60_000)
        assert "Segmentation Uncertainty" in page.title()

        main_view = views.first
        assert views.count() == 4  # axial, 3-D, coronal, sagittal
        for _ in range(60):
            rgb = screenshot_array(main_view)
            others = [grey_mri_fraction(screenshot_array(views.nth(i))) for i in (2, 3)]
            if grey_mri_fraction(rgb) > 0.2 and coloured_pixels(rgb).sum() > 500 and min(others) > 0.05:
                break
            page.wait_for_timeout(500)
        assert min(others) > 0.05  # the coronal and sagittal views show the MRI too
        page.screenshot(path=str(screenshot_dir / "app.png"))

        # The axial view shows a grey-scale brain filling a good part of it, with many intensity levels ...
        assert grey_mri_fraction(rgb) > 0.2
        assert len(np.unique(rgb[..., 0])) > 100
        # ... and the reference segment in colour, in the middle of the brain (the ventricles), not at the edges.
        colour = coloured_pixels(rgb)
        assert colour.sum() > 500
        rows, cols = np.nonzero(colour)
        h, w = colour.shape
        assert 0.25 * h < rows.mean() < 0.75 * h and 0.25 * w < cols.mean() < 0.75 * w
        # Its colour is the segment's (orange: red > green > blue), not a rendering artefact.
        mean = rgb[colour].mean(axis=0)
        assert mean[0] > mean[1] > mean[2]


def test_volume_rendering_is_hidden_until_a_3d_preset_is_chosen():
    """The 3D view starts without volume rendering (rendered on the CPU it holds back the slice views'
    pictures, issue 6); choosing a 3D preset in trame-slicer's volume panel shows it; loading a case hides
    it again. Checked on the scene's volume-rendering display node, in the app's own process."""
    from trame.app import get_server

    from SegmentationUncertaintyWeb.app import SegmentationUncertaintyApp

    server = get_server("volume-rendering-test", client_type="vue3")
    app = SegmentationUncertaintyApp(server)
    vr = app.slicer_app.volume_rendering
    assert not vr.get_vr_display_node(app.volume).GetVisibility()
    server.state.ready()
    server.state.flush()                                   # the start-up value of the preset changes nothing
    assert not vr.get_vr_display_node(app.volume).GetVisibility()
    server.state[app._preset_key] = "MR-Default"
    server.state.flush()
    assert vr.get_vr_display_node(app.volume).GetVisibility()
    app.load_case(app.case)
    assert not vr.get_vr_display_node(app.volume).GetVisibility()
