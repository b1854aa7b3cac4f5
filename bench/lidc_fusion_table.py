"""Real raters: LIDC-IDRI nodules (≥ 10 mm, ≥ 3 radiologists) with one injected corrupted rater.

For each nodule the truth is the radiologists' majority vote (voxels at least half of them include, as
pylidc's 50 % consensus and the paper's ground truth); a fifth rater is added: a copy of the first
radiologist with a ball added on its border (radius half the nodule's equivalent radius, at a border
point drawn with a fixed seed), a local outlier. Each method fuses the radiologists plus that rater;
the table gives, per method, the mean Dice and the mean / median HD95 (mm) to the truth, and how often
it is the best. Run as ``python bench/lidc_fusion_table.py [n_nodules]``; prints a Markdown table and
a final JSON line. :func:`lidc_table` is what ``Testing/Python/test_fusion_lidc.py`` checks.

The truth above is a vote of the raters being fused, so it is not independent of them. ``python bench/lidc_fusion_table.py
[n_nodules] held-out [add|replace]`` (:func:`held_out_table`) takes each radiologist in turn as the truth and fuses
the others plus a corrupted copy of the first of them (``add``), or the others with the first of them corrupted
(``replace``); the Student-t and Gaussian models also run without the spatial prior. Measured on 30 nodules
(117 cases), mean Dice to the held-out radiologist: ``add`` majority 0.816, STAPLE 0.813, Gaussian 0.812,
Student-t 0.805; ``replace`` Gaussian 0.830, majority and STAPLE 0.829, Student-t 0.827.

With four radiologists "at least half" counts the voxels that two include and two exclude (10–25 % of
the truth's volume on these nodules) as inside. That choice decides the ranking: methods that include
more (STAPLE) gain, methods that follow the strict majority lose. So the table also gives the mean Dice
and HD95 to the strict majority (more than half), ``*_strict`` in the JSON.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

METHODS = ("student-t", "gaussian", "staple", "majority")


def corrupt(mask: np.ndarray, spacing, seed: int) -> np.ndarray:
    """``mask`` with a ball (radius half the equivalent radius, mm) added at a random border point."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    border = mask & ~ndi.binary_erosion(mask)
    points = np.argwhere(border)
    centre = points[rng.integers(len(points))]
    radius = 0.5 * (3 * mask.sum() * float(np.prod(spacing)) / (4 * np.pi)) ** (1 / 3)
    grid = np.ogrid[tuple(slice(0, n) for n in mask.shape)]
    ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius ** 2
    return mask | ball


def lidc_table(n_nodules: int = 30, seed: int = 0, progress=None) -> dict:
    """Per-method mean Dice and HD95 to the radiologists' majority over ``n_nodules`` LIDC nodules."""
    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice, hausdorff95
    from SegmentationUncertaintyLib.sample_data import load_lidc_nodules

    nodules = load_lidc_nodules(min_diameter_mm=10.0, min_raters=3, limit=n_nodules)
    if len(nodules) < n_nodules:
        raise ValueError(f"only {len(nodules)} LIDC nodules of at least 10 mm with 3 raters are available")
    scores = {m: {"dice": [], "hd95": [], "dice_strict": [], "hd95_strict": []} for m in METHODS}
    seconds = {m: 0.0 for m in METHODS}
    for index, nodule in enumerate(nodules):
        spacing = nodule.geometry.spacing
        masks = np.stack(nodule.masks)
        truth = masks.mean(axis=0) >= 0.5
        strict = masks.mean(axis=0) > 0.5
        raters = list(masks) + [corrupt(masks[0], spacing, seed + index)]
        for method in METHODS:
            start = time.perf_counter()
            result = fuse(raters, method, spacing=spacing)
            seconds[method] += time.perf_counter() - start
            scores[method]["dice"].append(dice(result.mask, truth))
            scores[method]["hd95"].append(hausdorff95(result.mask, truth, spacing))
            scores[method]["dice_strict"].append(dice(result.mask, strict))
            scores[method]["hd95_strict"].append(hausdorff95(result.mask, strict, spacing))
        if progress is not None:
            progress(index + 1, len(nodules), nodule.id)
    dices = np.array([scores[m]["dice"] for m in METHODS])
    distances = np.array([scores[m]["hd95"] for m in METHODS])
    table = {}
    for i, method in enumerate(METHODS):
        table[method] = {
            "mean_dice": float(dices[i].mean()), "mean_hd95_mm": float(distances[i].mean()),
            "median_hd95_mm": float(np.median(distances[i])),
            "best_dice": int(np.sum(dices[i] >= dices.max(axis=0) - 1e-12)),
            "best_hd95": int(np.sum(distances[i] <= distances.min(axis=0) + 1e-12)),
            "mean_dice_strict": float(np.mean(scores[method]["dice_strict"])),
            "mean_hd95_mm_strict": float(np.mean(scores[method]["hd95_strict"])),
            "seconds": round(seconds[method], 2)}
    return {"n_nodules": len(nodules), "ids": [n.id for n in nodules], "methods": table,
            "per_nodule": {m: {k: [round(float(v), 5) for v in values] for k, values in scores[m].items()}
                           for m in METHODS}}


HELD_OUT_METHODS = {"student-t": ("student-t", {}), "student-t (no prior)": ("student-t", {"spatial_prior": False}),
                    "gaussian": ("gaussian", {}), "gaussian (no prior)": ("gaussian", {"spatial_prior": False}),
                    "staple": ("staple", {}), "majority": ("majority", {})}


def held_out_table(n_nodules: int = 30, inject: str = "add", seed: int = 0, progress=None) -> dict:
    """Per-method mean Dice and HD95 to a held-out radiologist, each radiologist of each nodule in turn."""
    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice, hausdorff95
    from SegmentationUncertaintyLib.sample_data import load_lidc_nodules

    if inject not in ("add", "replace"):
        raise ValueError(f"inject must be 'add' or 'replace', got {inject!r}")
    nodules = load_lidc_nodules(min_diameter_mm=10.0, min_raters=3, limit=n_nodules)
    scores = {m: {"dice": [], "hd95": []} for m in HELD_OUT_METHODS}
    for index, nodule in enumerate(nodules):
        spacing = nodule.geometry.spacing
        masks = list(nodule.masks)
        for held in range(len(masks)):
            others = masks[:held] + masks[held + 1:]
            corrupted = corrupt(others[0], spacing, seed + 100 * index + held)
            raters = others + [corrupted] if inject == "add" else [corrupted] + others[1:]
            for name, (method, options) in HELD_OUT_METHODS.items():
                result = fuse(raters, method, spacing=spacing, **options)
                scores[name]["dice"].append(dice(result.mask, masks[held]))
                scores[name]["hd95"].append(hausdorff95(result.mask, masks[held], spacing))
        if progress is not None:
            progress(index + 1, len(nodules), nodule.id)
    table = {name: {"mean_dice": float(np.mean(s["dice"])), "mean_hd95_mm": float(np.mean(s["hd95"])),
                    "median_hd95_mm": float(np.median(s["hd95"]))} for name, s in scores.items()}
    return {"n_nodules": len(nodules), "n_cases": len(scores["majority"]["dice"]), "inject": inject,
            "methods": table}


def markdown_held_out(table: dict) -> str:
    how = "plus a corrupted copy of one" if table["inject"] == "add" else "one of them corrupted"
    lines = [f"LIDC-IDRI, {table['n_nodules']} nodules, {table['n_cases']} cases: each radiologist in turn is the "
             f"truth; the others are fused, {how}",
             "", "| method | mean Dice | mean HD95 (mm) | median HD95 (mm) |", "| --- | --- | --- | --- |"]
    for method, row in table["methods"].items():
        lines.append(f"| {method} | {row['mean_dice']:.4f} | {row['mean_hd95_mm']:.3f} | {row['median_hd95_mm']:.3f} |")
    return "\n".join(lines)


def markdown(table: dict) -> str:
    lines = [f"LIDC-IDRI, {table['n_nodules']} nodules (>= 10 mm, >= 3 radiologists) + 1 corrupted rater; "
             "truth = radiologists' majority",
             "", "| method | mean Dice | mean HD95 (mm) | median HD95 (mm) | best Dice (n) | best HD95 (n) | "
             "Dice, strict majority | HD95 (mm), strict majority | time (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, row in table["methods"].items():
        lines.append(f"| {method} | {row['mean_dice']:.4f} | {row['mean_hd95_mm']:.3f} | {row['median_hd95_mm']:.3f} | "
                     f"{row['best_dice']} | {row['best_hd95']} | {row['mean_dice_strict']:.4f} | "
                     f"{row['mean_hd95_mm_strict']:.3f} | {row['seconds']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    show = lambda i, n, name: print(f"\r{i}/{n} {name}", end="", file=sys.stderr, flush=True)  # noqa: E731
    held_out = len(sys.argv) > 2 and sys.argv[2] == "held-out"
    if held_out:
        result = held_out_table(count, sys.argv[3] if len(sys.argv) > 3 else "add", progress=show)
    else:
        result = lidc_table(count, progress=show)
    print(file=sys.stderr)
    print(markdown_held_out(result) if held_out else markdown(result))
    print(json.dumps({m: {k: v for k, v in row.items()} for m, row in result["methods"].items()}, sort_keys=True))
