"""SegmentationUncertaintyLogic: the reference, sample data, uncertainty maps and metrics on MRML nodes.

Console example (inside Slicer, or outside after ``create_scene()``)::

    logic = SegmentationUncertaintyLogic()
    volume, reference = logic.loadSampleCase("mni152-ventricles")
    maps = logic.computeUncertaintyMaps(volume, samplesSegmentationNode, reference=reference)
    logic.showOverlay(maps.entropy)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from SegmentationUncertaintyLib import metrics

from . import overlays
from .nodes import (geometry_of_volume, require_node, require_segment, segment_ids, segment_mask,
                    update_or_add_volume, write_table)
from .sample_scenes import DEFAULT_CASE, SAMPLE_CASES, load_sample_case

Progress = Callable[[float, str], None]


def _no_progress(_fraction: float, _message: str) -> None:
    pass


@dataclass
class UncertaintyMaps:
    """Output nodes of :meth:`SegmentationUncertaintyLogic.computeUncertaintyMaps`.

    Pass an instance (with any subset of nodes set) as ``outputs`` to reuse those nodes.
    """

    frequency: object = None  # vtkMRMLScalarVolumeNode: fraction of samples containing each voxel
    entropy: object = None  # vtkMRMLScalarVolumeNode: binary marginal entropy of the frequency, bits
    gamma: object = None  # vtkMRMLScalarVolumeNode: PHiSeg γ-map (mean cross-entropy), nats
    metrics: object = None  # vtkMRMLTableNode: one row per metric


class SegmentationUncertaintyLogic:
    """Qt-free logic of the SegmentationUncertainty module, scriptable from the Slicer Python console.

    Example
    -------
    >>> logic = SegmentationUncertaintyLogic()
    >>> volume, reference = logic.loadSampleCase("mni152-ventricles")
    """

    sampleCases = {key: title for key, (title, _loader) in SAMPLE_CASES.items()}
    colorTables = tuple(overlays.COLOR_TABLES)

    def loadSampleCase(self, key: str = DEFAULT_CASE):  # noqa: N802 (Slicer API style)
        """Add a sample image volume and its reference segmentation to the scene; see :data:`SAMPLE_CASES`."""
        return load_sample_case(key)

    def computeUncertaintyMaps(self, imageVolume, samples, segmentIds: Sequence[str] | None = None,  # noqa: N802
                               reference=None, referenceSegmentId: str | None = None,
                               outputs: UncertaintyMaps | None = None,
                               progress: Progress | None = None) -> UncertaintyMaps:
        """Frequency, entropy and γ maps and a metrics table of a set of samples or raters.

        Parameters
        ----------
        imageVolume : vtkMRMLScalarVolumeNode
            Gives the output grid; samples are resampled onto it.
        samples : vtkMRMLSegmentationNode or sequence of vtkMRMLScalarVolumeNode
            Each segment is one sample / rater (``segmentIds`` selects some; default all), or each volume is
            one probability map in [0, 1] on ``imageVolume``'s grid.
        reference, referenceSegmentId : vtkMRMLSegmentationNode, str, optional
            A reference segment: adds Dice / HD95 to the reference and GED² between samples and reference.
        outputs : UncertaintyMaps, optional
            Nodes to overwrite; missing ones are created, named after ``samples``.
        progress : callable(fraction, message), optional

        Returns
        -------
        UncertaintyMaps
        """
        progress = progress or _no_progress
        require_node(imageVolume, "vtkMRMLScalarVolumeNode", "image volume")
        shape = tuple(np.asarray(imageVolume.GetImageData().GetDimensions())[::-1]) if imageVolume.GetImageData() else None
        if shape is None:
            raise ValueError(f"image volume '{imageVolume.GetName()}' has no image data")
        probability_nodes = None
        if isinstance(samples, (list, tuple)):
            probability_nodes = list(samples)
            if len(probability_nodes) < 2:
                raise ValueError("give at least two probability volumes (samples or raters)")
            for node in probability_nodes:
                require_node(node, "vtkMRMLScalarVolumeNode", "probability volume")
            name = "Probability maps"
            count = len(probability_nodes)
        else:
            require_node(samples, "vtkMRMLSegmentationNode", "samples segmentation")
            available = segment_ids(samples)
            segmentIds = list(segmentIds) if segmentIds is not None else available
            missing = [s for s in segmentIds if s not in available]
            if missing:
                raise ValueError(f"samples segmentation '{samples.GetName()}' has no segment(s) {missing}")
            if len(segmentIds) < 2:
                raise ValueError(f"samples segmentation '{samples.GetName()}' needs at least two segments "
                                 f"(samples or raters); it has {len(segmentIds)}")
            name = samples.GetName()
            count = len(segmentIds)
        reference_mask = None
        if reference is not None:
            referenceSegmentId = require_segment(reference, referenceSegmentId, "reference segmentation")

        spacing = geometry_of_volume(imageVolume).spacing
        progress(0.0, f"Reading {count} samples")
        if probability_nodes is not None:
            import slicer

            probabilities = []
            for node in probability_nodes:
                array = np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float32)
                if array.shape != shape:
                    raise ValueError(f"probability volume '{node.GetName()}' has shape {array.shape}, "
                                     f"the image {shape}: resample it onto the image grid first")
                if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
                    raise ValueError(f"probability volume '{node.GetName()}' has values outside [0, 1]")
                probabilities.append(array)
            masks = [p > 0.5 for p in probabilities]
        else:
            probabilities = None
            masks = []
            for index, segment_id in enumerate(segmentIds):
                masks.append(segment_mask(samples, segment_id, imageVolume))
                progress(0.4 * (index + 1) / count, f"Read sample {index + 1}/{count}")
        if reference is not None:
            reference_mask = segment_mask(reference, referenceSegmentId, imageVolume)
            if not reference_mask.any():
                raise ValueError("the reference segment is empty: draw it first")

        progress(0.45, "Frequency and entropy maps")
        frequency = (np.mean(probabilities, axis=0) if probabilities is not None
                     else np.mean(masks, axis=0)).astype(np.float32)
        entropy = metrics.entropy_map(frequency, 2)
        progress(0.6, "γ-map")
        gamma = self._gammaMap(probabilities if probabilities is not None else masks, frequency)
        progress(0.8, "Metrics")
        table = self._metrics(masks, frequency, entropy, spacing, reference_mask)

        outputs = outputs or UncertaintyMaps()
        outputs.frequency = update_or_add_volume(frequency, imageVolume, f"{name} frequency", outputs.frequency)
        outputs.entropy = update_or_add_volume(entropy, imageVolume, f"{name} entropy", outputs.entropy)
        outputs.gamma = update_or_add_volume(gamma, imageVolume, f"{name} gamma", outputs.gamma)
        outputs.metrics = write_table(table, f"{name} metrics", outputs.metrics)
        progress(1.0, "Done")
        return outputs

    @staticmethod
    def _gammaMap(maps: Sequence[np.ndarray], frequency: np.ndarray) -> np.ndarray:
        # γ is zero wherever every sample agrees with certainty; compute it on the box where they do not,
        # so N full-size float maps never need to be in memory at once.
        uncertain = (frequency > 0) & (frequency < 1)
        if any(m.dtype != bool for m in maps):
            uncertain |= np.any([(m > 0) & (m < 1) for m in maps], axis=0)
        gamma = np.zeros(frequency.shape, dtype=np.float32)
        if not uncertain.any():
            return gamma
        coords = np.argwhere(uncertain)
        box = tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(axis=0), coords.max(axis=0)))
        gamma[box] = metrics.gamma_map(np.stack([np.asarray(m[box], dtype=np.float32) for m in maps]))
        return gamma

    @staticmethod
    def _metrics(masks, frequency, entropy, spacing, reference) -> dict:
        volumes = np.array([metrics.volume_ml(m, spacing) for m in masks])
        union = frequency > 0
        rows = {
            "number of samples": float(len(masks)),
            "mean pairwise Dice": metrics.mean_pairwise_dice(masks),
            "sample diversity (1 - IoU)": metrics.sample_diversity(masks),
            "mean volume (ml)": float(volumes.mean()),
            "coefficient of variation of volume": metrics.coefficient_of_variation(volumes),
            "mean voxelwise entropy in union (bits)": float(entropy[union].mean()) if union.any() else 0.0,
        }
        if reference is not None:
            rows["mean Dice to reference"] = float(np.mean([metrics.dice(m, reference) for m in masks]))
            rows["mean HD95 to reference (mm)"] = float(np.mean([metrics.hausdorff95(m, reference, spacing)
                                                                 for m in masks]))
            rows["GED squared to reference"] = metrics.generalized_energy_distance(masks, [reference])
        return {"metric": list(rows), "value": list(rows.values())}

    def showOverlay(self, mapVolume, colorTable: str = overlays.DEFAULT_COLOR_TABLE, opacity: float = 0.6,  # noqa: N802
                    window: float | None = None, level: float | None = None, zeroTransparent: bool = True,
                    legend: bool = True, title: str | None = None):
        """Show a map in the slice views' foreground; see :func:`overlays.show_map_overlay` (``title``: the
        legend's, default the volume's name)."""
        return overlays.show_map_overlay(mapVolume, color_table=colorTable, opacity=opacity, window=window,
                                         level=level, zero_transparent=zeroTransparent, legend=legend, title=title)

    def hideOverlay(self) -> None:  # noqa: N802
        overlays.hide_overlay()
