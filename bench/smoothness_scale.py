"""The spatial prior's scale against the size of what is fused: consensuses with bases ``s`` mm apart.

For each smoothness ``s`` (mm; ``0``: no spatial prior) the Student-t consensus is measured on

* ``balls``: three masks of a ball of radius 4.5, 5, 5.5 and 6 mm (1 mm voxels), shifted by −1, 0 and
  +1 mm along x (:func:`shifted_balls`): the mean fraction of the middle ball's volume the consensus
  keeps, and its Dice to it;
* ``lidc``: 30 LIDC-IDRI nodules (≥ 10 mm, ≥ 3 radiologists) fused from their radiologists only: mean
  Dice to their ≥ 50 % vote and to their strict majority, and the consensus's volume over the vote's;
* ``colin27``: the masks table of ``colin27_fusion_table.py`` (12 cases, one rater with a blob) and its
  speckled scenario with 4 mm of noise: mean Dice to the structure.

Bases much wider than the maps' own transitions pull curved borders inwards (``fusion/spatial_prior.py``);
this is what chose the default (``fusion/consensus.py``, "The smoothness prior's default scale").
Run as ``python bench/smoothness_scale.py [s ...]`` (default ``2 4``); prints a Markdown table and a
final JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BALL_RADII_MM = (4.5, 5.0, 5.5, 6.0)


def shifted_balls(radius_mm: float, shift_mm: float = 1.0, size: int = 40) -> list[np.ndarray]:
    """Three masks of a ball of ``radius_mm`` on a ``size``³ grid of 1 mm voxels, centred in the grid and
    shifted by ``−shift_mm``, 0 and ``+shift_mm`` along x."""
    grid = np.ogrid[:size, :size, :size]
    centre = size / 2
    return [sum((g + 0.5 - c) ** 2 for g, c in zip(grid, (centre, centre, centre + dx))) <= radius_mm ** 2
            for dx in (-shift_mm, 0.0, shift_mm)]


def _options(smoothness: float) -> dict:
    return {"spatial_prior": False} if smoothness == 0 else {"smoothness_mm": smoothness}


def balls_row(smoothness: float) -> dict:
    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice

    volume, overlap = [], []
    for radius in BALL_RADII_MM:
        raters = shifted_balls(radius)
        mask = fuse(raters, "student-t", **_options(smoothness)).mask
        volume.append(mask.sum() / raters[1].sum())
        overlap.append(dice(mask, raters[1]))
    return {"balls_volume": float(np.mean(volume)), "balls_dice": float(np.mean(overlap))}


def lidc_row(smoothness: float, nodules) -> dict:
    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice

    scores = []
    for nodule in nodules:
        masks = np.stack(nodule.masks)
        vote, strict = masks.mean(axis=0) >= 0.5, masks.mean(axis=0) > 0.5
        mask = fuse(list(masks), "student-t", spacing=nodule.geometry.spacing, **_options(smoothness)).mask
        scores.append((dice(mask, vote), dice(mask, strict), mask.sum() / vote.sum()))
    dice_vote, dice_strict, volume = np.mean(scores, axis=0)
    return {"lidc_dice": float(dice_vote), "lidc_dice_strict": float(dice_strict), "lidc_volume": float(volume)}


def colin27_row(smoothness: float, colin27) -> dict:
    from colin27_fusion_table import colin27_table

    options = _options(smoothness)
    masks = colin27_table(colin27=colin27, options=options)["methods"]["student-t"]
    speckled = colin27_table(colin27=colin27, scenario="speckled", noise_mm=4.0, options=options)["methods"]
    return {"colin27_dice": masks["mean_dice"], "colin27_speckled4_dice": speckled["student-t"]["mean_dice"],
            "colin27_speckled4_no_image_dice": speckled["student-t (no image)"]["mean_dice"]}


COLUMNS = {"balls_volume": "balls: volume kept", "balls_dice": "balls: Dice", "lidc_dice": "LIDC: Dice (≥ 50 %)",
           "lidc_dice_strict": "LIDC: Dice (> 50 %)", "lidc_volume": "LIDC: volume / vote",
           "colin27_dice": "Colin27 masks", "colin27_speckled4_dice": "Colin27 speckled 4 mm",
           "colin27_speckled4_no_image_dice": "… no image"}


def smoothness_table(values=(2.0, 4.0)) -> dict:
    from colin27_fusion_table import STRUCTURES

    from SegmentationUncertaintyLib.sample_data import load_colin27, load_lidc_nodules

    nodules = load_lidc_nodules(min_diameter_mm=10.0, min_raters=3, limit=30)
    colin27 = load_colin27(STRUCTURES)
    rows = {}
    for smoothness in values:
        rows[f"{smoothness:g}"] = {**balls_row(smoothness), **lidc_row(smoothness, nodules),
                                  **colin27_row(smoothness, colin27)}
        print(f"smoothness {smoothness:g} mm done", file=sys.stderr, flush=True)
    return rows


def markdown(rows: dict) -> str:
    lines = ["Student-t consensus by smoothness (basis spacing and width, mm; 0 = no spatial prior)", "",
             "| smoothness (mm) | " + " | ".join(COLUMNS.values()) + " |", "| --- " * (len(COLUMNS) + 1) + "|"]
    for smoothness, row in rows.items():
        lines.append(f"| {smoothness} | " + " | ".join(f"{row[key]:.4f}" for key in COLUMNS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    values = tuple(float(v) for v in sys.argv[1:]) or (2.0, 4.0)
    table = smoothness_table(values)
    print(markdown(table))
    print(json.dumps(table, sort_keys=True))
