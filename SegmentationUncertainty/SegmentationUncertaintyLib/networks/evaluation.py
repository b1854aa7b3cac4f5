"""Evaluation of network samplers on held-out images with several annotations each, with the protocol of
PHiSeg (papers/001) and SSN (papers/003): 100 samples per image, and per image

* ``ged``: squared generalised energy distance ``D²_GED`` between samples and annotations, ``d = 1 − IoU``;
* ``diversity``: sample diversity ``E[d(ŷ, ŷ′)]``; ``annotator_diversity``: the same among the annotations;
* ``dice``: Dice of the mean prediction against each annotation, averaged (the model's own point
  prediction where it has one — SSN's mean logits, the U-Net's output — else the mean of the sample
  probabilities thresholded at ½, as the papers do for the probabilistic baselines);
* ``gamma_ncc``: PHiSeg's ``S_NCC`` (eq. 5), the NCC between the γ-map (expected cross-entropy between the
  mean prediction and the samples) and each annotator's error map (expected cross-entropy between the
  annotation and the samples), averaged over annotators.

Reported as mean ± standard error over images. All metrics come from :mod:`SegmentationUncertaintyLib.metrics`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import metrics
from .base import SegmentationNetwork

__all__ = ["draw_probabilities", "evaluate_image", "evaluate_model", "format_table", "METRICS"]

#: Reported metrics: key → (column title, better direction).
METRICS = {
    "ged": ("D²_GED ↓", "lower"),
    "diversity": ("sample diversity", None),
    "annotator_diversity": ("annotator diversity", None),
    "dice": ("Dice of mean prediction ↑", "higher"),
    "gamma_ncc": ("γ-map NCC ↑", "higher"),
}


def draw_probabilities(model: SegmentationNetwork, images: np.ndarray, rois: np.ndarray | None = None,
                       n_samples: int = 100, seed: int = 0, batch_size: int = 50, device: str = "cpu"
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities of ``n_samples`` samples for each image, and the point prediction.

    Parameters
    ----------
    images : ndarray, shape (B, channels, *S), normalised
    rois : ndarray of bool, shape (B, *S), optional

    Returns
    -------
    samples : ndarray of float32, shape (n_samples, B, C, *S)
        Softmax of each logit sample.
    prediction : ndarray of float32, shape (B, C, *S), or None
        Softmax of the model's own point prediction, when it has one.
    """
    model.eval()
    x = torch.as_tensor(images, dtype=torch.float32, device=device)
    roi = None if rois is None else torch.as_tensor(rois[:, None], dtype=torch.float32, device=device)
    chunks = []
    with torch.no_grad(), torch.random.fork_rng(devices=[] if device == "cpu" else [torch.device(device)]):
        torch.manual_seed(seed)
        draw = model.prepare_sampling(x, roi)
        for start in range(0, n_samples, batch_size):
            chunks.append(torch.softmax(draw(min(batch_size, n_samples - start)), dim=2).cpu().numpy())
        point = model.predict_logits(x, roi)
    prediction = None if point is None else torch.softmax(point, dim=1).cpu().numpy()
    return np.concatenate(chunks), prediction


def evaluate_image(sample_probabilities: np.ndarray, annotations: np.ndarray,
                   prediction: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one image (binary: foreground class).

    Parameters
    ----------
    sample_probabilities : ndarray, shape (N, *S)
        Foreground probability of each sample; a sample's segmentation is where it exceeds ½.
    annotations : ndarray of bool, shape (K, *S)
    prediction : ndarray, shape (*S), optional
        Foreground probability of the model's point prediction; the sample mean when omitted.
    """
    samples = sample_probabilities > 0.5
    annotations = np.asarray(annotations, dtype=bool)
    mean = sample_probabilities.mean(axis=0)
    point = (mean if prediction is None else prediction) > 0.5
    gamma = metrics.gamma_map(sample_probabilities)
    errors = metrics.rater_error_maps(sample_probabilities, annotations)
    return {
        "ged": metrics.generalized_energy_distance(samples, annotations),
        "diversity": metrics.sample_diversity(samples),
        "annotator_diversity": metrics.sample_diversity(annotations),
        "dice": float(np.mean([metrics.dice(point, a) for a in annotations])),
        "gamma_ncc": metrics.gamma_ncc(gamma, errors),
    }


def evaluate_model(model: SegmentationNetwork, images: np.ndarray, annotations: np.ndarray,
                   rois: np.ndarray | None = None, n_samples: int = 100, seed: int = 0, batch_size: int = 16,
                   device: str = "cpu") -> dict[str, object]:
    """Evaluate ``model`` on held-out images (binary segmentation).

    Parameters
    ----------
    images : ndarray, shape (B, channels, *S), normalised
    annotations : ndarray of bool, shape (B, K, *S)
    rois : ndarray of bool, shape (B, *S), optional
    n_samples : int
        Samples per image (100 in both papers).
    batch_size : int
        Images per forward pass.

    Returns
    -------
    dict with, for each key of :data:`METRICS`, ``{"mean", "sem", "values"}``, and ``"n_images"``.
    """
    if images.shape[0] != annotations.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {annotations.shape[0]} sets of annotations")
    per_image: dict[str, list[float]] = {key: [] for key in METRICS}
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        samples, prediction = draw_probabilities(model, images[start:stop],
                                                 None if rois is None else rois[start:stop],
                                                 n_samples, seed + start, device=device)
        for b in range(stop - start):
            result = evaluate_image(samples[:, b, 1], annotations[start + b],
                                    None if prediction is None else prediction[b, 1])
            for key, value in result.items():
                per_image[key].append(value)
    summary: dict[str, object] = {"n_images": int(images.shape[0])}
    for key, values in per_image.items():
        values = np.asarray(values, dtype=float)
        sem = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
        summary[key] = {"mean": float(values.mean()), "sem": sem, "values": values.tolist()}
    return summary


def format_table(results: dict[str, dict], keys: Sequence[str] = tuple(METRICS)) -> str:
    """Markdown table, one row per model: ``mean ± standard error`` of each metric."""
    header = "| model | " + " | ".join(METRICS[k][0] for k in keys) + " |"
    lines = [header, "|" + " --- |" * (len(keys) + 1)]
    for name, summary in results.items():
        cells = [f"{summary[k]['mean']:.3f} ± {summary[k]['sem']:.3f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
