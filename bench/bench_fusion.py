"""Consensus fusion of 7 raters at 256 x 256 x 104 voxels: Student-t (with spatial prior), Gaussian, SimpleITK
STAPLE and majority vote, timed in the same process; also the Student-t without the spatial prior.

Case: the smooth irregular blob of ``bench_geodesic.py`` (spacing (2.5, 1, 1) mm), 7 raters drawn as GPSSI
samples around it (ω0 = 4 mm², Euclidean mean), one of them with a 9 mm blob added (a local outlier).
Every method gets the raters' masks; the continuous ones turn them into probability maps themselves
(Euclidean signed distances), so their times include that. Keys added to ``results``: ``student_t_s``,
``gaussian_s``, ``staple_s``, ``majority_s``, ``student_t_no_prior_s`` (best of ``rounds``; each round times
every method once, in turn), their ratios to STAPLE (``student_t_over_staple``, ...), each method's Dice to
the blob (``*_dice``) and ``fusion_device``. The continuous methods run on CUDA when torch sees a GPU
(``--device`` to choose); STAPLE and majority vote are SimpleITK's, on the CPU, in both cases.

    python bench/bench_fusion.py [--device cpu|cuda] [--rounds N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best_times  # noqa: E402

N_RATERS = 7


def make_raters(seed: int = 1):
    from bench_geodesic import SPACING, make_case

    from SegmentationUncertaintyLib.gpssi import GPSSISampler

    truth, _ = make_case()
    sampler = GPSSISampler(truth, None, SPACING, omega0=4.0)
    raters = list(sampler.sample(N_RATERS, seed=seed))
    # a local outlier: rater 0 adds a 9 mm ball straddling the border
    z, y, x = np.nonzero(truth)
    corner = np.argmax(x)
    centre = np.array([z[corner], y[corner], x[corner]], dtype=float)
    grid = np.ogrid[tuple(slice(0, n) for n in truth.shape)]
    ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING)) < 9.0 ** 2
    raters[0] = raters[0] | ball
    return truth, raters, SPACING




def run(results: dict, rounds: int = 3, device: str | None = None) -> None:
    import torch

    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    # one torch thread: the fusion is many short torch operations, and on a shared, busy machine torch's
    # 2-thread parallel regions wait for a core at each of them (10-50x slower measured); STAPLE keeps
    # ITK's own threads
    torch.set_num_threads(1)
    try:
        truth, raters, spacing = make_raters()
        stack = np.stack(raters)
        methods = {"student_t": ("student-t", {}), "gaussian": ("gaussian", {}), "staple": ("staple", {}),
                   "majority": ("majority", {}), "student_t_no_prior": ("student-t", {"spatial_prior": False})}
        # fuse returns numpy arrays, so a CUDA fit has finished when the timer stops
        timed = best_times({key: (lambda m=method, o=options: fuse(stack, m, spacing=spacing, device=device, **o))
                            for key, (method, options) in methods.items()}, rounds)
        results["fusion_device"] = device
        rows = []
        for key, (seconds, result) in timed.items():
            results[f"{key}_s"] = round(seconds, 4)
            results[f"{key}_dice"] = round(dice(result.mask, truth), 5)
            rows.append((key, seconds, results[f"{key}_dice"], result.parameters.get("n_iterations")))
        for key, *_ in rows:
            results[f"{key}_over_staple"] = round(results[f"{key}_s"] / results["staple_s"], 3)
        where = torch.cuda.get_device_name() if device == "cuda" else "cpu, torch threads: 1"
        print(f"fusion of {N_RATERS} raters, {truth.shape} voxels, spacing {spacing} mm (Student-t and Gaussian on "
              f"{where}; best of {rounds})")
        print(f"{'method':18s} {'time s':>8s} {'/ STAPLE':>9s} {'Dice':>8s} {'iterations':>11s}")
        for key, seconds, score, iterations in rows:
            ratio = results[f"{key}_over_staple"]
            print(f"{key:18s} {seconds:8.3f} {ratio:9.2f} {score:8.4f} {str(iterations or ''):>11s}")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="where the Student-t and Gaussian fits run (default: cuda if torch sees a GPU)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the best of them is kept")
    arguments = parser.parse_args()
    out: dict = {}
    run(out, arguments.rounds, arguments.device)
    print(json.dumps(out, sort_keys=True))
