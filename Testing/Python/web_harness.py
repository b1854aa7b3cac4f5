"""Start the web app as `make app` does and drive it with Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
APP = Path(sys.executable).with_name("segmentation-uncertainty-app")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_server(*args: str, timeout_s: float = 90.0):
    """Run the app's console script (what `make app` runs) on a free port; yield its URL."""
    port = free_port()
    env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([str(APP), "--host", "127.0.0.1", "--port", str(port), *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        deadline = time.monotonic() + timeout_s
        for line in process.stdout:
            output.append(line)
            if "App running at" in line:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not start in time:\n" + "".join(output[-40:]))
        else:
            raise RuntimeError("the app exited before serving:\n" + "".join(output[-40:]))
        # Keep reading its output: a full pipe would block the app at its next log line.
        threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def browser_page(user_data_dir: Path, width: int = 1400, height: int = 900):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": width, "height": height})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def screenshot_array(locator) -> np.ndarray:
    """RGB array (H, W, 3) of an element's screenshot."""
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.int16)


def grey_mri_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels that look like a grey-scale MRI: neutral colour, mid intensities."""
    neutral = (np.ptp(rgb, axis=2) < 12)
    mid = (rgb.mean(axis=2) > 40) & (rgb.mean(axis=2) < 250)
    return float((neutral & mid).mean())


def coloured_pixels(rgb: np.ndarray, min_saturation: int = 60) -> np.ndarray:
    """Mask of strongly coloured pixels (overlays, segments), as opposed to grey-scale image or background."""
    return np.ptp(rgb, axis=2) >= min_saturation
