"""Real raters: LIDC-IDRI nodules (≥ 10 mm, ≥ 3 radiologists) plus one injected corrupted rater, over 30
nodules; the table (mean Dice, HD95 per method) comes from bench/lidc_fusion_table.py and is written
to the test log."""

from __future__ import annotations

import pytest

import bench_scripts


@pytest.fixture(scope="module")
def table():
    module = bench_scripts.load("lidc_fusion_table")
    result = module.lidc_table(30)
    print("\n" + module.markdown(result))
    return result


@pytest.mark.slow
def test_lidc_table_is_complete_and_sane(table):
    assert table["n_nodules"] == 30 and len(set(table["ids"])) == 30
    methods = table["methods"]
    assert set(methods) == {"student-t", "gaussian", "staple", "majority"}
    for method, row in methods.items():
        assert 0.85 < row["mean_dice"] <= 1.0, method
        assert 0.0 <= row["mean_hd95_mm"] < 5.0, method
        assert 0.85 < row["mean_dice_strict"] <= 1.0, method
    # counting the two-against-two voxels as inside favours the method that includes most (STAPLE); the
    # strict majority reverses that
    assert methods["staple"]["mean_dice"] > methods["staple"]["mean_dice_strict"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="does not hold: mean Dice STAPLE 0.955, majority 0.944, Gaussian 0.921, "
                   "Student-t 0.920 to the radiologists' >= 50 % vote; to the strict majority majority 0.939, "
                   "Gaussian 0.927, Student-t 0.919, STAPLE 0.882. The truth is a vote of the raters being fused")
def test_student_t_beats_every_baseline_on_lidc(table):
    methods = table["methods"]
    for method in ("gaussian", "staple", "majority"):
        assert methods["student-t"]["mean_dice"] > methods[method]["mean_dice"], method
        assert methods["student-t"]["mean_hd95_mm"] < methods[method]["mean_hd95_mm"], method


@pytest.mark.slow
def test_held_out_table_takes_each_radiologist_in_turn():
    """The held-out mode of bench/lidc_fusion_table.py: one case per radiologist of the nodule, every method
    scored, in both ways of adding the corrupted rater."""
    from SegmentationUncertaintyLib.sample_data import load_lidc_nodules

    module = bench_scripts.load("lidc_fusion_table")
    n_radiologists = len(load_lidc_nodules(10.0, 3, limit=1)[0].masks)
    for inject in ("add", "replace"):
        table = module.held_out_table(1, inject)
        print("\n" + module.markdown_held_out(table))
        assert table["n_cases"] == n_radiologists and table["inject"] == inject
        assert set(table["methods"]) == set(module.HELD_OUT_METHODS)
        for method, row in table["methods"].items():
            assert 0.5 < row["mean_dice"] < 1.0, method
            assert 0.0 < row["mean_hd95_mm"] < 10.0, method
    with pytest.raises(ValueError, match="inject must be 'add' or 'replace'"):
        module.held_out_table(1, "copy")
