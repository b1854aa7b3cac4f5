"""Network samplers of segmentations: Stochastic Segmentation Network (papers/003), PHiSeg (papers/001),
probabilistic U-Net, MC-dropout U-Net (papers/002) and the deterministic U-Net baseline, in torch
(CPU by default, CUDA when asked).

=====================  =============================================================================
module                 what
=====================  =============================================================================
``unet``               small 2-D / 3-D U-Net backbone (configurable width and depth)
``base``               :class:`SegmentationNetwork` interface; :class:`DeterministicUNet`
``ssn``                low-rank normal over logits, eq. 7 loss, post-inference scaling, toy problem §5.1
``phiseg``             hierarchical latent model with prior / posterior nets and deep supervision
``prob_unet``          probabilistic U-Net (global latent)
``mc_dropout``         dropout kept on at inference; CV of volume, mean pairwise Dice, voxelwise entropy
``dataset``            multi-annotator sets from real MRIs (MNI152, Colin27) with GPSSI annotations
``training``           training loop (one random annotation per image and batch)
``evaluation``         GED (d = 1 − IoU), sample diversity, Dice, γ-map NCC over 100 samples
``io``                 model files: architecture, configuration, weights, intensity normalisation
``sampler``            :class:`NetworkSampler`, the GPSSI-compatible sampler interface for a model file
=====================  =============================================================================
"""

from .base import DeterministicUNet, SegmentationNetwork
from .io import ARCHITECTURES, IntensityNormalization, LoadedModel, load_model, save_model, shipped_model_path
from .mc_dropout import MCDropoutUNet, mc_dropout_measures
from .phiseg import PHiSeg
from .prob_unet import ProbabilisticUNet
from .sampler import NetworkSampler, network_sources
from .ssn import LowRankLogits, StochasticSegmentationNetwork, fit_toy_problem, ssn_loss, toy_label_maps
from .unet import UNet

__all__ = [
    "SegmentationNetwork", "DeterministicUNet", "StochasticSegmentationNetwork", "LowRankLogits", "ssn_loss",
    "toy_label_maps", "fit_toy_problem", "PHiSeg", "ProbabilisticUNet", "MCDropoutUNet", "mc_dropout_measures",
    "UNet", "ARCHITECTURES", "IntensityNormalization", "LoadedModel", "load_model", "save_model",
    "shipped_model_path", "NetworkSampler", "network_sources",
]
