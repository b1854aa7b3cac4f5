"""Network samplers: SSN (toy problem of papers/003 §5.1, low-rank distribution), PHiSeg, Prob. U-Net,
MC dropout, model files. Fast unit tests on CPU; real-data tests are in test_networks_real.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from SegmentationUncertaintyLib.networks import (
    ARCHITECTURES, DeterministicUNet, IntensityNormalization, LowRankLogits, MCDropoutUNet, PHiSeg,
    ProbabilisticUNet, StochasticSegmentationNetwork, fit_toy_problem, load_model, mc_dropout_measures,
    save_model, ssn_loss, toy_label_maps)
from SegmentationUncertaintyLib.networks.io import check_input_channels


# ------------------------------------------------------------------------------------ SSN toy (§5.1)

def test_toy_label_maps_are_the_papers():
    maps = toy_label_maps()
    assert maps.shape == (2, 21)
    assert (maps[:, :7] == 1).all() and (maps[:, 14:] == 0).all()
    assert (maps[0, 7:14] == 0).all() and (maps[1, 7:14] == 1).all()


def test_toy_problem_low_rank_captures_the_two_modes_and_diagonal_cannot():
    # Paper: low rank (R = 2) −0.93, diagonal −4.87, optimum log ½ = −0.69. The diagonal model's middle
    # pixels are independent, so it cannot beat 7 log ½ = −4.85 whatever the training.
    low_rank = fit_toy_problem(rank=2, seed=0)
    diagonal = fit_toy_problem(diagonal=True, seed=0)
    assert low_rank.log_likelihood >= -1.1
    assert low_rank.log_likelihood <= math.log(0.5) + 0.02  # an MC estimate cannot exceed the optimum much
    assert diagonal.log_likelihood <= -4.0
    # The low-rank samples are (nearly) always one of the two label maps: the middle third moves together.
    with torch.random.fork_rng():
        torch.manual_seed(1)
        labels = low_rank.distribution.rsample(2000).argmax(dim=2)[:, 0]            # (2000, 21)
    maps = toy_label_maps()
    is_a_map = ((labels == maps[0]).all(1) | (labels == maps[1]).all(1)).float().mean()
    assert is_a_map > 0.8
    middle_on = (labels[:, 7:14] == 1).float().mean()
    assert 0.3 < middle_on < 0.7


# ------------------------------------------------------------------------------ low-rank distribution

def test_low_rank_samples_have_covariance_p_pt_plus_d():
    torch.manual_seed(0)
    mean = torch.randn(1, 2, 3, 3)
    factor = torch.randn(1, 2, 2, 3, 3)
    diag = torch.rand(1, 2, 3, 3) + 0.1
    dist = LowRankLogits(mean, factor, diag)
    samples = dist.rsample(200_000).reshape(200_000, -1).double()
    p = factor.reshape(2, -1).T.double()
    expected = p @ p.T + torch.diag(diag.reshape(-1).double())
    empirical = torch.cov(samples.T)
    assert torch.allclose(samples.mean(0), mean.reshape(-1).double(), atol=0.02)
    assert torch.allclose(empirical, expected, atol=0.05 * expected.abs().max())


def test_antithetic_samples_come_in_mirrored_pairs():
    dist = LowRankLogits(torch.ones(1, 2, 4, 4), torch.randn(1, 3, 2, 4, 4), torch.ones(1, 2, 4, 4))
    samples = dist.rsample(20, antithetic=True)
    assert torch.allclose(samples[:10] + samples[10:], 2 * dist.mean.expand(10, -1, -1, -1, -1), atol=1e-5)


def test_temperature_and_class_scaling_act_on_the_deviations():
    torch.manual_seed(0)
    dist = LowRankLogits(torch.randn(1, 2, 5, 5), torch.randn(1, 2, 2, 5, 5), torch.rand(1, 2, 5, 5) + 0.1)
    frozen = dist.scaled(temperature=0.0).rsample(3)
    assert torch.allclose(frozen, dist.mean.expand(3, -1, -1, -1, -1))
    one_class = dist.scaled(class_scale=[0.0, 2.0])
    assert torch.equal(one_class.cov_diag[:, 0], torch.zeros_like(one_class.cov_diag[:, 0]))
    assert torch.allclose(one_class.cov_diag[:, 1], 4 * dist.cov_diag[:, 1])
    assert torch.allclose(one_class.cov_factor[:, :, 1], 2 * dist.cov_factor[:, :, 1])
    samples = one_class.rsample(4)
    assert torch.allclose(samples[:, :, 0], dist.mean[:, 0].expand(4, -1, -1, -1))
    with pytest.raises(ValueError, match="one factor per class"):
        dist.scaled(class_scale=[1.0])


def test_ssn_loss_reduces_to_cross_entropy_without_covariance():
    # With D → 0 and no factor every sample is the mean, and eq. 7 is the cross-entropy (eq. 4) per pixel.
    torch.manual_seed(0)
    mean = torch.randn(2, 2, 6, 6)
    target = torch.randint(0, 2, (2, 6, 6))
    dist = LowRankLogits(mean, None, torch.full_like(mean, 1e-12))
    expected = torch.nn.functional.cross_entropy(mean, target)
    assert torch.allclose(ssn_loss(dist, target, 20), expected, atol=1e-5)


def test_ssn_covariance_is_masked_outside_the_roi():
    torch.manual_seed(0)
    model = StochasticSegmentationNetwork(rank=3, width=8, depth=2).eval()
    image = torch.randn(1, 1, 16, 16)
    roi = torch.zeros(1, 1, 16, 16)
    roi[..., 4:12, 4:12] = 1
    with torch.no_grad():
        dist = model(image, roi)
        samples = dist.rsample(50)
    outside = roi[0, 0] == 0
    assert torch.all(dist.cov_factor[..., outside] == 0)
    assert torch.allclose(dist.cov_diag[..., outside], torch.full_like(dist.cov_diag[..., outside], model.epsilon))
    assert samples[..., outside].std(0).max() < 0.02 and samples[..., ~outside].std(0).max() > 0.05


# ----------------------------------------------------------------------------------- every architecture

@pytest.mark.parametrize("spatial_dims, shape", [(2, (32, 32)), (3, (16, 16, 16))])
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_trains_and_samples_in_2d_and_3d(architecture, spatial_dims, shape):
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture](spatial_dims=spatial_dims, width=8, depth=3)
    image = torch.randn(2, 1, *shape)
    target = torch.randint(0, 2, (2, *shape))
    loss = model.loss(image, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        samples = model.sample_logits(image, 5)
    assert samples.shape == (5, 2, 2, *shape)
    stochastic = architecture != "unet"
    assert (samples.std(0).max() > 1e-4) == stochastic


def test_mc_dropout_samples_with_dropout_and_predicts_without():
    torch.manual_seed(0)
    model = MCDropoutUNet(width=8, depth=2, dropout=0.3).eval()
    image = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        a, b = model(image), model(image)
        samples = model.sample_logits(image, 4)
    assert torch.equal(a, b)                      # eval mode: dropout off outside sampling
    assert not torch.allclose(samples[0], samples[1])
    assert not any(m.training for m in model.modules())  # sampling restores the modes
    with pytest.raises(ValueError, match="dropout"):
        MCDropoutUNet(dropout=0.0)


def test_mc_dropout_measures_known_answers():
    mask = np.zeros((10, 10), bool)
    mask[2:6, 2:6] = True
    same = mc_dropout_measures(np.stack([mask] * 5))
    assert same == {"coefficient_of_variation": 0.0, "mean_pairwise_dice": 1.0, "mean_voxelwise_uncertainty": 0.0}
    other = mask.copy()
    other[2:6, 6:10] = True                        # twice the area, half overlapping
    measures = mc_dropout_measures(np.stack([mask, other]))
    assert measures["coefficient_of_variation"] == pytest.approx(np.std([16, 32]) / 24)
    assert measures["mean_pairwise_dice"] == pytest.approx(2 * 16 / 48)
    # labelled voxels: 16 with frequency 1 (entropy 0) and 16 with frequency ½ (entropy 1)
    assert measures["mean_voxelwise_uncertainty"] == pytest.approx(0.5)


def test_phiseg_deep_supervision_and_kl_terms_are_in_the_loss():
    torch.manual_seed(0)
    model = PHiSeg(width=8, depth=3, latent_levels=3)
    image = torch.randn(2, 1, 16, 16)
    target = torch.randint(0, 2, (2, 16, 16))
    loss = model.loss(image, target)
    # Every latent level of both nets gets a gradient: the KL of each level is in the loss.
    loss.backward()
    for net in (model.prior, model.posterior):
        for head in net.mu:
            assert head.weight.grad.abs().sum() > 0
    # One output per latent level, finest first, at resolutions 1, 1/2, 1/4 (deep supervision).
    _, _, zs = model.prior.latents(model.prior.encode(image))
    outputs = model.likelihood(zs)
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 16), (8, 8), (4, 4)]
    with torch.no_grad():
        samples = model.eval().sample_logits(image, 3)
    assert not torch.allclose(samples[0], samples[1])


@pytest.mark.parametrize("cls, n", [(StochasticSegmentationNetwork, 100), (ProbabilisticUNet, 30)])
def test_ssn_and_prob_unet_run_the_unet_once_for_many_samples(cls, n):
    model = cls(width=8, depth=2).eval()
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        samples = model.sample_logits(torch.randn(1, 1, 16, 16), n)
    assert samples.shape == (n, 1, 2, 16, 16) and len(calls) == 1


# -------------------------------------------------------------------------------------- model files

def test_model_file_round_trip_keeps_weights_config_and_normalisation(tmp_path):
    torch.manual_seed(0)
    model = StochasticSegmentationNetwork(rank=4, width=8, depth=2)
    normalization = IntensityNormalization(low=2.0, high=98.0)
    path = save_model(tmp_path / "ssn.pt", model, normalization, {"trained_by": "test"})
    loaded = load_model(path, architecture="ssn")
    assert loaded.architecture == "ssn" and loaded.model.rank == 4
    assert loaded.normalization == normalization and loaded.metadata == {"trained_by": "test"}
    image = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(image).mean, loaded.model(image).mean)


def test_missing_model_file_names_the_expected_path(tmp_path):
    path = tmp_path / "models" / "ssn_2d.pt"
    with pytest.raises(FileNotFoundError, match=str(path).replace(".", r"\.")):
        load_model(path)


def test_wrong_architecture_file_is_refused(tmp_path):
    path = save_model(tmp_path / "unet.pt", DeterministicUNet(width=8, depth=2), IntensityNormalization())
    with pytest.raises(ValueError, match="holds a 'unet' network, but a 'ssn' network was expected"):
        load_model(path, architecture="ssn")
    torch.save(DeterministicUNet(width=8, depth=2).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not a segmentation-uncertainty-network file"):
        load_model(tmp_path / "bare.pt")
    content = torch.load(path, weights_only=True)
    content["config"]["width"] = 16                 # weights that do not fit the recorded architecture
    torch.save(content, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_model(tmp_path / "mismatch.pt")


def test_wrong_number_of_image_channels_is_refused():
    assert check_input_channels(np.zeros((8, 8, 8)), 1, 2).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="takes 1 image channel"):
        check_input_channels(np.zeros((2, 8, 8, 8)), 1, 2)
    with pytest.raises(ValueError, match="takes 2 image channels"):
        check_input_channels(np.zeros((3, 8, 8)), 2, 2)
    with pytest.raises(ValueError, match="model is 3-D"):
        check_input_channels(np.zeros((8, 8)), 1, 3)


def test_model_file_names_its_input_channels(tmp_path):
    model = DeterministicUNet(in_channels=2, width=8, depth=2)
    path = save_model(tmp_path / "m.pt", model, IntensityNormalization(), inputs=("image", "reference"))
    loaded = load_model(path)
    assert loaded.inputs == ("image", "reference") and loaded.image_channels == 1
    assert load_model(save_model(tmp_path / "n.pt", model, IntensityNormalization())).image_channels == 2
    with pytest.raises(ValueError, match="name 1 channels but the network takes 2"):
        save_model(tmp_path / "x.pt", model, IntensityNormalization(), inputs=("image",))
    with pytest.raises(ValueError, match="inputs must name channels"):
        save_model(tmp_path / "y.pt", model, IntensityNormalization(), inputs=("image", "mask"))


def test_intensity_normalisation_maps_percentiles_to_unit_range():
    rng = np.random.default_rng(0)
    image = np.zeros((20, 30, 30), np.float32)
    image[5:15, 5:25, 5:25] = rng.uniform(100, 500, (10, 20, 20))
    normalized = IntensityNormalization(low=0.0, high=100.0).apply(image)
    inside = normalized[5:15, 5:25, 5:25]
    assert inside.min() == pytest.approx(0.0, abs=1e-6) and inside.max() == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(IntensityNormalization().apply(image * 3 + 7)[5:15, 5:25, 5:25],
                       IntensityNormalization().apply(image)[5:15, 5:25, 5:25], atol=1e-5)
    with pytest.raises(ValueError, match="unknown intensity normalisation"):
        IntensityNormalization(method="zscore")


# ------------------------------------------------------------------------------- training, evaluation

def test_training_lowers_the_loss_and_ssn_can_start_from_a_trained_unet():
    from SegmentationUncertaintyLib.networks.training import train_model

    rng = np.random.default_rng(0)
    masks = np.zeros((12, 16, 16), bool)
    for k, mask in enumerate(masks):
        c = rng.integers(5, 11, 2)
        mask[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3] = True
    images = np.stack([masks + 0.1 * rng.standard_normal(masks.shape), masks], axis=1).astype(np.float32)
    annotations = masks[:, None].repeat(2, axis=1)
    torch.manual_seed(0)
    unet = DeterministicUNet(in_channels=2, width=8, depth=2)
    history = train_model(unet, images, annotations, iterations=100, batch_size=4, learning_rate=3e-3, crop=12)
    assert history[-1] < 0.5 * history[0]
    ssn = StochasticSegmentationNetwork(in_channels=2, width=8, depth=2).initialize_mean_from(unet).eval()
    x = torch.as_tensor(images[:2])
    with torch.no_grad():
        assert torch.allclose(ssn.predict_logits(x), unet.eval()(x))
    with pytest.raises(ValueError, match="crop must be a multiple"):
        train_model(unet, images, annotations, iterations=1, crop=7)


def test_evaluation_of_a_perfect_sampler_and_of_a_deterministic_one():
    from SegmentationUncertaintyLib.networks.evaluation import evaluate_image

    rng = np.random.default_rng(0)
    annotations = np.zeros((4, 20, 20), bool)
    for k, a in enumerate(annotations):
        a[5:12 + k, 5:12] = True
    # samples drawn from the annotations themselves (hard probabilities): GED ≈ 0, same diversity
    samples = annotations[rng.integers(0, 4, 400)].astype(np.float32)
    perfect = evaluate_image(samples, annotations)
    assert abs(perfect["ged"]) < 0.01
    assert perfect["diversity"] == pytest.approx(perfect["annotator_diversity"], abs=0.01)
    constant = evaluate_image(np.repeat(annotations[:1].astype(np.float32), 50, 0), annotations)
    assert constant["diversity"] == 0.0 and constant["ged"] > perfect["ged"] + 0.05
