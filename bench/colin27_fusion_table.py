"""Local outliers on real MRI structures: GPSSI raters around Colin27 AAL structures, one rater corrupted.

For each of the four structures (left / right hippocampus and thalamus, AAL manual labels on the Colin27
T1) and each seed, five raters are drawn by GPSSI around the structure (calibrated to an inter-sample
DICE of 0.85, geodesic mean on the T1); rater 0 gets a 6 mm ball centred just outside the structure's
border (a local outlier). Three scenarios:

* ``masks`` (:func:`outlier_raters`): the raters are the GPSSI samples (binary masks); the continuous
  methods turn them into maps by geodesic distances on the T1.
* ``maps`` (:func:`outlier_maps`): the raters are probabilistic, like networks: rater ``p``'s map is
  ``sigmoid(−φ_p / 1 mm)`` of its GPSSI level function ``φ_p`` (its mask is the 0.5 level), and rater 0
  is certain (0.999) of the structure in the ball. STAPLE and majority vote see the maps' 0.5 levels.
  Besides the defaults, the continuous methods run with the logit link and no spatial prior
  (``"(logit, flat)"``): logits of these maps are the level functions themselves.
* ``speckled`` (:func:`speckled_raters`): masks of the level functions plus independent noise of
  ``noise_mm`` per voxel (default 2 mm), so that each rater's border is speckled; the continuous methods
  run with the image (geodesic maps) and without it (``"(no image)"``, Euclidean maps).
* ``clean``: the ``masks`` scenario without the ball (no outlier), to tell what the outlier costs each method
  from what the raters' masks allow them.

The table gives per method the mean Dice and HD95 (mm) to the structure over all cases, how often it is
the best, and the mean Dice of the raters themselves. One case is noisy (the ranking of the methods on a
single case changes with the seed); the means over cases are what the tests read.

Run as ``python bench/colin27_fusion_table.py [n_seeds] [masks|maps|speckled|clean] [noise_mm]``; prints a
Markdown table and a final JSON line. :func:`colin27_table` is what ``Testing/Python/test_fusion_real.py`` checks.
"""

from __future__ import annotations

import json
import sys

import numpy as np

STRUCTURES = ("Hippocampus_L", "Hippocampus_R", "Thalamus_L", "Thalamus_R")
LOGIT_FLAT = {"link": "logit", "spatial_prior": False}
NO_IMAGE = {"image": None}
# method name -> (fuse's method, its options); the continuous ones get the image for masks unless told not to
SCENARIOS = {
    "masks": {"student-t": ("student-t", {}), "gaussian": ("gaussian", {}), "staple": ("staple", {}),
              "majority": ("majority", {})},
    "maps": {"student-t": ("student-t", {}), "gaussian": ("gaussian", {}),
             "student-t (logit, flat)": ("student-t", LOGIT_FLAT), "gaussian (logit, flat)": ("gaussian", LOGIT_FLAT),
             "staple": ("staple", {}), "majority": ("majority", {})},
    "speckled": {"student-t": ("student-t", {}), "gaussian": ("gaussian", {}),
                 "student-t (no image)": ("student-t", NO_IMAGE), "gaussian (no image)": ("gaussian", NO_IMAGE),
                 "staple": ("staple", {}), "majority": ("majority", {})},
}
SCENARIOS["clean"] = SCENARIOS["masks"]
METHODS = tuple(SCENARIOS["masks"])


def _border_ball(truth: np.ndarray, spacing, seed: int, ball_mm: float) -> np.ndarray:
    """A ball of radius ``ball_mm`` centred just outside ``truth``'s border, at a point drawn with ``seed``."""
    from SegmentationUncertaintyLib.geodesic import signed_euclidean_distance

    distance = signed_euclidean_distance(truth, spacing)
    border = np.argwhere((distance > 0) & (distance < 1.5))
    centre = border[np.random.default_rng(seed).integers(len(border))]
    grid = np.ogrid[tuple(slice(0, n) for n in truth.shape)]
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) < ball_mm ** 2


def _sampler(truth, image, spacing, target_dice):
    from SegmentationUncertaintyLib.gpssi import GPSSISampler

    sampler = GPSSISampler(truth, image, spacing)
    sampler.calibrate(target_dice, seed=0)
    return sampler


def outlier_raters(truth: np.ndarray, image: np.ndarray, spacing, seed: int, n_raters: int = 5,
                   target_dice: float = 0.85, ball_mm: float = 6.0):
    """``n_raters`` GPSSI samples around ``truth``; rater 0 with a ball of radius ``ball_mm`` centred just
    outside the border (at a point drawn with ``seed``). Returns ``(raters, blob)``, ``blob`` the voxels
    the ball added to rater 0."""
    raters = list(_sampler(truth, image, spacing, target_dice).sample(n_raters, seed=seed))
    ball = _border_ball(truth, spacing, seed, ball_mm)
    blob = ball & ~raters[0]
    raters[0] = raters[0] | ball
    return raters, blob


def outlier_maps(truth: np.ndarray, image: np.ndarray, spacing, seed: int, n_raters: int = 5,
                 target_dice: float = 0.85, ball_mm: float = 6.0, scale_mm: float = 1.0,
                 certainty: float = 0.999):
    """Probabilistic raters: ``sigmoid(−φ / scale_mm)`` of ``n_raters`` GPSSI level functions around
    ``truth`` (the same draws as :func:`outlier_raters`' masks); rater 0 says ``certainty`` (at least) in a
    ball of radius ``ball_mm`` centred just outside the border. Returns ``(maps, blob)``: ``(P, *shape)``
    float32 structure probabilities, and the voxels the ball moved to rater 0's structure side."""
    levels = _sampler(truth, image, spacing, target_dice).level_functions(n_raters, seed=seed)
    maps = 1.0 / (1.0 + np.exp(np.clip(levels / scale_mm, -80.0, 80.0)))
    ball = _border_ball(truth, spacing, seed, ball_mm)
    blob = ball & (levels[0] >= 0)
    maps[0][ball] = np.maximum(maps[0][ball], certainty)
    return maps.astype(np.float32), blob


def speckled_raters(truth: np.ndarray, image: np.ndarray, spacing, seed: int, noise_mm: float = 2.0,
                    n_raters: int = 5, target_dice: float = 0.85, ball_mm: float = 6.0):
    """Masks ``φ_p + noise_mm · ε < 0`` of ``n_raters`` GPSSI level functions ``φ_p`` around ``truth`` with
    independent standard normal ``ε`` per voxel (drawn with ``seed``); rater 0 with the ball of
    :func:`outlier_raters`. Returns ``(raters, blob)``."""
    levels = _sampler(truth, image, spacing, target_dice).level_functions(n_raters, seed=seed)
    noise = np.random.default_rng(seed).standard_normal(levels.shape).astype(np.float32)
    raters = list(levels + noise_mm * noise < 0)
    ball = _border_ball(truth, spacing, seed, ball_mm)
    blob = ball & ~raters[0]
    raters[0] = raters[0] | ball
    return raters, blob


def colin27_table(seeds=(10, 20, 30), structures=STRUCTURES, colin27=None, progress=None,
                  scenario: str = "masks", noise_mm: float = 2.0, options: dict | None = None) -> dict:
    """Per-method mean Dice and HD95 to the structure over ``structures`` × ``seeds`` cases; ``options``
    (e.g. ``{"smoothness_mm": 4.0}``) go to every Student-t and Gaussian fusion."""
    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice, hausdorff95
    from SegmentationUncertaintyLib.sample_data import load_colin27

    methods = SCENARIOS[scenario]
    colin27 = load_colin27(structures) if colin27 is None else colin27
    scores = {m: {"dice": [], "hd95": []} for m in methods}
    rater_dice, cases = [], []
    for structure in structures:
        case = colin27.crop(8.0, structures=[structure])
        truth, image, spacing = case.masks[structure], case.image, case.spacing
        for seed in seeds:
            if scenario in ("masks", "clean"):
                raters, _ = outlier_raters(truth, image, spacing, seed, ball_mm=6.0 if scenario == "masks" else 0.0)
                rater_masks = raters
            elif scenario == "speckled":
                raters, _ = speckled_raters(truth, image, spacing, seed, noise_mm)
                rater_masks = raters
            else:
                raters, _ = outlier_maps(truth, image, spacing, seed)
                rater_masks = raters > 0.5
            rater_dice.append(np.mean([dice(r, truth) for r in rater_masks]))
            for name, (method, method_options) in methods.items():
                continuous = method in ("student-t", "gaussian")
                method_options = {"image": image if continuous and scenario != "maps" else None,
                                  **((options or {}) if continuous else {}), **method_options}
                result = fuse(raters, method, spacing=spacing, kind="probability" if scenario == "maps" else "mask",
                              **method_options)
                scores[name]["dice"].append(dice(result.mask, truth))
                scores[name]["hd95"].append(hausdorff95(result.mask, truth, spacing))
            cases.append(f"{structure}/{seed}")
            if progress is not None:
                progress(len(cases), len(structures) * len(seeds), cases[-1])
    dices = np.array([scores[m]["dice"] for m in methods])
    distances = np.array([scores[m]["hd95"] for m in methods])
    table = {method: {"mean_dice": float(dices[i].mean()), "mean_hd95_mm": float(distances[i].mean()),
                      "best_dice": int(np.sum(dices[i] >= dices.max(axis=0) - 1e-12)),
                      "best_hd95": int(np.sum(distances[i] <= distances.min(axis=0) + 1e-12))}
             for i, method in enumerate(methods)}
    return {"scenario": scenario, "noise_mm": noise_mm if scenario == "speckled" else None, "n_cases": len(cases),
            "cases": cases, "methods": table, "mean_rater_dice": float(np.mean(rater_dice)),
            "per_case": {m: {k: [round(float(v), 5) for v in values] for k, values in scores[m].items()}
                         for m in methods}}


def markdown(table: dict) -> str:
    raters = {"masks": "masks", "clean": "masks", "maps": "probability maps (sigmoid of the level functions)",
              "speckled": f"masks speckled by {table['noise_mm']} mm of noise per voxel"}[table["scenario"]]
    outlier = "no outlier" if table["scenario"] == "clean" else "one with a 6 mm blob"
    lines = [f"Colin27 AAL structures, {table['n_cases']} cases: 5 GPSSI raters' {raters} (DICE 0.85), {outlier}; "
             f"mean rater Dice to the truth {table['mean_rater_dice']:.4f}",
             "", "| method | mean Dice | mean HD95 (mm) | best Dice (n) | best HD95 (n) |",
             "| --- | --- | --- | --- | --- |"]
    for method, row in table["methods"].items():
        lines.append(f"| {method} | {row['mean_dice']:.4f} | {row['mean_hd95_mm']:.3f} | {row['best_dice']} | "
                     f"{row['best_hd95']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    scenario = sys.argv[2] if len(sys.argv) > 2 else "masks"
    if scenario not in SCENARIOS:
        sys.exit(f"scenario must be one of {tuple(SCENARIOS)}, got {scenario!r}")
    noise = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    result = colin27_table(seeds=tuple(10 * (i + 1) for i in range(count)), scenario=scenario, noise_mm=noise,
                           progress=lambda i, n, name: print(f"\r{i}/{n} {name}", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    print(markdown(result))
    print(json.dumps(result["methods"], sort_keys=True))
