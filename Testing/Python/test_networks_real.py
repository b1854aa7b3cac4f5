"""Network samplers on real MRIs: the GPSSI-annotated training set, the shipped models, the plug-in sampler.

The shipped models (SegmentationUncertainty/Resources/Models/*_2d.pt) were trained by
``python -m SegmentationUncertaintyCLI.train_networks train --table docs/networks.md``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SegmentationUncertaintyLib import metrics
from SegmentationUncertaintyLib.networks import load_model, shipped_model_path
from SegmentationUncertaintyLib.networks.dataset import build_annotated_slices
from SegmentationUncertaintyLib.networks.evaluation import evaluate_model
from SegmentationUncertaintyLib.networks.sampler import NetworkSampler, network_sources
from SegmentationUncertaintyLib.samplers import SegmentationSampler


@pytest.fixture(scope="module")
def hippocampus(colin27):
    """Colin27 around the left hippocampus: image, reference, spacing."""
    case = colin27.crop(8.0, structures=["Hippocampus_L"])
    return case.image, case.masks["Hippocampus_L"], case.spacing


@pytest.fixture(scope="module")
def ssn_file():
    return shipped_model_path("ssn_2d")


def test_annotated_slices_are_real_seeded_and_spread_as_asked(tmp_path):
    kwargs = dict(n_annotations=6, target_dice=0.8, orientations=("axial",), limit=1, cache_dir=tmp_path)
    data = build_annotated_slices(**kwargs)
    n = len(data)
    assert n >= 8                                               # ventricles L/R + several AAL structures
    assert data.images.shape == (n, 1, 64, 64) and data.annotations.shape == (n, 6, 64, 64)
    assert data.annotations.dtype == bool and data.references.any(axis=(1, 2)).all()
    assert {name.split("/")[0] for name in data.names} == {"mni152", "colin27"}
    # the annotators agree with each other at the requested Dice, and scatter around the real structure
    agreement = np.mean([metrics.mean_pairwise_dice(a) for a in data.annotations])
    assert abs(agreement - 0.8) < 0.06
    to_reference = np.mean([metrics.dice(a, r) for A, r in zip(data.annotations, data.references) for a in A])
    assert 0.75 < to_reference < 0.97
    assert data.network_inputs().shape == (n, 2, 64, 64)
    # cached, and rebuilt identically from the seed
    assert (tmp_path / next(p.name for p in tmp_path.iterdir())).is_file()
    rebuilt = build_annotated_slices(use_cache=False, **kwargs)
    assert np.array_equal(rebuilt.annotations, data.annotations) and np.array_equal(rebuilt.images, data.images)


def test_shipped_ssn_gives_100_samples_from_one_forward_pass(hippocampus, ssn_file):
    image, reference, spacing = hippocampus
    sampler = NetworkSampler(reference[20:21], image[20:21], spacing, model=ssn_file)
    assert isinstance(sampler, SegmentationSampler)
    calls = []
    sampler._network.backbone.register_forward_hook(lambda *args: calls.append(1))
    batches = list(sampler.sample_batches(100, seed=3, batch_size=100))
    assert len(calls) == 1
    samples = batches[0]
    assert samples.shape == (100, *reference[20:21].shape) and samples.dtype == bool
    # plausible segmentations of the structure: they overlap the reference and differ from each other
    dice = [metrics.dice(s, reference[20:21]) for s in samples]
    assert np.mean(dice) > 0.6
    assert 0.02 < metrics.sample_diversity(samples) < 0.8


def test_network_sampler_same_seed_same_samples(hippocampus, ssn_file):
    image, reference, spacing = hippocampus
    image, reference = image[5:12], reference[5:12]          # 3 slices without the structure, then 4 with it
    sampler = NetworkSampler(reference, image, spacing, model=ssn_file)
    first = np.stack(list(sampler.sample(4, seed=7, batch_size=4)))
    again = np.stack(list(sampler.sample(4, seed=7, batch_size=1)))
    other = np.stack(list(sampler.sample(4, seed=8, batch_size=4)))
    assert first.shape == (4, *reference.shape)
    assert np.array_equal(first, again)                  # independent of the batch size
    assert not np.array_equal(first, other)
    # slices the reference does not touch stay empty (the 2-D model runs where the reference is)
    empty = ~reference.any(axis=(1, 2))
    assert empty.sum() == 3 and not first[:, empty].any()
    # the torch generator of the caller is untouched
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    list(sampler.sample(1, seed=1))
    assert torch.equal(torch.rand(1), expected)


def test_network_sampler_post_inference_scaling(hippocampus, ssn_file):
    image, reference, spacing = hippocampus
    image, reference = image[18:22], reference[18:22]
    frozen = NetworkSampler(reference, image, spacing, model=ssn_file, temperature=0.0)
    samples = np.stack(list(frozen.sample(3, seed=0)))
    assert np.array_equal(samples[0], samples[1]) and np.array_equal(samples[1], samples[2])
    assert np.array_equal(samples[0], frozen.predict() > 0.5)   # temperature 0: the mean prediction
    with pytest.raises(ValueError, match="has none"):
        NetworkSampler(reference, image, spacing, model=shipped_model_path("unet_2d"), temperature=0.5)


@pytest.mark.parametrize("source", sorted(network_sources()))
def test_every_shipped_network_source_samples_around_a_real_reference(hippocampus, source):
    image, reference, spacing = hippocampus
    sampler = network_sources()[source](reference[18:22], spacing, image=image[18:22])
    samples = np.stack(list(sampler.sample(6, seed=0)))
    assert samples.shape == (6, *reference[18:22].shape)
    assert np.mean([metrics.dice(s, reference[18:22]) for s in samples]) > 0.5
    assert sampler.parameters()["architecture"] == source.replace("-", "_")


def test_network_sampler_refuses_bad_input(hippocampus, ssn_file, tmp_path):
    image, reference, spacing = hippocampus
    with pytest.raises(ValueError, match="takes 1 image channel"):
        NetworkSampler(reference, np.stack([image, image]), spacing, model=ssn_file)
    with pytest.raises(ValueError, match="shape"):
        NetworkSampler(reference, image[:, :-1], spacing, model=ssn_file)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        NetworkSampler(reference, image, spacing, model=tmp_path / "nowhere.pt")
    with pytest.raises(ValueError, match="needs the image"):
        network_sources()["ssn"](reference, spacing)


@pytest.mark.slow
def test_shipped_models_reproduce_the_results_table():
    """The claim of docs/networks.md on the held-out slices: SSN matches the annotators' distribution better
    (lower GED) than the deterministic U-Net and MC dropout, with a diversity within 30% of theirs."""
    data = build_annotated_slices().select("test")
    inputs = data.network_inputs()
    results = {}
    for name in ("ssn", "unet", "mc_dropout"):
        model = load_model(shipped_model_path(f"{name}_2d"), architecture=name).model
        results[name] = evaluate_model(model, inputs, data.annotations, data.rois, n_samples=100, seed=0)
    ged = {name: r["ged"]["mean"] for name, r in results.items()}
    assert ged["ssn"] < ged["unet"] and ged["ssn"] < ged["mc_dropout"]
    annotators = results["ssn"]["annotator_diversity"]["mean"]
    assert abs(results["ssn"]["diversity"]["mean"] - annotators) <= 0.3 * annotators


@pytest.mark.slow
def test_a_users_own_3d_model_trains_on_real_patches_and_samples_a_volume(tmp_path, hippocampus):
    from SegmentationUncertaintyLib.networks import IntensityNormalization, StochasticSegmentationNetwork, save_model
    from SegmentationUncertaintyLib.networks.dataset import build_annotated_patches
    from SegmentationUncertaintyLib.networks.training import train_model

    data = build_annotated_patches(structures=("Hippocampus_L",), patches_per_structure=1, n_annotations=4,
                                   cache_dir=tmp_path)
    assert data.images.shape == (3, 1, 32, 32, 32) and data.annotations.shape == (3, 4, 32, 32, 32)
    assert abs(np.mean([metrics.mean_pairwise_dice(a) for a in data.annotations]) - 0.8) < 0.06
    torch.manual_seed(0)
    model = StochasticSegmentationNetwork(spatial_dims=3, in_channels=2, width=4, depth=2, rank=2)
    history = train_model(model, data.network_inputs(), data.annotations, data.rois, iterations=10, batch_size=2,
                          learning_rate=3e-3)
    assert np.isfinite(history).all()
    path = save_model(tmp_path / "my_ssn_3d.pt", model, IntensityNormalization(), inputs=("image", "reference"))
    image, reference, spacing = hippocampus
    sampler = NetworkSampler(reference, image, spacing, model=path)
    samples = np.stack(list(sampler.sample(3, seed=0, batch_size=3)))
    assert samples.shape == (3, *reference.shape)
    assert np.array_equal(samples, np.stack(list(sampler.sample(3, seed=0, batch_size=1))))


def test_mc_dropout_measures_of_the_shipped_model_on_a_real_slice(hippocampus):
    from SegmentationUncertaintyLib.networks import mc_dropout_measures

    image, reference, spacing = hippocampus
    sampler = NetworkSampler(reference[20:21], image[20:21], spacing, model=shipped_model_path("mc_dropout_2d"))
    samples = np.stack(list(sampler.sample(10, seed=0, batch_size=10)))     # N = 10 passes (papers/002)
    measures = mc_dropout_measures(samples, spacing=spacing)
    assert 0.0 < measures["coefficient_of_variation"] < 0.3
    assert 0.7 < measures["mean_pairwise_dice"] < 1.0
    assert 0.0 < measures["mean_voxelwise_uncertainty"] < 0.5
