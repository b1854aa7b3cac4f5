"""Consensus fusion on real MRI structures: GPSSI raters around Colin27 AAL structures (manual labels,
cropped), one of them corrupted by a blob on its border (a local outlier). One case (the left
hippocampus) for the τ map and the blob; the ordering of the methods over 12 cases, with the raters as
masks, as probability maps and as speckled masks, comes from bench/colin27_fusion_table.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.stats import mannwhitneyu

from SegmentationUncertaintyLib.fusion import fuse
from SegmentationUncertaintyLib.geodesic import signed_euclidean_distance
from SegmentationUncertaintyLib.metrics import dice, hausdorff95

import bench_scripts

table_script = bench_scripts.load("colin27_fusion_table")

METHODS = table_script.METHODS


@pytest.fixture(scope="module")
def outlier_case(colin27):
    case = colin27.crop(8.0, structures=["Hippocampus_L"])
    truth, image, spacing = case.masks["Hippocampus_L"], case.image, case.spacing
    raters, blob = table_script.outlier_raters(truth, image, spacing, seed=10)
    results = {m: fuse(raters, m, spacing=spacing, image=image if m in ("student-t", "gaussian") else None)
               for m in METHODS}
    scores = {m: (dice(r.mask, truth), hausdorff95(r.mask, truth, spacing)) for m, r in results.items()}
    print("\nColin27 hippocampus, 5 GPSSI raters (one with a 6 mm blob): Dice / HD95 (mm) to the truth")
    for m, (d, h) in scores.items():
        print(f"  {m:10s} {d:.4f} {h:.3f}")
    return dict(truth=truth, raters=raters, blob=blob, spacing=spacing, results=results, scores=scores)


@pytest.fixture(scope="module")
def table(colin27):
    result = table_script.colin27_table(colin27=colin27)
    print("\n" + table_script.markdown(result))
    return result


@pytest.fixture(scope="module")
def maps_table(colin27):
    result = table_script.colin27_table(colin27=colin27, scenario="maps")
    print("\n" + table_script.markdown(result))
    return result


@pytest.fixture(scope="module")
def speckled_table(colin27):
    result = table_script.colin27_table(colin27=colin27, scenario="speckled", noise_mm=3.0)
    print("\n" + table_script.markdown(result))
    return result


@pytest.mark.slow
def test_student_t_rejects_the_blob(outlier_case):
    """On this one case the converged Student-t and Gaussian consensus have the same HD95 and Dice within
    0.002 (0.9524 and 0.9534); which is ahead on a single case changes with the seed, so the comparison of
    the two is over the 12 cases of ``test_table_over_cases_is_complete_and_sane`` (Student-t ahead on 11)."""
    scores, results, truth = outlier_case["scores"], outlier_case["results"], outlier_case["truth"]
    assert abs(scores["student-t"][0] - scores["gaussian"][0]) < 0.005
    assert scores["student-t"][1] <= scores["gaussian"][1]
    # the blob does not enter the consensus; the consensus stays within 1 % Dice of majority vote
    far_blob = outlier_case["blob"] & ~ndi.binary_dilation(truth, iterations=2)
    assert not (results["student-t"].mask & far_blob).any()
    assert scores["student-t"][0] > scores["majority"][0] - 0.01
    assert min(d for d, _ in scores.values()) > 0.9


@pytest.mark.slow
def test_table_over_cases_is_complete_and_sane(table):
    assert table["n_cases"] == 12 and len(set(table["cases"])) == 12
    for method, row in table["methods"].items():
        # every fusion is closer to the truth than the raters are on average
        assert table["mean_rater_dice"] < row["mean_dice"] <= 1.0, method
        assert 0.0 <= row["mean_hd95_mm"] < 3.0, method
    assert table["methods"]["student-t"]["mean_dice"] > table["methods"]["gaussian"]["mean_dice"]
    student, gaussian = np.array(table["per_case"]["student-t"]["dice"]), np.array(table["per_case"]["gaussian"]["dice"])
    assert np.sum(student > gaussian) >= 9


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="does not hold: over 12 cases mean Dice majority 0.9657, Student-t 0.9614, "
                   "STAPLE 0.9587, Gaussian 0.9548; HD95 majority and Gaussian 1.138 mm, Student-t 1.165 mm, STAPLE "
                   "1.207 mm. The order is the same without the blob (majority 0.9663, Student-t 0.9623, STAPLE "
                   "0.9592, Gaussian 0.9563: bench/colin27_fusion_table.py 3 clean): the gap to the vote is what "
                   "the masks' maps allow, not the outlier, which costs the Student-t 0.0009 and the vote 0.0006. "
                   "With the raters as probability maps the continuous consensus does beat the vote "
                   "(test_probability_maps_carry_what_a_vote_throws_away)")
def test_student_t_beats_every_baseline(table):
    methods = table["methods"]
    for method in ("gaussian", "staple", "majority"):
        assert methods["student-t"]["mean_dice"] > methods[method]["mean_dice"], method
        assert methods["student-t"]["mean_hd95_mm"] < methods[method]["mean_hd95_mm"], method


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


@pytest.mark.slow
def test_probability_maps_carry_what_a_vote_throws_away(maps_table):
    """Raters as probability maps (sigmoid of their GPSSI level functions; rater 0 certain in its blob):
    fusing the maps in logit space, whose values are the level functions themselves, beats majority vote
    and STAPLE on their 0.5 levels (papers/004, Fig. 4: the binary methods do worse than the continuous
    ones), and the Student-t consensus is as good as the Gaussian one there."""
    methods = maps_table["methods"]
    assert maps_table["n_cases"] == 12
    robust, gaussian = methods["student-t (logit, flat)"], methods["gaussian (logit, flat)"]
    for baseline in ("majority", "staple"):
        assert robust["mean_dice"] > methods[baseline]["mean_dice"] + 0.003, baseline
        assert robust["mean_hd95_mm"] <= methods[baseline]["mean_hd95_mm"], baseline
    assert robust["mean_dice"] >= gaussian["mean_dice"] - 0.001
    for method, row in methods.items():
        assert maps_table["mean_rater_dice"] < row["mean_dice"] <= 1.0, method


@pytest.mark.slow
def test_student_t_beats_every_baseline_on_speckled_raters(speckled_table):
    """The local-outlier comparison with raters whose borders are also speckled (GPSSI level function plus
    3 mm of independent noise per voxel, thresholded; rater 0 with its blob), fused from Euclidean maps:
    the Student-t consensus has a higher mean Dice and a lower mean HD95 than the Gaussian model, majority
    vote and STAPLE (and is the best in Dice on every case). At 2 mm of noise its HD95 ties the
    Gaussian's (1.069 mm) and at 4 mm it leads by more; with the image's geodesic maps it ties the Gaussian
    at 2–3 mm (``python bench/colin27_fusion_table.py 3 speckled 3``)."""
    methods = speckled_table["methods"]
    robust = methods["student-t (no image)"]
    for baseline in ("gaussian (no image)", "majority", "staple"):
        assert robust["mean_dice"] > methods[baseline]["mean_dice"], baseline
        assert robust["mean_hd95_mm"] < methods[baseline]["mean_hd95_mm"], baseline
    assert robust["best_dice"] == speckled_table["n_cases"] == 12
