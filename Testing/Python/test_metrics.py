"""Metrics with hand-computed answers on small phantoms, plus LIDC multi-rater and MNI152 checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from SegmentationUncertaintyLib import metrics as M


def _two_boxes():
    a = np.zeros((4, 5), bool)
    b = np.zeros((4, 5), bool)
    a[0:2, 0:3] = True   # 6 pixels
    b[1:3, 0:3] = True   # 6 pixels, 3 shared
    return a, b


# --------------------------------------------------------------------------------------- overlap

def test_dice_and_iou_by_hand():
    a, b = _two_boxes()
    assert M.dice(a, b) == pytest.approx(2 * 3 / 12)
    assert M.iou(a, b) == pytest.approx(3 / 9)
    empty = np.zeros_like(a)
    assert M.dice(empty, empty) == 1.0 and M.iou(empty, empty) == 1.0
    assert M.dice(a, empty) == 0.0 and M.iou(a, empty) == 0.0
    assert M.dice(a, a.astype(np.uint8)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        M.dice(a, b[:-1])


def test_hausdorff95_by_hand_with_anisotropic_spacing():
    a = np.zeros((7, 9, 9), bool)
    b = np.zeros((7, 9, 9), bool)
    a[2, 5, 5] = True
    b[4, 5, 5] = True
    assert M.hausdorff95(a, b, spacing=(2.5, 1.0, 1.0)) == pytest.approx(5.0)   # two z steps of 2.5 mm
    assert M.hausdorff95(a, b, spacing=(0.5, 3.0, 3.0)) == pytest.approx(1.0)


def test_hausdorff95_nested_cubes():
    # 3^3 cube inside a concentric 5^3 cube. Surface distances (voxel units): the 26 inner surface voxels
    # are 1 from the outer surface; of the 98 outer ones, 54 face voxels are 1, 36 edge voxels √2 and
    # 8 corners √3 from the inner surface. Pooled: 80 x 1, 36 x √2, 8 x √3 → 95th percentile √3.
    inner = np.zeros((9, 9, 9), bool)
    outer = np.zeros((9, 9, 9), bool)
    inner[3:6, 3:6, 3:6] = True
    outer[2:7, 2:7, 2:7] = True
    assert M.hausdorff95(inner, outer, spacing=(2.0, 2.0, 2.0)) == pytest.approx(2 * math.sqrt(3))
    assert M.hausdorff95(outer, inner, spacing=(2.0, 2.0, 2.0)) == pytest.approx(2 * math.sqrt(3))
    assert M.hausdorff95(inner, inner) == 0.0


def test_hausdorff95_empty_masks():
    a = np.zeros((5, 5), bool)
    b = a.copy()
    b[2, 2] = True
    assert M.hausdorff95(a, a) == 0.0
    assert M.hausdorff95(a, b) == math.inf and M.hausdorff95(b, a) == math.inf


def test_volume_ml():
    mask = np.zeros((20, 20, 20), bool)
    mask[:10, :10, :10] = True
    assert M.volume_ml(mask, (2.0, 1.0, 1.0)) == pytest.approx(2.0)   # 2000 mm³
    assert M.volume_ml(mask[0], (1.0, 1.0)) == pytest.approx(1.0)    # 100 mm² = 1 cm²


def test_mean_pairwise_dice_by_hand_and_against_brute_force():
    a, b = _two_boxes()
    # pairs (a, a) = 1, (a, b) = 0.5, (a, b) = 0.5
    assert M.mean_pairwise_dice([a, a, b]) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    samples = rng.random((9, 6, 11, 10)) < rng.random((1, 6, 11, 10))  # voxel-dependent rates: all-agree voxels too
    brute = np.mean([M.dice(samples[i], samples[j]) for i in range(9) for j in range(i + 1, 9)])
    assert M.mean_pairwise_dice(samples) == pytest.approx(brute, rel=1e-12)
    assert M.mean_pairwise_dice(list(samples)) == pytest.approx(brute, rel=1e-12)
    empty = np.zeros((3, 4, 4), bool)
    assert M.mean_pairwise_dice(empty) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        M.mean_pairwise_dice(samples[:1])


def test_coefficient_of_variation():
    assert M.coefficient_of_variation([1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(2 / 3) / 2)
    assert M.coefficient_of_variation([5.0, 5.0]) == 0.0
    with pytest.raises(ValueError):
        M.coefficient_of_variation([0.0, 0.0])


# ------------------------------------------------------------------------------------- voxel maps

def test_entropy_by_hand():
    assert M.entropy_map(np.array([[0.5]]))[0, 0] == pytest.approx(1.0)
    assert M.entropy_map(np.array([[0.0, 1.0]])).tolist() == [[0.0, 0.0]]
    expected = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert M.entropy_map(np.array([[0.25, 0.75]]))[0] == pytest.approx([expected, expected], rel=1e-6)
    # maximum at p = 0.5 on a fine grid
    p = np.linspace(0, 1, 101)[None]
    assert np.argmax(M.entropy_map(p)[0]) == 50
    # three classes, log base 3: uniform → 1; class axis first
    uniform = np.full((3, 2, 2), 1 / 3)
    np.testing.assert_allclose(M.entropy_map(uniform, n_classes=3), 1.0, rtol=1e-6)
    two_class = np.stack([np.full((2, 3), 0.75), np.full((2, 3), 0.25)])
    np.testing.assert_allclose(M.entropy_map(two_class), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="n_classes"):
        M.entropy_map(np.full((2, 2), 0.5), n_classes=3)
    assert M.mean_voxelwise_entropy(np.array([[0.5, 0.0]])) == pytest.approx(0.5)
    assert M.mean_voxelwise_entropy(np.array([[0.5, 0.0]]), mask=np.array([[True, False]])) == pytest.approx(1.0)


def test_frequency_and_streaming_statistics():
    rng = np.random.default_rng(1)
    samples = rng.random((6, 5, 7, 8)) < 0.3
    stats = M.SampleStatistics(spacing=(2.0, 1.0, 0.5))
    for sample in (s for s in samples):            # a generator: one sample at a time
        stats.update(sample)
    assert stats.n == 6
    np.testing.assert_allclose(stats.frequency, samples.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(M.frequency_map(iter(samples)), samples.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.entropy, M.entropy_map(samples.mean(axis=0)), atol=1e-6)
    np.testing.assert_allclose(stats.volumes, samples.reshape(6, -1).sum(axis=1) * 1.0 / 1000)
    np.testing.assert_allclose(stats.gamma, M.gamma_map(samples), rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        stats.update(samples[0, :-1])
    with pytest.raises(ValueError, match="update"):
        _ = M.SampleStatistics().frequency


def test_gamma_map_by_hand():
    # one voxel, two soft samples p = 0.2 and 0.6 (foreground): mean 0.4
    samples = np.array([[[0.2]], [[0.6]]])
    eps = M.EPS
    expected = -0.5 * sum(0.4 * math.log(p + eps) + 0.6 * math.log(1 - p + eps) for p in (0.2, 0.6))
    assert M.gamma_map(samples)[0, 0] == pytest.approx(expected, rel=1e-6)
    # the same with an explicit class axis (N, C, *shape)
    classes = np.stack([1 - samples, samples], axis=1)
    assert M.gamma_map(classes, class_axis=True)[0, 0] == pytest.approx(expected, rel=1e-6)
    # hard samples that agree: γ ≈ 0; hard samples that split 1:1: γ = −2 log(eps) · ½ · ½
    agree = np.ones((4, 2, 2), bool)
    np.testing.assert_allclose(M.gamma_map(agree), 0.0, atol=1e-6)
    split = np.stack([np.ones((2, 2), bool), np.zeros((2, 2), bool)])
    np.testing.assert_allclose(M.gamma_map(split), -2 * math.log(eps) * 0.25, rtol=1e-6)


def test_ncc_and_gamma_ncc():
    rng = np.random.default_rng(2)
    a = rng.random((6, 7))
    assert M.ncc(a, a) == pytest.approx(1.0)
    assert M.ncc(a, 3 * a + 2) == pytest.approx(1.0)
    assert M.ncc(a, -a) == pytest.approx(-1.0)
    assert M.ncc(a, np.full_like(a, 4.0)) == 0.0           # constant map guarded
    assert M.gamma_ncc(a, [a, 2 * a]) == pytest.approx(1.0)
    assert M.gamma_ncc(a, [a, -a]) == pytest.approx(0.0)


def test_rater_error_maps_by_hand():
    samples = np.array([[[0.2]], [[0.6]]])
    raters = np.array([[[True]], [[False]]])
    eps = M.EPS
    errors = M.rater_error_maps(samples, raters)
    assert errors.shape == (2, 1, 1)
    assert errors[0, 0, 0] == pytest.approx(-0.5 * (math.log(0.2 + eps) + math.log(0.6 + eps)), rel=1e-6)
    assert errors[1, 0, 0] == pytest.approx(-0.5 * (math.log(0.8 + eps) + math.log(0.4 + eps)), rel=1e-6)


# ------------------------------------------------------------------------ distribution-level metrics

def test_ged_and_diversity_by_hand():
    a, b = _two_boxes()
    d = 1 - 3 / 9
    assert M.generalized_energy_distance([a, b], [a, b]) == pytest.approx(0.0, abs=1e-12)
    assert M.generalized_energy_distance([b], [a]) == pytest.approx(2 * d)
    # raters {a, b}, samples {a}: 2·(0 + d)/2 − (0 + d + d + 0)/4 − 0 = d/2
    assert M.generalized_energy_distance([a], [a, b]) == pytest.approx(d / 2)
    assert M.sample_diversity([a, b]) == pytest.approx(d / 2)            # (0 + d + d + 0) / 4
    assert M.sample_diversity([a, a, a]) == 0.0
    empty = np.zeros_like(a)
    assert M.generalized_energy_distance([empty], [empty]) == 0.0        # both empty: d = 0


def test_ged_with_label_maps_averages_foreground_classes():
    a = np.zeros((4, 6), np.int64)
    b = np.zeros((4, 6), np.int64)
    a[0:2, 0:3] = 1
    b[1:3, 0:3] = 1          # class 1 as in _two_boxes: d1 = 2/3
    a[:, 5] = 2
    b[:, 5] = 2              # class 2 identical: d2 = 0
    d = (2 / 3 + 0.0) / 2
    np.testing.assert_allclose(M.pairwise_iou_distances([a], [b], n_classes=3), [[d]])
    assert M.generalized_energy_distance([b], [a], n_classes=3) == pytest.approx(2 * d)
    with pytest.raises(ValueError, match="labels"):
        M.generalized_energy_distance([b], [a], n_classes=2)


def test_brier_and_calibration():
    # 20 raters; voxel v is marked by the first k(v) raters, so the rater frequency is k/20 exactly
    k = np.arange(21).reshape(3, 7)
    raters = np.stack([k > r for r in range(20)])
    frequency = k / 20
    assert M.expected_calibration_error(frequency, raters) == pytest.approx(0.0, abs=1e-12)
    assert M.brier_score(frequency, raters) == pytest.approx(np.mean(frequency * (1 - frequency)))
    # always certain of foreground while the raters average 0.5: ECE = |0.5 − 1|
    half = np.stack([np.ones((3, 3), bool), np.zeros((3, 3), bool)])
    assert M.expected_calibration_error(np.ones((3, 3)), half) == pytest.approx(0.5)
    assert M.brier_score(np.full((3, 3), 0.5), [np.zeros((3, 3), bool)]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.brier_score(np.full((3, 3), 1.5), half)
    with pytest.raises(ValueError, match="shape"):
        M.expected_calibration_error(np.ones((3, 4)), half)


# ---------------------------------------------------------------------------------------- real data

def _surface_points(mask, spacing):
    surface = mask & ~ndi.binary_erosion(mask, border_value=0)
    return np.argwhere(surface) * np.asarray(spacing)


def test_lidc_raters():
    from SegmentationUncertaintyLib.sample_data import load_lidc_nodules

    nodules = load_lidc_nodules(limit=3)
    assert nodules
    for nodule in nodules:
        raters = np.stack(nodule.masks)
        spacing = nodule.geometry.spacing
        # HD95 against an independent k-d tree computation of all surface-to-surface distances
        a, b = raters[0], raters[1]
        pa, pb = _surface_points(a, spacing), _surface_points(b, spacing)
        pooled = np.concatenate([cKDTree(pb).query(pa)[0], cKDTree(pa).query(pb)[0]])
        assert M.hausdorff95(a, b, spacing) == pytest.approx(np.percentile(pooled, 95), rel=1e-9)
        # Gram-matrix metrics against the pairwise definitions
        n = len(raters)
        brute = np.mean([M.dice(raters[i], raters[j]) for i in range(n) for j in range(i + 1, n)])
        assert M.mean_pairwise_dice(raters) == pytest.approx(brute, rel=1e-12)
        d = np.array([[1 - M.iou(x, y) for y in raters] for x in raters])
        assert M.sample_diversity(raters) == pytest.approx(d.mean(), rel=1e-12)
        assert 0.0 < M.sample_diversity(raters) < 1.0         # real radiologists disagree, but overlap
        assert M.generalized_energy_distance(raters, raters) == pytest.approx(0.0, abs=1e-12)
        # a model that always answers like rater 0 is further from the raters than the raters themselves
        assert M.generalized_energy_distance(raters[:1].repeat(5, axis=0), raters) > 0.0
        # the raters' own frequency map is perfectly calibrated against them
        frequency = raters.mean(axis=0)
        assert M.expected_calibration_error(frequency, raters) == pytest.approx(0.0, abs=1e-12)
        assert M.expected_calibration_error(raters[0].astype(float), raters) > 0.0
        volumes = [M.volume_ml(r, spacing) for r in raters]
        assert 0.0 < M.coefficient_of_variation(volumes) < 1.0


def test_mni152_ventricles_dilated(mni152):
    case = mni152.crop(margin_mm=6.0, structures=["lateral_ventricles"])
    mask = case.masks["lateral_ventricles"]
    grown = ndi.binary_dilation(mask)
    # mask ⊂ grown: Dice = 2|m| / (|m| + |g|), IoU = |m| / |g|
    assert M.dice(mask, grown) == pytest.approx(2 * mask.sum() / (mask.sum() + grown.sum()))
    assert M.iou(mask, grown) == pytest.approx(mask.sum() / grown.sum())
    # one face-connected dilation moves the surface by one 1-mm voxel almost everywhere
    assert 1.0 <= M.hausdorff95(mask, grown, case.spacing) <= 2.0
    samples = np.stack([mask, grown, ndi.binary_erosion(mask)])
    entropy = M.entropy_map(M.frequency_map(samples))
    assert entropy[mask & ~ndi.binary_erosion(mask)].min() > 0.9   # voxels 2 of 3 samples hold
    assert entropy[ndi.binary_erosion(mask)].max() == 0.0
