"""Signed geodesic distance (GPSSI mean) against SimpleITK's Maurer transform, timed in the same process.

Case: 256 x 256 x 104 voxels, spacing (2.5, 1, 1) mm (z, y, x), a smooth irregular blob inside an image
with a bright rim, a slow intensity drift and Gaussian noise. Keys added to ``results``:
``geodesic_s_256`` (2 sweep iterations, default γ, h = 1 mm), ``maurer_s_256`` (one
``SignedMaurerDistanceMap``), ``geodesic_over_maurer``, ``euclidean_s_256`` (our exact γ = 0 path), and
``geodesic_1thread_s_256`` (torch on one thread: on a loaded machine torch's 2-thread parallel regions
wait for a core, which slows the many per-slice operations far more than it slows Maurer).
Several raters of one image (fusion with an image): 7 masks (the blob grown or shrunk by 0-3 voxels, and
shifted) on the 52 x 128 x 128 box around it, one ``signed_geodesic_distance`` call per mask against one
``signed_geodesic_distances`` call: ``geodesic_7_masks_loop_s``, ``geodesic_7_masks_batched_s`` and
``geodesic_batched_speedup`` (the results are identical).
Each time is the best of ``repeats`` runs (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best_time  # noqa: E402

SHAPE = (104, 256, 256)
SPACING = (2.5, 1.0, 1.0)


def make_case(shape=SHAPE, spacing=SPACING, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    centre = np.asarray(shape, dtype=np.float32) / 2
    radius = np.sqrt(((z - centre[0]) * spacing[0] / 40) ** 2 + ((y - centre[1]) * spacing[1] / 60) ** 2
                     + ((x - centre[2]) * spacing[2] / 50) ** 2)
    radius += 0.15 * np.sin(x / 9) * np.cos(y / 13)
    mask = radius < 1.0
    image = 100 + 60 * (radius < 1.1) + 10 * np.sin(z / 5) + rng.normal(0, 8, shape)
    return mask, image.astype(np.float32)




def run(results: dict, repeats: int = 3) -> None:
    import SimpleITK as sitk
    import torch

    from scipy import ndimage as ndi

    from SegmentationUncertaintyLib.geodesic import (signed_euclidean_distance, signed_geodesic_distance,
                                                     signed_geodesic_distances)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    mask, image = make_case()
    itk_mask = sitk.GetImageFromArray(mask.astype(np.uint8))
    itk_mask.SetSpacing(SPACING[::-1])

    def maurer():
        sitk.SignedMaurerDistanceMap(itk_mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)

    maurer_s = best_time(maurer, repeats)[0]
    geodesic_s = best_time(lambda: signed_geodesic_distance(mask, image, SPACING), repeats)[0]
    euclidean_s = best_time(lambda: signed_euclidean_distance(mask, SPACING), repeats)[0]
    torch.set_num_threads(1)
    geodesic_1thread_s = best_time(lambda: signed_geodesic_distance(mask, image, SPACING), repeats)[0]
    box = (slice(26, 78), slice(64, 192), slice(64, 192))
    blob, box_image = mask[box], image[box]
    masks = np.stack([blob, ndi.binary_dilation(blob), ndi.binary_dilation(blob, iterations=3),
                      ndi.binary_erosion(blob), ndi.binary_erosion(blob, iterations=2), np.roll(blob, 2, axis=2),
                      np.roll(blob, -2, axis=1)])
    loop_s = best_time(lambda: [signed_geodesic_distance(m, box_image, SPACING) for m in masks], repeats)[0]
    batched_s = best_time(lambda: signed_geodesic_distances(masks, box_image, SPACING), repeats)[0]
    torch.set_num_threads(threads)
    maurer_again = best_time(maurer, repeats)[0]  # the machine drifts: take the better of two baselines
    maurer_s = min(maurer_s, maurer_again)
    ratio = geodesic_s / maurer_s
    print(f"{'256x256x104, spacing (2.5, 1, 1) mm':40s} {'seconds':>8s} {'/ Maurer':>9s}")
    print(f"{'SimpleITK SignedMaurerDistanceMap':40s} {maurer_s:8.3f} {1.0:9.2f}")
    print(f"{'signed_euclidean_distance (gamma = 0)':40s} {euclidean_s:8.3f} {euclidean_s / maurer_s:9.2f}")
    print(f"{'signed_geodesic_distance (2 iterations)':40s} {geodesic_s:8.3f} {ratio:9.2f}")
    print(f"{'  the same, torch on 1 thread':40s} {geodesic_1thread_s:8.3f} {geodesic_1thread_s / maurer_s:9.2f}")
    print(f"7 masks on a 52x128x128 box (torch on 1 thread): one call each {loop_s:.3f} s, together {batched_s:.3f} s "
          f"({loop_s / batched_s:.2f}x faster)")
    results.update(geodesic_s_256=round(geodesic_s, 4), maurer_s_256=round(maurer_s, 4),
                   geodesic_1thread_s_256=round(geodesic_1thread_s, 4),
                   euclidean_s_256=round(euclidean_s, 4), geodesic_over_maurer=round(ratio, 2),
                   geodesic_7_masks_loop_s=round(loop_s, 4), geodesic_7_masks_batched_s=round(batched_s, 4),
                   geodesic_batched_speedup=round(loop_s / batched_s, 2))


if __name__ == "__main__":
    results: dict = {}
    run(results)
    print(json.dumps(results, sort_keys=True))
