"""Fusion of several raters' segmentations or probability maps into a consensus (papers/004).

* :func:`fuse` — Student-t (robust) or Gaussian variational-Bayes consensus with rater bias, covariance,
  per-voxel weights ``τ`` and a spatial smoothness prior; SimpleITK STAPLE and majority vote behind the
  same interface; returns a :class:`FusionResult`.
* :func:`fuse_mixture` — several consensuses and clusters of raters (variational boosting).
* building blocks: :mod:`.links` (square-root / logit links), :mod:`.inputs` (checks, probability maps
  from masks by signed geodesic distance, fusion domain), :mod:`.spatial_prior` (separable Gaussian
  bases), :mod:`.student_t` (the variational updates), :mod:`.mixture`, :mod:`.baselines`.
"""

from .consensus import DEFAULT_SMOOTHNESS_MM, METHODS, default_smoothness_mm, fuse, fuse_maps, fuse_mixture
from .inputs import RaterMaps, check_raters, labels_to_probabilities, prepare_raters
from .links import LogitLink, SqrtLink, get_link
from .result import FusionResult

__all__ = ["fuse", "fuse_mixture", "fuse_maps", "METHODS", "DEFAULT_SMOOTHNESS_MM", "default_smoothness_mm",
           "FusionResult", "RaterMaps", "check_raters", "labels_to_probabilities", "prepare_raters", "SqrtLink",
           "LogitLink", "get_link"]
