"""Signed geodesic distance (GPSSI mean): exact Euclidean limit, graph-exact sweeps, edges, real MRI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from SegmentationUncertaintyLib import geodesic
from SegmentationUncertaintyLib.geodesic import (default_gamma, signed_euclidean_distance, signed_geodesic_distance,
                                                 signed_geodesic_distances)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _maurer(mask: np.ndarray, spacing) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))


def _blob(shape, spacing, seed=0) -> np.ndarray:
    """A smooth irregular non-convex blob (sum of random Gaussian bumps, thresholded)."""
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.normal(size=shape), sigma=[4.0 / s for s in spacing])
    grid = np.indices(shape, dtype=float)
    centre = (np.asarray(shape) - 1) / 2
    radius = np.sqrt(sum(((g - c) * s / (0.3 * n * s)) ** 2 for g, c, s, n in zip(grid, centre, spacing, shape)))
    return (1.0 - radius + 8.0 * noise) > 0.0


def _graph_distance(mask: np.ndarray, scaled: np.ndarray, spacing) -> np.ndarray:
    """Reference: exact shortest paths (Dijkstra) on the 26- / 8-neighbour graph with the GPSSI step cost
    ``sqrt(|δ|² + (γI_h(q) − γI_h(p))²)``, from the inside voxels (for outside ones) and vice versa."""
    index = np.arange(mask.size).reshape(mask.shape)
    rows, cols, costs = [], [], []
    for offset in itertools.product((-1, 0, 1), repeat=mask.ndim):
        if not any(offset):
            continue
        source = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, mask.shape))
        target = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, mask.shape))
        step2 = sum((o * s) ** 2 for o, s in zip(offset, spacing))
        rows.append(index[source].ravel())
        cols.append(index[target].ravel())
        costs.append(np.sqrt(step2 + (scaled[target].astype(float) - scaled[source]) ** 2).ravel())
    graph = coo_matrix((np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(mask.size, mask.size)).tocsr()
    flat = mask.ravel()
    from_inside = dijkstra(graph, indices=np.flatnonzero(flat), min_only=True)
    from_outside = dijkstra(graph, indices=np.flatnonzero(~flat), min_only=True)
    return np.where(flat, -from_outside, from_inside).reshape(mask.shape)


# ------------------------------------------------------------------------------ exact Euclidean limit

@pytest.mark.parametrize("shape, spacing", [((24, 40, 36), (2.5, 0.8, 1.1)), ((60, 50), (0.7, 1.3))])
def test_euclidean_matches_simpleitk_maurer(shape, spacing):
    mask = _blob(shape, spacing)
    assert 0 < mask.sum() < mask.size
    expected_outside = _maurer(mask, spacing)          # to the nearest inside voxel centre
    expected_inside = -_maurer(~mask, spacing)         # to the nearest outside voxel centre
    expected = np.where(mask, expected_inside, expected_outside)
    for distance in (signed_euclidean_distance(mask, spacing),
                     signed_geodesic_distance(mask, None, spacing),
                     signed_geodesic_distance(mask, np.random.default_rng(1).random(shape), spacing, gamma=0.0)):
        assert distance.dtype == np.float32 and distance.shape == mask.shape
        np.testing.assert_allclose(distance, expected, rtol=0, atol=1e-4)
    distance = signed_euclidean_distance(mask, spacing)
    # outside, it *is* ITK's signed Maurer map; inside, scipy's exact EDT agrees independently
    np.testing.assert_array_equal(distance[~mask], expected_outside[~mask])
    edt_inside = ndi.distance_transform_edt(mask, sampling=spacing)
    np.testing.assert_allclose(distance[mask], -edt_inside[mask], atol=1e-4)
    # the border lies between voxels: nothing is at 0, the first voxel on each side is one step away
    assert np.all(distance[mask] <= -min(spacing) + 1e-4) and np.all(distance[~mask] >= min(spacing) - 1e-4)


def test_euclidean_on_a_sphere_is_the_radius_difference():
    spacing = (2.0, 1.0, 1.0)
    grid = np.indices((40, 80, 80), dtype=float)
    r = np.sqrt(((grid[0] - 20) * 2.0) ** 2 + (grid[1] - 40) ** 2 + (grid[2] - 40) ** 2)
    mask = r < 25.0
    distance = signed_euclidean_distance(mask, spacing)
    far = np.abs(r - 25.0) > 3
    # the discrete border sits within a voxel of the sphere
    assert np.all(np.abs(distance[far] - (r[far] - 25.0)) < 1.5)


# --------------------------------------------------------------------------------- geodesic sweeps

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("touching_edge", [False, True])
@pytest.mark.parametrize("shape, spacing", [((9, 14, 12), (2.0, 1.0, 0.7)), ((30, 26), (1.0, 0.6))])
def test_sweeps_reach_the_exact_graph_shortest_paths(shape, spacing, touching_edge, device):
    rng = np.random.default_rng(3)
    mask = _blob(shape, spacing, seed=4)
    if touching_edge:  # a structure cut by the grid edge (no border is drawn along the edge)
        mask[..., : shape[-1] // 3] = True
    image = rng.random(shape).astype(np.float32) * 5.0  # rough image: winding shortest paths
    gamma = 1.3
    expected = _graph_distance(mask, gamma * image, spacing)
    converged = signed_geodesic_distance(mask, image, spacing, gamma=gamma, h=0.0, n_iterations=None, device=device)
    np.testing.assert_allclose(converged, expected, rtol=1e-5, atol=1e-4)
    # a fixed number of sweeps never under-estimates, and improves with each iteration
    previous = None
    for n in (1, 2, 3):
        partial = np.abs(signed_geodesic_distance(mask, image, spacing, gamma=gamma, h=0.0, n_iterations=n, device=device))
        assert np.all(partial >= np.abs(expected) - 1e-4)
        if previous is not None:
            assert np.all(partial <= previous + 1e-5)
        previous = partial


def test_two_iterations_are_exact_on_a_smooth_image():
    shape, spacing = (12, 20, 18), (2.0, 1.0, 1.0)
    mask = _blob(shape, spacing, seed=2)
    grid = np.indices(shape, dtype=float)
    image = (50 + 10 * np.sin(grid[2] / 4) + 5 * grid[1] / shape[1]).astype(np.float32)
    expected = _graph_distance(mask, 0.5 * ndi.gaussian_filter(image, [0.5, 1, 1], mode="nearest", truncate=4.0), spacing)
    distance = signed_geodesic_distance(mask, image, spacing, gamma=0.5, h=1.0, n_iterations=2)
    np.testing.assert_allclose(distance, expected, rtol=1e-4, atol=1e-3)


def test_flat_image_gives_the_euclidean_distance_up_to_the_chamfer_error():
    shape, spacing = (30, 40, 40), (1.0, 1.0, 1.0)
    mask = _blob(shape, spacing, seed=5)
    flat = np.full(shape, 7.0, dtype=np.float32)
    geodesic = signed_geodesic_distance(mask, flat, spacing)  # default γ > 0, but no intensity change
    euclidean = signed_euclidean_distance(mask, spacing)
    ratio = geodesic / euclidean
    assert np.all(ratio >= 1.0 - 1e-5)
    assert ratio.max() <= 1.128 + 1e-3        # the 26-neighbour chamfer bound (module docstring)
    assert np.median(ratio) < 1.06


def test_a_bright_wall_lengthens_paths_across_it_only():
    spacing = (1.0, 1.0)
    shape = (80, 120)
    mask = np.zeros(shape, bool)
    mask[25:55, 10:30] = True
    image = np.full(shape, 100.0, dtype=np.float32)
    image[:, 60:63] = 400.0                    # a bright wall from top to bottom at x = 60..62
    gamma = default_gamma(image)
    geodesic = signed_geodesic_distance(mask, image, spacing, gamma=gamma, h=0.0)
    euclidean = signed_euclidean_distance(mask, spacing)
    before_wall = np.zeros(shape, bool)
    before_wall[:, :55] = True
    beyond_wall = np.zeros(shape, bool)
    beyond_wall[:, 68:] = True
    # on the near side the image is flat: Euclidean up to the 2-D chamfer error (8.2 %)
    ratio = geodesic[before_wall] / euclidean[before_wall]
    assert np.all(ratio >= 1 - 1e-5) and ratio.max() < 1.083
    # beyond the wall every path climbs 300 and comes down 300 intensity units in one step each: the two
    # steps cost sqrt(1 + (300 γ)²) instead of 1, so about 2 (300 γ − 1) mm more
    excess = geodesic[beyond_wall] - euclidean[beyond_wall]
    assert excess.min() > 2 * (300 * gamma - np.sqrt(2))  # (a crossing step may be diagonal)
    assert np.all(geodesic[beyond_wall] > 2 * euclidean[beyond_wall])
    # smoothing (h = 1 mm) lowers the wall's peak but it still dominates
    smoothed = signed_geodesic_distance(mask, image, spacing, gamma=gamma, h=1.0)
    assert np.all(smoothed[beyond_wall] - euclidean[beyond_wall] > 300 * gamma)


def test_a_strong_edge_on_the_border_pins_it_from_both_sides():
    spacing = (1.0, 1.0)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    image = np.where(mask, 200.0, 50.0).astype(np.float32)  # the reference follows a strong edge
    geodesic = signed_geodesic_distance(mask, image, spacing, h=0.0)
    euclidean = signed_euclidean_distance(mask, spacing)
    border = ndi.binary_dilation(mask) ^ ndi.binary_erosion(mask)
    gamma = default_gamma(image)
    assert np.all(np.abs(geodesic[border]) >= gamma * 150 - 1e-3)   # every crossing climbs the edge
    assert np.all(np.abs(euclidean[border]) <= np.sqrt(2) + 1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_sign_symmetry_and_complement(device):
    shape, spacing = (14, 22, 20), (1.5, 1.0, 0.9)
    mask = _blob(shape, spacing, seed=7)
    image = np.random.default_rng(8).normal(100, 20, shape).astype(np.float32)
    distance = signed_geodesic_distance(mask, image, spacing, device=device)
    assert np.all(np.isfinite(distance))
    np.testing.assert_array_equal(distance < 0, mask)       # {G < 0} is exactly the reference
    assert np.all(np.abs(distance) >= min(spacing) - 1e-4)  # never 0: the border lies between voxels
    complement = signed_geodesic_distance(~mask, image, spacing, device=device)
    np.testing.assert_allclose(complement, -distance, rtol=1e-6, atol=1e-5)
    # the image is only read through |I(q) − I(p)|: an offset changes nothing, a flip neither
    np.testing.assert_allclose(signed_geodesic_distance(mask, image + 50, spacing, gamma=0.01, device=device),
                               signed_geodesic_distance(mask, -image, spacing, gamma=0.01, device=device),
                               rtol=1e-5, atol=1e-4)
    # the input arrays are not modified
    assert mask.dtype == bool and image.dtype == np.float32


@pytest.mark.parametrize("device", DEVICES)
def test_masks_swept_together_give_each_masks_own_distance(device, monkeypatch):
    """Several raters on one image (a fusion): the batched sweeps give exactly the one-mask results, in 3-D and
    2-D, converged or not, whatever the batch size."""
    spacing = (2.0, 1.0, 1.5)
    mask = _blob((14, 20, 18), spacing)
    image = (100 + 40 * ndi.binary_dilation(mask) + np.random.default_rng(2).normal(0, 5, mask.shape)).astype(
        np.float32)
    masks = np.stack([mask, ndi.binary_dilation(mask), ndi.binary_erosion(mask), np.roll(mask, 2, axis=2)])
    alone = {n: np.stack([signed_geodesic_distance(m, image, spacing, n_iterations=n, device=device) for m in masks])
             for n in (2, None)}
    for n_iterations, expected in alone.items():
        together = signed_geodesic_distances(masks, image, spacing, n_iterations=n_iterations, device=device)
        assert together.dtype == np.float32 and np.array_equal(together, expected)
    monkeypatch.setattr(geodesic, "_BATCH_VOXELS", 2 * mask.size)   # batches of 2 and 2
    assert np.array_equal(signed_geodesic_distances(masks, image, spacing, device=device), alone[2])
    flat = masks[:, 7]
    assert np.array_equal(signed_geodesic_distances(flat, image[7], spacing[1:], device=device),
                          np.stack([signed_geodesic_distance(m, image[7], spacing[1:], device=device) for m in flat]))
    with pytest.raises(ValueError, match="mask 1 is empty"):
        signed_geodesic_distances(np.stack([mask, np.zeros_like(mask)]), image, spacing)


def test_default_gamma_is_100_over_the_mean_intensity():
    image = np.full((5, 5), 40.0)
    assert default_gamma(image) == pytest.approx(2.5)
    assert default_gamma(np.zeros((4, 4))) == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda m, i: signed_geodesic_distance(np.zeros_like(m), i), "empty"),
    (lambda m, i: signed_geodesic_distance(np.ones_like(m), i), "whole image"),
    (lambda m, i: signed_geodesic_distance(m, i[:-1]), "shape"),
    (lambda m, i: signed_geodesic_distance(m, np.where(m, np.nan, i)), "NaN"),
    (lambda m, i: signed_geodesic_distance(m[None], i[None]), "2-D or 3-D"),
    (lambda m, i: signed_geodesic_distance(m, i, gamma=-1.0), "gamma"),
    (lambda m, i: signed_geodesic_distance(m, i, h=-1.0), "h must"),
    (lambda m, i: signed_geodesic_distance(m, i, n_iterations=0), "n_iterations"),
    (lambda m, i: signed_geodesic_distance(m, i, spacing=(1.0, 1.0)), "spacing"),
    (lambda m, i: signed_geodesic_distance(m, i, device="tpu"), "device"),
    (lambda m, i: signed_euclidean_distance(np.zeros_like(m)), "empty"),
])
def test_bad_inputs_raise_value_error(call, message):
    mask = np.zeros((6, 8, 8), bool)
    mask[2:4, 3:5, 3:5] = True
    image = np.ones(mask.shape, np.float32)
    with pytest.raises(ValueError, match=message):
        call(mask, image)


# ---------------------------------------------------------------------------------------- real MRI

def test_mni152_lateral_ventricles(mni152):
    case = mni152.crop(margin_mm=12.0, structures=["lateral_ventricles"])
    mask = case.masks["lateral_ventricles"]
    geodesic = signed_geodesic_distance(mask, case.image, case.spacing)
    euclidean = signed_euclidean_distance(mask, case.spacing)
    assert np.all(np.isfinite(geodesic))
    np.testing.assert_array_equal(geodesic < 0, mask)
    assert np.all(np.abs(geodesic) >= np.abs(euclidean) - 1e-4)
    # the dark ventricles sit in bright white matter: crossing their wall costs far more than its length
    border_out = ndi.binary_dilation(mask) & ~mask
    assert np.median(geodesic[border_out] / euclidean[border_out]) > 2.0
