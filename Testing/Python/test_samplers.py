"""The common sampler interface and the baselines of papers/000 section 2: log-odds and STAPLE + ICM."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from SegmentationUncertaintyLib.geodesic import signed_euclidean_distance
from SegmentationUncertaintyLib.gpssi import GPSSISampler
from SegmentationUncertaintyLib.metrics import frequency_map
from SegmentationUncertaintyLib.networks.sampler import SHIPPED_MODELS
from SegmentationUncertaintyLib.samplers import (SOURCES, LogOddsSampler, SegmentationSampler, StapleICMSampler,
                                                 create_sampler)


def disc(shape=(64, 64), radius=18.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < radius ** 2


def assert_bernoulli_frequencies(frequency: np.ndarray, expected: np.ndarray, n: int) -> None:
    """Frequencies of ``n`` samples match the probabilities: the squared errors scaled by their binomial
    variance average 1 (0.85–1.15 is about ±7 standard deviations over a few thousand voxels)."""
    band = (expected > 0.01) & (expected < 0.99)
    scaled = (frequency - expected)[band] ** 2 / (expected * (1 - expected) / n)[band]
    assert 0.85 < scaled.mean() < 1.15, scaled.mean()


def isolated_voxels(samples: np.ndarray) -> float:
    """Mean number per sample of voxels whose face neighbours all carry the other label."""
    counts = []
    for sample in samples:
        footprint = ndi.generate_binary_structure(sample.ndim, 1)
        footprint[(1,) * sample.ndim] = False
        same_inside = ndi.binary_dilation(sample, footprint) & sample
        same_outside = ndi.binary_dilation(~sample, footprint) & ~sample
        counts.append(np.count_nonzero(sample & ~same_inside) + np.count_nonzero(~sample & ~same_outside))
    return float(np.mean(counts))


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_behind_one_interface(source):
    reference = disc()
    parameters = {"omega0": 2.0} if source == "gpssi" else {}
    image = None
    if source in SHIPPED_MODELS:  # the networks segment the image: give them one where the reference is bright
        image = np.where(reference, 100.0, 20.0) + np.random.default_rng(0).normal(0, 5, reference.shape)
    sampler = create_sampler(source, reference, image=image, spacing=(1.0, 0.8), **parameters)
    assert isinstance(sampler, SegmentationSampler) and sampler.name == source
    assert sampler.parameters()["source"] == source
    samples = list(sampler.sample(5, seed=3, batch_size=2))
    assert len(samples) == 5 and all(s.shape == reference.shape and s.dtype == bool for s in samples)
    again = np.concatenate(list(sampler.sample_batches(5, seed=3, batch_size=4)))
    np.testing.assert_array_equal(np.stack(samples), again)  # batch size does not change the samples
    other = np.stack(list(sampler.sample(5, seed=4)))
    assert not np.array_equal(np.stack(samples), other)
    assert all(not np.array_equal(samples[0], s) for s in samples[1:])


def test_log_odds_marginals_are_the_sigmoid_of_the_signed_distance():
    reference = disc()
    spacing = (1.0, 1.0)
    sampler = LogOddsSampler(reference, spacing, scale=2.0)
    expected = 1.0 / (1.0 + np.exp(signed_euclidean_distance(reference, spacing) / 2.0))
    np.testing.assert_allclose(sampler.probability, expected, rtol=1e-5)
    assert np.all(sampler.probability[reference] > 0.5) and np.all(sampler.probability[~reference] < 0.5)
    frequency = frequency_map(sampler.sample(600, seed=0, batch_size=100))
    assert_bernoulli_frequencies(frequency, expected, 600)


def test_staple_likelihood_without_icm_is_the_mixture_of_sensitivity_and_specificity():
    reference = disc()
    sampler = StapleICMSampler(reference, scale=1.0, sensitivity=0.9, specificity=0.8, n_icm=0)
    truth = 1.0 / (1.0 + np.exp(signed_euclidean_distance(reference) / 1.0))
    expected = 0.9 * truth + 0.2 * (1 - truth)
    np.testing.assert_allclose(sampler.probability, expected, rtol=1e-5)
    frequency = frequency_map(sampler.sample(400, seed=1, batch_size=100))
    assert_bernoulli_frequencies(frequency, expected, 400)
    assert frequency[~reference].mean() == pytest.approx(0.2, abs=0.02)  # 1 − q far outside


def test_icm_relaxation_gives_smoother_samples_than_log_odds_on_a_phantom():
    reference = disc((80, 80), 22.0)
    log_odds = np.stack(list(LogOddsSampler(reference).sample(8, seed=0)))
    staple = np.stack(list(StapleICMSampler(reference).sample(8, seed=0)))
    raw = np.stack(list(StapleICMSampler(reference, n_icm=0).sample(8, seed=0)))
    assert isolated_voxels(staple) < 0.2 * isolated_voxels(log_odds)
    assert isolated_voxels(staple) < 0.05 * isolated_voxels(raw)
    # ICM keeps the structure: most of the reference, little of the far background
    assert staple[:, reference].mean() > 0.8 and staple[:, ndi.binary_dilation(reference, iterations=6) == 0].mean() < 0.05


def test_baselines_and_gpssi_on_a_real_structure(colin27):
    """Colin27 left hippocampus: the paper's point — GPSSI samples are smooth, log-odds ones are speckled."""
    case = colin27.crop(8.0, ["Hippocampus_L"])
    reference = case.masks["Hippocampus_L"]
    log_odds = np.stack(list(LogOddsSampler(reference, case.spacing).sample(4, seed=0)))
    staple = np.stack(list(StapleICMSampler(reference, case.spacing).sample(4, seed=0)))
    gpssi = GPSSISampler(reference, case.image, case.spacing, omega0=4.0)
    smooth = np.stack(list(gpssi.sample(4, seed=0)))
    assert isolated_voxels(staple) < 0.3 * isolated_voxels(log_odds)
    assert isolated_voxels(smooth) < 0.1 * isolated_voxels(log_odds)
    for samples in (log_odds, staple, smooth):
        overlap = (samples & reference).sum(axis=(1, 2, 3)) / reference.sum()
        assert np.all(overlap > 0.5)


@pytest.mark.parametrize("build, message", [
    (lambda r: create_sampler("unet", r), "unknown sampler source"),
    (lambda r: LogOddsSampler(r, scale=0.0), "scale"),
    (lambda r: StapleICMSampler(r, sensitivity=1.5), "sensitivity"),
    (lambda r: StapleICMSampler(r, specificity=-0.1), "specificity"),
    (lambda r: StapleICMSampler(r, n_icm=-1), "n_icm"),
    (lambda r: StapleICMSampler(r, beta=float("nan")), "beta"),
    (lambda r: LogOddsSampler(np.zeros_like(r)), "empty"),
    (lambda r: LogOddsSampler(r[None, None]), "2-D or 3-D"),
    (lambda r: next(LogOddsSampler(r).sample(0)), "positive integer"),
    (lambda r: next(LogOddsSampler(r).sample(2, seed=-1)), "seed"),
    (lambda r: next(LogOddsSampler(r).sample(2, batch_size=0)), "batch_size"),
])
def test_bad_input_says_what_is_wrong(build, message):
    with pytest.raises(ValueError, match=message):
        build(disc())


def test_every_shipped_network_is_a_source():
    assert set(SHIPPED_MODELS) <= set(SOURCES)
