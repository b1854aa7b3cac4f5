"""Local outliers on real MRI structures: GPSSI raters around Colin27 AAL structures, one rater corrupted.

For each of the four structures (left / right hippocampus and thalamus, AAL manual labels on the Colin27
T1) and each seed, five raters are drawn by GPSSI around the structure (calibrated to an inter-sample
DICE of 0.85, geodesic mean on the T1); rater 0 gets a 6 mm ball centred just outside the structure's
border (a local outlier). Each method fuses the five masks (the continuous ones with the image); the
table gives per method the mean Dice and HD95 (mm) to the structure over all cases, how often it is the
best, and the mean Dice of the raters themselves. One case is noisy (the ranking of the methods on a
single case changes with the seed); the means over cases are what the ordering test reads.

Run as ``python bench/colin27_fusion_table.py [n_seeds]``; prints a Markdown table and a final JSON line.
:func:`colin27_table` is what ``Testing/Python/test_fusion_real.py`` checks.
"""

from __future__ import annotations

import json
import sys

import numpy as np

METHODS = ("student-t", "gaussian", "staple", "majority")
STRUCTURES = ("Hippocampus_L", "Hippocampus_R", "Thalamus_L", "Thalamus_R")


def outlier_raters(truth: np.ndarray, image: np.ndarray, spacing, seed: int, n_raters: int = 5,
                   target_dice: float = 0.85, ball_mm: float = 6.0):
    """``n_raters`` GPSSI samples around ``truth``; rater 0 with a ball of radius ``ball_mm`` centred just
    outside the border (at a point drawn with ``seed``). Returns ``(raters, blob)``, ``blob`` the voxels
    the ball added to rater 0."""
    from SegmentationUncertaintyLib.geodesic import signed_euclidean_distance
    from SegmentationUncertaintyLib.gpssi import GPSSISampler

    sampler = GPSSISampler(truth, image, spacing)
    sampler.calibrate(target_dice, seed=0)
    raters = list(sampler.sample(n_raters, seed=seed))
    distance = signed_euclidean_distance(truth, spacing)
    border = np.argwhere((distance > 0) & (distance < 1.5))
    centre = border[np.random.default_rng(seed).integers(len(border))]
    grid = np.ogrid[tuple(slice(0, n) for n in truth.shape)]
    ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) < ball_mm ** 2
    blob = ball & ~raters[0]
    raters[0] = raters[0] | ball
    return raters, blob


def colin27_table(seeds=(10, 20, 30), structures=STRUCTURES, colin27=None, progress=None) -> dict:
    """Per-method mean Dice and HD95 to the structure over ``structures`` × ``seeds`` cases."""
    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice, hausdorff95
    from SegmentationUncertaintyLib.sample_data import load_colin27

    colin27 = load_colin27(structures) if colin27 is None else colin27
    scores = {m: {"dice": [], "hd95": []} for m in METHODS}
    rater_dice, cases = [], []
    for structure in structures:
        case = colin27.crop(8.0, structures=[structure])
        truth, image, spacing = case.masks[structure], case.image, case.spacing
        for seed in seeds:
            raters, _ = outlier_raters(truth, image, spacing, seed)
            rater_dice.append(np.mean([dice(r, truth) for r in raters]))
            for method in METHODS:
                result = fuse(raters, method, spacing=spacing,
                              image=image if method in ("student-t", "gaussian") else None)
                scores[method]["dice"].append(dice(result.mask, truth))
                scores[method]["hd95"].append(hausdorff95(result.mask, truth, spacing))
            cases.append(f"{structure}/{seed}")
            if progress is not None:
                progress(len(cases), len(structures) * len(seeds), cases[-1])
    dices = np.array([scores[m]["dice"] for m in METHODS])
    distances = np.array([scores[m]["hd95"] for m in METHODS])
    table = {method: {"mean_dice": float(dices[i].mean()), "mean_hd95_mm": float(distances[i].mean()),
                      "best_dice": int(np.sum(dices[i] >= dices.max(axis=0) - 1e-12)),
                      "best_hd95": int(np.sum(distances[i] <= distances.min(axis=0) + 1e-12))}
             for i, method in enumerate(METHODS)}
    return {"n_cases": len(cases), "cases": cases, "methods": table, "mean_rater_dice": float(np.mean(rater_dice)),
            "per_case": {m: {k: [round(float(v), 5) for v in values] for k, values in scores[m].items()}
                         for m in METHODS}}


def markdown(table: dict) -> str:
    lines = [f"Colin27 AAL structures, {table['n_cases']} cases: 5 GPSSI raters (DICE 0.85), one with a 6 mm "
             f"blob; mean rater Dice to the truth {table['mean_rater_dice']:.4f}",
             "", "| method | mean Dice | mean HD95 (mm) | best Dice (n) | best HD95 (n) |",
             "| --- | --- | --- | --- | --- |"]
    for method, row in table["methods"].items():
        lines.append(f"| {method} | {row['mean_dice']:.4f} | {row['mean_hd95_mm']:.3f} | {row['best_dice']} | "
                     f"{row['best_hd95']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    result = colin27_table(seeds=tuple(10 * (i + 1) for i in range(count)),
                           progress=lambda i, n, name: print(f"\r{i}/{n} {name}", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    print(markdown(result))
    print(json.dumps(result["methods"], sort_keys=True))
