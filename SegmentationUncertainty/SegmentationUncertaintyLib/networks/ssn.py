"""Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020; papers/003).

The logits of all pixels and classes are jointly normal, ``η | x ~ N(μ(x), P(x) P(x)ᵀ + D(x))`` (eq. 5),
with a covariance factor ``P`` of rank ``R`` and a diagonal ``D``, all three given by 1×1 convolution heads
on a U-Net backbone. Training maximises the Monte-Carlo estimate of ``log p(y | x)`` (eqs. 6–7); at test
time one forward pass gives the distribution, from which any number of logit maps are drawn, and which
can be manipulated after inference (temperature and per-class scaling of the covariance, section 5.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import SegmentationNetwork
from .unet import UNet, conv

__all__ = ["LowRankLogits", "ssn_loss", "StochasticSegmentationNetwork", "toy_label_maps", "ToyFit",
           "fit_toy_problem"]


class LowRankLogits:
    """Normal distribution over logit maps with covariance ``P Pᵀ + D`` (SSN eq. 5).

    Parameters
    ----------
    mean : Tensor, shape (B, C, *S)
    cov_factor : Tensor, shape (B, R, C, *S), or None
        The ``R`` columns of ``P``, each a logit-shaped map; ``None`` for the diagonal-only model.
    cov_diag : Tensor, shape (B, C, *S)
        Diagonal ``D`` (variances, > 0).
    """

    def __init__(self, mean: torch.Tensor, cov_factor: torch.Tensor | None, cov_diag: torch.Tensor):
        if cov_diag.shape != mean.shape:
            raise ValueError(f"cov_diag has shape {tuple(cov_diag.shape)} but mean has {tuple(mean.shape)}")
        if cov_factor is not None and (cov_factor.shape[0] != mean.shape[0] or cov_factor.shape[2:] != mean.shape[1:]):
            raise ValueError(f"cov_factor must have shape (B, R, *{tuple(mean.shape[1:])}), got {tuple(cov_factor.shape)}")
        self.mean = mean
        self.cov_factor = cov_factor
        self.cov_diag = cov_diag

    @property
    def rank(self) -> int:
        return 0 if self.cov_factor is None else self.cov_factor.shape[1]

    def _deviation(self, n: int) -> torch.Tensor:
        """``n`` draws of ``η − μ`` by reparameterisation: ``P ε_R + √D ε``, ``ε_R ~ N(0, I_R)``, ``ε ~ N(0, I)``."""
        mean = self.mean
        deviation = self.cov_diag.sqrt() * torch.randn((n, *mean.shape), dtype=mean.dtype, device=mean.device)
        if self.cov_factor is not None:
            eps = torch.randn((n, mean.shape[0], self.rank), dtype=mean.dtype, device=mean.device)
            factor = self.cov_factor.flatten(2)                                   # (B, R, C·S)
            low_rank = torch.einsum("nbr,brk->nbk", eps, factor).reshape(deviation.shape)
            deviation = deviation + low_rank
        return deviation

    def rsample(self, n: int, antithetic: bool = False) -> torch.Tensor:
        """``n`` logit maps, shape ``(n, B, C, *S)``, differentiable in the parameters.

        With ``antithetic=True`` the draws come in pairs ``μ ± δ`` (as the reference code trains), which
        lowers the variance of the Monte-Carlo loss; independent draws otherwise.
        """
        if n < 1:
            raise ValueError(f"the number of samples must be at least 1, got {n}")
        if antithetic:
            half = self._deviation((n + 1) // 2)
            deviation = torch.cat([half, -half])[:n]
        else:
            deviation = self._deviation(n)
        return self.mean.unsqueeze(0) + deviation

    def scaled(self, temperature: float = 1.0, class_scale: Sequence[float] | None = None) -> "LowRankLogits":
        """The distribution with its covariance scaled after inference (SSN section 5.3, Fig. 6).

        Every deviation from the mean of class ``c`` is multiplied by ``temperature · class_scale[c]``, i.e.
        the covariance blocks of classes ``c, c'`` by ``t² s_c s_c'``. A temperature below 1 trades sample
        diversity for quality; raising one class's scale makes that class appear and vanish more between
        samples. Scale 0 gives the mean every time; a negative scale mirrors the deviations.
        """
        n_classes = self.mean.shape[1]
        scale = torch.full((n_classes,), float(temperature), dtype=self.mean.dtype, device=self.mean.device)
        if class_scale is not None:
            class_scale = np.asarray(class_scale, dtype=float).ravel()
            if class_scale.size != n_classes:
                raise ValueError(f"class_scale needs one factor per class ({n_classes}), got {class_scale.size}")
            scale = scale * torch.as_tensor(class_scale, dtype=self.mean.dtype, device=self.mean.device)
        shape = (1, n_classes) + (1,) * (self.mean.dim() - 2)
        scale = scale.reshape(shape)
        factor = None if self.cov_factor is None else self.cov_factor * scale.unsqueeze(1)
        return LowRankLogits(self.mean, factor, self.cov_diag * scale ** 2)

    def log_likelihood(self, target: torch.Tensor, n_samples: int = 10_000, chunk: int = 1_000) -> torch.Tensor:
        """Monte-Carlo estimate of ``log p(y | x) = log E_η[Π_i softmax(η_i)_{y_i}]`` (SSN eq. 6), shape (B,).

        ``target``: class indices ``(B, *S)``. Independent draws in chunks; no gradient.
        """
        with torch.no_grad():
            totals = []
            for start in range(0, n_samples, chunk):
                samples = self.rsample(min(chunk, n_samples - start))
                totals.append(_sample_log_likelihoods(samples, target))
            return torch.logsumexp(torch.cat(totals), dim=0) - math.log(n_samples)


def _sample_log_likelihoods(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Σ_i log softmax(η_i^(m))_{y_i}`` for each draw, shape (M, B) (eq. 4 summed over pixels)."""
    log_probs = F.log_softmax(samples, dim=2)                                  # (M, B, C, *S)
    index = target.unsqueeze(0).unsqueeze(2).expand(samples.shape[0], *target.shape[:1], 1, *target.shape[1:])
    return log_probs.gather(2, index).flatten(2).sum(-1)


def ssn_loss(distribution: LowRankLogits, target: torch.Tensor, n_samples: int = 20) -> torch.Tensor:
    """SSN training loss, eq. 7, per pixel: ``(−logsumexp_m Σ_i log softmax(η_i^(m))_{y_i} + log M) / S``.

    ``M = n_samples`` antithetic reparameterised draws; averaged over the batch and divided by the number
    of pixels ``S`` (a constant factor that keeps the learning rate independent of the image size).
    """
    samples = distribution.rsample(n_samples, antithetic=True)
    log_likelihood = torch.logsumexp(_sample_log_likelihoods(samples, target), dim=0) - math.log(n_samples)
    return -log_likelihood.mean() / target[0].numel()


class StochasticSegmentationNetwork(SegmentationNetwork):
    """SSN: U-Net backbone and three 1×1 heads (mean, log-diagonal, covariance factor).

    Parameters
    ----------
    rank : int
        Rank ``R`` of the covariance factor (10 in the paper).
    diagonal : bool
        The paper's diagonal-only ablation (no factor).
    epsilon : float
        Added to ``exp(log-diagonal)`` so that ``D`` stays positive.
    n_mc_samples : int
        ``M`` of eq. 7 during training (20 in the paper).

    The factor and the diagonal are multiplied by the region-of-interest mask (``roi``): outside it (air
    around the head) the optimal covariance is infinite and would blow up (section 5.1, caveat).
    """

    architecture = "ssn"
    one_pass_sampling = True

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, n_classes: int = 2, rank: int = 10,
                 width: int = 16, depth: int = 3, diagonal: bool = False, epsilon: float = 1e-5,
                 n_mc_samples: int = 20):
        if not diagonal and rank < 1:
            raise ValueError(f"rank must be at least 1 (or use diagonal=True), got {rank}")
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, n_classes=n_classes, rank=rank,
                         width=width, depth=depth, diagonal=diagonal, epsilon=epsilon, n_mc_samples=n_mc_samples)
        self.rank = 0 if diagonal else int(rank)
        self.epsilon = float(epsilon)
        self.n_mc_samples = int(n_mc_samples)
        self.backbone = UNet(spatial_dims, in_channels, width, depth)
        self.mean_head = conv(spatial_dims, width, n_classes, 1)
        self.log_diag_head = conv(spatial_dims, width, n_classes, 1)
        self.factor_head = None if diagonal else conv(spatial_dims, width, n_classes * self.rank, 1)
        # Start nearly deterministic (logit variance ~e^-4 + small factor): the covariance then grows where
        # the annotations disagree, rather than having to shrink from unit noise everywhere, which trains
        # much faster and avoids the early blow-up the paper's toy problem needed mean pre-training for.
        with torch.no_grad():
            self.log_diag_head.bias.fill_(-4.0)
            self.log_diag_head.weight.mul_(0.1)
            if self.factor_head is not None:
                self.factor_head.weight.mul_(0.1)
                self.factor_head.bias.zero_()

    def initialize_mean_from(self, unet: SegmentationNetwork) -> "StochasticSegmentationNetwork":
        """Copy the backbone and the mean head from a trained deterministic U-Net of the same backbone.

        Pre-training the mean, as the paper does for its toy problem (section 5.1): the covariance heads
        then only learn where the annotations disagree, which takes far fewer iterations than learning
        mean and covariance together from scratch.
        """
        self.backbone.load_state_dict(unet.backbone.state_dict())
        self.mean_head.load_state_dict(unet.head.state_dict())
        return self

    def forward(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> LowRankLogits:
        features = self.backbone(image)
        mean = self.mean_head(features)
        mask = torch.ones_like(mean[:, :1]) if roi is None else roi.to(mean.dtype)
        cov_diag = self.log_diag_head(features).exp() * mask + self.epsilon
        factor = None
        if self.factor_head is not None:
            factor = self.factor_head(features) * mask
            factor = factor.reshape(mean.shape[0], self.rank, *mean.shape[1:])
        return LowRankLogits(mean, factor, cov_diag)

    def loss(self, image: torch.Tensor, target: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        return ssn_loss(self(image, roi), target, self.n_mc_samples)

    def prepare_sampling(self, image: torch.Tensor, roi: torch.Tensor | None = None, temperature: float = 1.0,
                         class_scale: Sequence[float] | None = None) -> Callable[[int], torch.Tensor]:
        distribution = self(image, roi)
        if temperature != 1.0 or class_scale is not None:
            distribution = distribution.scaled(temperature, class_scale)
        return distribution.rsample

    def predict_logits(self, image: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        # "To obtain the most likely logit sample, we use the mean of the distribution" (section 4).
        return self.mean_head(self.backbone(image))


# --------------------------------------------------------------------------------- toy problem (5.1)

def toy_label_maps(n_pixels: int = 21) -> torch.Tensor:
    """The two equiprobable label maps of SSN section 5.1, shape (2, n_pixels), int64.

    First third on (1), last third off (0); the middle third is off in the first map and on in the second.
    """
    third = n_pixels // 3
    maps = torch.zeros((2, n_pixels), dtype=torch.int64)
    maps[:, :third] = 1
    maps[1, third:n_pixels - third] = 1
    return maps


@dataclass
class ToyFit:
    """A fitted toy model: its distribution over the 21 logit pairs and its log-likelihood."""

    distribution: LowRankLogits
    log_likelihood: float  # mean over the two label maps of the MC estimate of log p(y)
    history: list[float]   # training loss (eq. 7, per label map, not divided by S) every 100 iterations


def fit_toy_problem(rank: int = 2, diagonal: bool = False, iterations: int = 400, n_mc_samples: int = 200,
                    mean_iterations: int = 100, learning_rate: float = 0.1, n_eval_samples: int = 20_000,
                    seed: int = 0) -> ToyFit:
    """Fit the SSN toy problem (section 5.1) by gradient descent on eq. 7.

    The input is constant, so the model is the distribution itself: free parameters for the mean (2×21),
    log-diagonal (2×21) and, unless ``diagonal``, a rank-``rank`` factor. As in the paper, the mean is
    pre-trained first (``mean_iterations`` with a fixed small covariance): otherwise the covariance grows
    faster than the mean and the fit sticks in a poor local optimum. The paper's log-likelihoods are
    −0.93 (low rank, 2) and −4.87 (diagonal), the optimum being log ½ = −0.69; the diagonal model cannot
    beat ``7 log ½ = −4.85`` because its middle pixels are independent.

    Returns the fit with the log-likelihood estimated by ``n_eval_samples`` independent draws (eq. 6).
    """
    maps = toy_label_maps()
    n_pixels = maps.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean = torch.zeros((1, 2, n_pixels), requires_grad=True)
        log_diag = torch.full((1, 2, n_pixels), -4.0, requires_grad=True)
        factor = None if diagonal else (0.01 * torch.randn((1, rank, 2, n_pixels))).requires_grad_(True)
        history: list[float] = []

        def distribution() -> LowRankLogits:
            return LowRankLogits(mean, factor, log_diag.exp() + 1e-5)

        def loss_fn() -> torch.Tensor:
            # Both label maps are the data set: the loss is the mean of eq. 7 over the two (one set of draws
            # serves both: a batch of two identical inputs).
            samples = distribution().rsample(n_mc_samples, antithetic=True).expand(-1, 2, -1, -1)
            log_likelihood = torch.logsumexp(_sample_log_likelihoods(samples, maps), dim=0) - math.log(n_mc_samples)
            return -log_likelihood.mean()

        optimiser = torch.optim.Adam([mean], lr=learning_rate)
        for _ in range(mean_iterations):
            optimiser.zero_grad()
            loss_fn().backward()
            optimiser.step()
        parameters = [mean, log_diag] + ([] if factor is None else [factor])
        optimiser = torch.optim.Adam(parameters, lr=learning_rate)
        for step in range(iterations):
            optimiser.zero_grad()
            loss = loss_fn()
            loss.backward()
            optimiser.step()
            if step % 100 == 0:
                history.append(loss.item())
        with torch.no_grad():
            fitted = LowRankLogits(mean.detach(), None if factor is None else factor.detach(),
                                   log_diag.detach().exp() + 1e-5)
            log_likelihood = float(LowRankLogits(fitted.mean.expand(2, -1, -1),
                                                 None if factor is None else fitted.cov_factor.expand(2, -1, -1, -1),
                                                 fitted.cov_diag.expand(2, -1, -1)).log_likelihood(maps, n_eval_samples).mean())
    return ToyFit(fitted, log_likelihood, history)
