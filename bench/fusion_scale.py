"""Fusion at a clinical CT size: time and peak memory of each method on a large structure.

Case: an ellipsoid of 1.51 l (semi-axes 80, 60 and 75 mm along z, y, x: a liver-sized organ) on a
512 × 512 × Z grid of 1.5 × 0.8 × 0.8 mm voxels, and ``P`` raters drawn around it, seeded: each adds a
smooth random field (white noise smoothed by a Gaussian of 8 mm, scaled to a standard deviation of 2 mm)
to the ellipsoid's level function, whose slope at the border (0.75–1 per mm) makes that a shift of about
2–2.7 mm (s.d.). Each method runs in a fresh child process, so that its peak memory is its own: the
child's peak resident memory above what the raters already took there (and, on CUDA, the GPU's peak
allocation). The Student-t and Gaussian fits run on one torch thread (as in
``bench_fusion.py``), STAPLE and majority vote are SimpleITK's; times are also given as ratios to
STAPLE's, measured in the same run.

    python bench/fusion_scale.py [--slices Z] [--raters P] [--device cpu|cuda]

prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SPACING = (1.5, 0.8, 0.8)
SEMI_AXES_MM = (80.0, 60.0, 75.0)
BORDER_SD_MM = 2.0
CORRELATION_MM = 8.0
METHODS = {"student_t": ("student-t", {}), "student_t_no_prior": ("student-t", {"spatial_prior": False}),
           "gaussian": ("gaussian", {}), "staple": ("staple", {}), "majority": ("majority", {})}


def make_raters(slices: int, n_raters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The truth ``(Z, 512, 512)`` and ``n_raters`` masks drawn around it, ``(P, Z, 512, 512)``."""
    from scipy import ndimage as ndi

    shape = (slices, 512, 512)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    # level function of the ellipsoid in mm (its radial distance scaled by the smallest semi-axis)
    radius = np.sqrt(sum(((g + 0.5 - n / 2) * s / a) ** 2 for g, n, s, a in zip(grid, shape, SPACING, SEMI_AXES_MM)))
    level = ((radius - 1.0) * min(SEMI_AXES_MM)).astype(np.float32)
    del radius
    rng = np.random.default_rng(seed)
    raters = np.empty((n_raters, *shape), dtype=bool)
    for p in range(n_raters):
        field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32),
                                    [CORRELATION_MM / s for s in SPACING])
        field *= BORDER_SD_MM / field.std()
        np.less(level + field, 0, out=raters[p])
    return level < 0, raters


def _fuse_in_child(path: str, key: str, device: str) -> dict:
    import torch

    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice

    torch.set_num_threads(1)
    data = np.load(path)
    truth, raters = data["truth"], data["raters"]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    method, options = METHODS[key]
    start = time.perf_counter()
    result = fuse(raters, method, spacing=SPACING, device=device, **options)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ram_gb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2 ** 20,
            "gpu_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None,
            "dice": dice(result.mask, truth), "iterations": result.parameters.get("n_iterations")}


def run(results: dict, slices: int = 120, n_raters: int = 5, device: str = "cpu") -> None:
    truth, raters = make_raters(slices, n_raters)
    context = multiprocessing.get_context("spawn")
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "case.npz")
        np.savez(path, truth=truth, raters=raters)
        for key in METHODS:
            with ProcessPoolExecutor(1, mp_context=context) as child:      # a fresh process per method
                rows[key] = child.submit(_fuse_in_child, path, key, device).result()
    staple_s = rows["staple"]["seconds"]
    volume_l = np.count_nonzero(truth) * np.prod(SPACING) / 1e6
    print(f"fusion of {n_raters} raters of a {volume_l:.2f} l structure, (Z, Y, X) = {truth.shape}, spacing "
          f"{SPACING} mm; Student-t and Gaussian on {device}" + (" (one torch thread)" if device == "cpu" else ""))
    gpu = device == "cuda"
    print(f"{'method':20s} {'time s':>8s} {'/ STAPLE':>9s} {'RAM GB':>7s}" + (f" {'GPU GB':>7s}" if gpu else "")
          + f" {'Dice':>8s} {'iterations':>11s}")
    for key, row in rows.items():
        ratio = row["seconds"] / staple_s
        print(f"{key:20s} {row['seconds']:8.2f} {ratio:9.2f} {row['ram_gb']:7.2f}"
              + (f" {row['gpu_gb']:7.2f}" if gpu else "") + f" {row['dice']:8.4f} {str(row['iterations'] or ''):>11s}")
        results[f"scale_{key}_s"] = round(row["seconds"], 3)
        results[f"scale_{key}_over_staple"] = round(ratio, 3)
        results[f"scale_{key}_ram_gb"] = round(row["ram_gb"], 3)
        results[f"scale_{key}_dice"] = round(row["dice"], 5)
        if gpu:
            results[f"scale_{key}_gpu_gb"] = round(row["gpu_gb"], 3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120, help="number of 1.5 mm slices (default 120)")
    parser.add_argument("--raters", type=int, default=5, help="number of raters (default 5)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the Student-t and Gaussian fits run (default cpu)")
    arguments = parser.parse_args()
    out: dict = {}
    run(out, arguments.slices, arguments.raters, arguments.device)
    print(json.dumps(out, sort_keys=True))
