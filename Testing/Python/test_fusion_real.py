"""Consensus fusion on a real MRI structure: GPSSI raters around the Colin27 left hippocampus (AAL manual
label, cropped), one of them corrupted by a blob on its border (a local outlier)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.stats import mannwhitneyu

from SegmentationUncertaintyLib.fusion import fuse
from SegmentationUncertaintyLib.geodesic import signed_euclidean_distance
from SegmentationUncertaintyLib.gpssi import GPSSISampler
from SegmentationUncertaintyLib.metrics import dice, hausdorff95

METHODS = ("student-t", "gaussian", "staple", "majority")


@pytest.fixture(scope="module")
def outlier_case(colin27):
    case = colin27.crop(8.0, structures=["Hippocampus_L"])
    truth, image, spacing = case.masks["Hippocampus_L"], case.image, case.spacing
    sampler = GPSSISampler(truth, image, spacing)
    sampler.calibrate(0.85, seed=0)
    raters = list(sampler.sample(5, seed=10))
    # rater 0 adds a 6 mm ball centred just outside the truth's border
    distance = signed_euclidean_distance(truth, spacing)
    border = np.argwhere((distance > 0) & (distance < 1.5))
    centre = border[np.random.default_rng(0).integers(len(border))]
    grid = np.ogrid[tuple(slice(0, n) for n in truth.shape)]
    ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) < 6.0 ** 2
    blob = ball & ~raters[0]
    raters[0] = raters[0] | ball
    results = {m: fuse(raters, m, spacing=spacing, image=image if m in ("student-t", "gaussian") else None)
               for m in METHODS}
    scores = {m: (dice(r.mask, truth), hausdorff95(r.mask, truth, spacing)) for m, r in results.items()}
    print("\nColin27 hippocampus, 5 GPSSI raters (one with a 6 mm blob): Dice / HD95 (mm) to the truth")
    for m, (d, h) in scores.items():
        print(f"  {m:10s} {d:.4f} {h:.3f}")
    return dict(truth=truth, raters=raters, blob=blob, spacing=spacing, results=results, scores=scores)


@pytest.mark.slow
def test_student_t_beats_the_gaussian_model_and_rejects_the_blob(outlier_case):
    scores, results, truth = outlier_case["scores"], outlier_case["results"], outlier_case["truth"]
    assert scores["student-t"][0] > scores["gaussian"][0]
    assert scores["student-t"][1] <= scores["gaussian"][1]
    # the blob does not enter the consensus; the consensus stays within 1 % Dice of majority vote
    far_blob = outlier_case["blob"] & ~ndi.binary_dilation(truth, iterations=2)
    assert not (results["student-t"].mask & far_blob).any()
    assert scores["student-t"][0] > scores["majority"][0] - 0.01
    assert min(d for d, _ in scores.values()) > 0.9


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="does not hold yet: on this and similar cases STAPLE or majority vote is "
                   "0.1-1 % Dice better and the HD95s tie at one voxel (the estimated ν is small, so the Student-t "
                   "consensus follows the closest raters, much like a vote)")
def test_student_t_beats_every_baseline(outlier_case):
    scores = outlier_case["scores"]
    for method in ("gaussian", "staple", "majority"):
        assert scores["student-t"][0] > scores[method][0], method
        assert scores["student-t"][1] < scores[method][1], method


@pytest.mark.slow
def test_tau_of_the_corrupted_rater_marks_the_blob(outlier_case):
    """τ of the corrupted rater separates the blob from the rest of its boundary band (|d| ≤ 3 mm)."""
    result = outlier_case["results"]["student-t"]
    assert result.lowest_tau_rater() == 0
    distance = signed_euclidean_distance(outlier_case["raters"][0], outlier_case["spacing"])
    band = np.abs(distance) <= 3.0
    positive = band & ndi.binary_dilation(outlier_case["blob"], iterations=1)
    negative = band & ~ndi.binary_dilation(outlier_case["blob"], iterations=3)
    tau = result.tau[0]
    auc = mannwhitneyu(-tau[positive], -tau[negative]).statistic / (positive.sum() * negative.sum())
    print(f"\nROC AUC of -τ (blob vs rest of the band): {auc:.3f}")
    assert auc >= 0.9
