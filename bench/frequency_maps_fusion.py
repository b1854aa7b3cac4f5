"""Fusion of samplers' frequency maps: which link and prior for probabilistic raters whose maps are mostly 0 or 1.

The web panel's probabilistic raters are the samplers' frequency maps (the fraction of a sampler's samples
that contain each voxel). With a few samples most voxels of the band are exactly 0 or 1, unlike a network's
softmax output; the logit link then sees ±13.8 (its clip at 1e-6) beside moderate values. Case: the MNI152
lateral ventricles (the web app's default case) cropped with a 10 mm margin; raters: the frequency maps of
``n_samples`` samples (seed 1) of the shipped networks SSN, PHiSeg and MC-dropout U-Net, which sample around
the reference, and separately GPSSI (DICE 0.85) and the log-odds baseline. Dice of each fusion to the
reference, with and without the smoothness prior, for both links, and each Student-t fit's time as a ratio to
that of the square-root fit without the prior (same run).

Run as ``python bench/frequency_maps_fusion.py [n_samples]`` (default 10); prints a Markdown table and a final
JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

RATER_SETS = {"networks": ("ssn", "phiseg", "mc-dropout"), "gpssi + log-odds": ("gpssi", "logodds")}
VARIANTS = {"sqrt, prior": {"link": "sqrt"}, "logit, prior": {"link": "logit"},
            "sqrt, flat": {"link": "sqrt", "spatial_prior": False}, "logit, flat": {"link": "logit", "spatial_prior": False}}


def frequency_map(source: str, reference, image, spacing, n_samples: int) -> np.ndarray:
    from SegmentationUncertaintyLib.metrics import SampleStatistics
    from SegmentationUncertaintyLib.samplers import create_sampler

    sampler = create_sampler(source, reference, image, spacing)
    if source == "gpssi":
        sampler.calibrate(0.85, seed=0)
    stats = SampleStatistics(spacing)
    for sample in sampler.sample(n_samples, seed=1):
        stats.update(sample)
    return stats.frequency.astype(np.float32)


def frequency_table(n_samples: int = 10) -> dict:
    from SegmentationUncertaintyLib.fusion import fuse
    from SegmentationUncertaintyLib.metrics import dice
    from SegmentationUncertaintyLib.sample_data import load_mni152

    case = load_mni152().crop(10.0)
    reference, image, spacing = case.masks["lateral_ventricles"], case.image, case.spacing
    rows, times = {}, {}
    for set_name, sources in RATER_SETS.items():
        maps = np.stack([frequency_map(s, reference, image, spacing, n_samples) for s in sources])
        row = {"mean frequency >= 0.5": dice(maps.mean(axis=0) >= 0.5, reference)}
        seconds = {}
        for method in ("student-t", "gaussian"):
            for variant, options in VARIANTS.items():
                start = time.perf_counter()
                result = fuse(maps, method, spacing=spacing, kind="probability", **options)
                if method == "student-t":
                    seconds[variant] = (time.perf_counter() - start, result.parameters["n_iterations"])
                row[f"{method} ({variant})"] = dice(result.mask, reference)
        rows[set_name] = {k: round(float(v), 4) for k, v in row.items()}
        flat = seconds["sqrt, flat"][0]
        times[set_name] = {variant: {"ratio": round(s / flat, 2), "iterations": n}
                           for variant, (s, n) in seconds.items()}
    return {"n_samples": n_samples, "rows": rows, "student_t_time_to_sqrt_flat": times}


def markdown(table: dict) -> str:
    columns = list(next(iter(table["rows"].values())))
    lines = [f"MNI152 lateral ventricles: Dice to the reference of fusions of the samplers' frequency maps "
             f"({table['n_samples']} samples each)", "", "| raters | " + " | ".join(columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for name, row in table["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    lines += ["", "Student-t fit: time as a ratio to the square-root fit without the prior (iterations)", "",
              "| raters | " + " | ".join(VARIANTS) + " |", "| --- |" + " --- |" * len(VARIANTS)]
    for name, row in table["student_t_time_to_sqrt_flat"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[v]['ratio']:.2f} ({row[v]['iterations']})" for v in VARIANTS)
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    result = frequency_table(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    print(markdown(result))
    print(json.dumps(result))
