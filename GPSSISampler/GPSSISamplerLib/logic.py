"""GPSSISamplerLogic: plausible segmentations around a reference segment, as MRML nodes.

Console example (inside Slicer, or outside after ``create_scene()``)::

    from GPSSISamplerLib.logic import GPSSISamplerLogic
    logic = GPSSISamplerLogic()
    out = logic.generate(volume, referenceSegmentation, targetDice=0.85, numberOfSamples=20, seed=1)
    print(out.measuredDice, out.omega0)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable

import numpy as np

from SegmentationUncertaintyLib import metrics
from SegmentationUncertaintyLib.gpssi import check_target_dice
from SegmentationUncertaintyLib.samplers import SOURCES, check_seed, create_sampler
from SegmentationUncertaintyLogic.nodes import (Cancelled, LogicRun, add_segment, distinct_colors,
                                                geometry_of_volume, mark_probability_map, new_or_cleared_segmentation,
                                                require_output_nodes, require_segment, require_volume, segment_mask,
                                                update_or_add_volume, write_table)

#: ``progress(fraction, message)``; returning ``False`` (not merely a falsy value) cancels the work.
Progress = Callable[[float, str], object]

#: Sample sources offered by the panel: key -> title (keys are ``SegmentationUncertaintyLib.samplers.SOURCES``).
SOURCE_TITLES = {"gpssi": "GPSSI (Gaussian process)", "logodds": "Log-odds (baseline)",
                 "staple-icm": "STAPLE + ICM (baseline)", "ssn": "Stochastic Segmentation Network",
                 "phiseg": "PHiSeg", "prob-unet": "Probabilistic U-Net", "mc-dropout": "MC-dropout U-Net"}

#: Output node class of each :class:`SamplerOutputs` node field.
OUTPUT_CLASSES = {"samples": "vtkMRMLSegmentationNode", "frequency": "vtkMRMLScalarVolumeNode",
                  "entropy": "vtkMRMLScalarVolumeNode", "meanLevel": "vtkMRMLScalarVolumeNode",
                  "table": "vtkMRMLTableNode", "curveTable": "vtkMRMLTableNode", "curveChart": "vtkMRMLPlotChartNode"}

#: Column names of the curve table (the plot series read them).
CURVE_COLUMNS = ("omega0 (mm2)", "mean pairwise DICE", "chosen omega0 (mm2)", "chosen DICE")


#: Raised when the progress callback returns ``False``; the nodes the call had created are removed.
SamplingCancelled = Cancelled


@dataclass
class SamplerOutputs:
    """Output nodes of :meth:`GPSSISamplerLogic.generate`; pass one back as ``outputs`` to reuse its nodes."""

    samples: object = None  # vtkMRMLSegmentationNode, one segment per sample
    frequency: object = None  # vtkMRMLScalarVolumeNode, fraction of samples containing each voxel
    entropy: object = None  # vtkMRMLScalarVolumeNode, binary entropy of the frequency (bits)
    meanLevel: object = None  # vtkMRMLScalarVolumeNode, GPSSI mean level function μ (mm), GPSSI only
    table: object = None  # vtkMRMLTableNode, per-sample volume and Dice to the reference
    curveTable: object = None  # vtkMRMLTableNode, ω0 and mean pairwise Dice
    curveChart: object = None  # vtkMRMLPlotChartNode, the ω0–DICE curve with the chosen point
    omega0: float | None = None  # mm², GPSSI only
    measuredDice: float = float("nan")  # mean pairwise Dice of the generated samples
    parameters: dict = field(default_factory=dict)


def check_outputs(outputs: SamplerOutputs | None, inputs: tuple) -> SamplerOutputs:
    """A working copy of ``outputs`` after checking each given node's class and that none is an input."""
    if outputs is None:
        return SamplerOutputs()
    if not isinstance(outputs, SamplerOutputs):
        raise ValueError(f"outputs must be a SamplerOutputs, got {type(outputs).__name__}")
    require_output_nodes(outputs, OUTPUT_CLASSES, inputs)
    return replace(outputs, parameters=dict(outputs.parameters))


class GPSSISamplerLogic:
    """Qt-free logic of the GPSSISampler module.

    The model (geodesic mean, field sampler, ω0–DICE curve) is cached for the last reference, image and
    parameters, so moving the DICE slider only re-reads the cached curve.

    Example
    -------
    >>> logic = GPSSISamplerLogic()
    >>> logic.omega0ForDice(volume, reference, 0.9)        # doctest: +SKIP
    """

    sources = dict(SOURCE_TITLES)

    def __init__(self) -> None:
        self._cache_key = None
        self._model = None

    # ------------------------------------------------------------------------------ model and curve
    def _modelKey(self, imageVolume, referenceSegmentation, referenceSegmentId, source, gamma, h, omega1, scale,
                  device):
        segment = referenceSegmentation.GetSegmentation().GetSegment(referenceSegmentId)
        labelmap = segment.GetRepresentation("Binary labelmap")
        # Segment Editor effects modify the (shared) labelmap in place: its MTime tracks them.
        return (imageVolume.GetID(), imageVolume.GetMTime(), imageVolume.GetImageData().GetMTime(),
                referenceSegmentation.GetID(), referenceSegmentId, segment.GetMTime(),
                labelmap.GetMTime() if labelmap is not None else None,
                referenceSegmentation.GetSegmentation().GetMTime(), source, gamma, h, omega1, scale, device)

    def model(self, imageVolume, referenceSegmentation, referenceSegmentId: str | None = None,  # noqa: N802
              source: str = "gpssi", gamma: float | None = None, h: float = 1.0, omega1: float | None = None,
              scale: float | None = None, device: str = "cpu"):
        """The sampler for these inputs (a ``SegmentationUncertaintyLib.samplers.SegmentationSampler``).

        Built once per reference, image and parameters (GPSSI's geodesic mean takes seconds) and cached.

        Example
        -------
        >>> sampler = GPSSISamplerLogic().model(volume, reference, source="logodds")   # doctest: +SKIP
        """
        require_volume(imageVolume, "input volume")
        referenceSegmentId = require_segment(referenceSegmentation, referenceSegmentId, "reference segmentation")
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; choose one of {sorted(SOURCES)}")
        key = self._modelKey(imageVolume, referenceSegmentation, referenceSegmentId, source, gamma, h, omega1,
                             scale, device)
        if key != self._cache_key:
            import slicer

            mask = segment_mask(referenceSegmentation, referenceSegmentId, imageVolume)
            if not mask.any():
                name = referenceSegmentation.GetSegmentation().GetSegment(referenceSegmentId).GetName()
                raise ValueError(f"the reference segment '{name}' is empty on the grid of '{imageVolume.GetName()}': "
                                 "draw it first, or pick the image it was drawn on")
            spacing = geometry_of_volume(imageVolume).spacing
            image = np.asarray(slicer.util.arrayFromVolume(imageVolume), dtype=np.float32)
            if source == "gpssi":
                parameters = {"gamma": gamma, "h": h, "omega1": omega1}
            else:
                parameters = {} if scale is None else {"scale": scale}
            self._model = create_sampler(source, mask, image, spacing, device=device, **parameters)
            self._cache_key = key
        return self._model

    def isModelReady(self, imageVolume, referenceSegmentation, referenceSegmentId: str | None = None,  # noqa: N802
                     source: str = "gpssi", gamma: float | None = None, h: float = 1.0,
                     omega1: float | None = None, scale: float | None = None, device: str = "cpu") -> bool:
        """Whether :meth:`model` would return its cached sampler at once (the panel's live slider uses it)."""
        try:
            require_volume(imageVolume, "input volume")
            referenceSegmentId = require_segment(referenceSegmentation, referenceSegmentId, "reference segmentation")
        except ValueError:
            return False
        return self._cache_key == self._modelKey(imageVolume, referenceSegmentation, referenceSegmentId, source,
                                                 gamma, h, omega1, scale, device)

    def diceCurve(self, imageVolume, referenceSegmentation, referenceSegmentId=None, seed: int = 0,  # noqa: N802
                  **modelParameters):
        """The GPSSI ω0–DICE curve (``DiceCurve``: ``omega0`` in mm², ``dice``) for the panel's plot.

        Example
        -------
        >>> curve = GPSSISamplerLogic().diceCurve(volume, reference)     # doctest: +SKIP
        >>> curve.omega0_at(0.9)                                         # doctest: +SKIP
        """
        model = self._gpssi(imageVolume, referenceSegmentation, referenceSegmentId, **modelParameters)
        return model.dice_curve(seed=check_seed(seed))

    def omega0ForDice(self, imageVolume, referenceSegmentation, targetDice: float,  # noqa: N802
                      referenceSegmentId=None, seed: int = 0, **modelParameters) -> float:
        """ω0 (mm²) whose samples have mean pairwise DICE ``targetDice`` (fast once the curve is cached).

        Example
        -------
        >>> GPSSISamplerLogic().omega0ForDice(volume, reference, 0.85)   # doctest: +SKIP
        """
        targetDice = check_target_dice(targetDice)
        seed = check_seed(seed)
        model = self._gpssi(imageVolume, referenceSegmentation, referenceSegmentId, **modelParameters)
        return model.calibrate(targetDice, seed=seed)

    def plotDiceCurve(self, imageVolume, referenceSegmentation, targetDice: float | None = None,  # noqa: N802
                      referenceSegmentId=None, omega0: float | None = None, seed: int = 0,
                      outputs: SamplerOutputs | None = None, **modelParameters) -> SamplerOutputs:
        """Write the ω0–DICE curve and the chosen point (``omega0``, or the one of ``targetDice``) into a
        table and a plot chart node (``outputs.curveTable`` / ``outputs.curveChart``, reused when given).

        Example
        -------
        >>> chart = GPSSISamplerLogic().plotDiceCurve(volume, reference, 0.9).curveChart   # doctest: +SKIP
        """
        if omega0 is None and targetDice is None:
            raise ValueError("give a target DICE or an ω0 to mark on the curve")
        if omega0 is not None and not (np.isfinite(omega0) and omega0 > 0):
            raise ValueError(f"ω0 must be a positive number (mm²), got {omega0}")
        result = check_outputs(outputs, (imageVolume, referenceSegmentation))
        omega0_given = omega0
        if omega0 is None:
            omega0 = self.omega0ForDice(imageVolume, referenceSegmentation, targetDice, referenceSegmentId, seed,
                                        **modelParameters)
        curve = self._curveFor(self._gpssi(imageVolume, referenceSegmentation, referenceSegmentId, **modelParameters),
                               check_seed(seed), calibrated=targetDice is not None and omega0_given is None)
        segmentId = require_segment(referenceSegmentation, referenceSegmentId, "reference segmentation")
        name = referenceSegmentation.GetSegmentation().GetSegment(segmentId).GetName()
        with LogicRun() as run:
            result.omega0 = float(omega0)
            self._writeCurve(curve, result, name, run)
        return _deliver(result, outputs)

    @staticmethod
    def _curveFor(model, seed: int, calibrated: bool):
        """The curve of ``seed``: as calibration left it when it chose ω0 (asking for few samples draws none;
        asking for more than calibration drew would move the curve away from the ω0 it chose), else the
        default 32-sample curve."""
        return model.dice_curve(n_samples=2 if calibrated else 32, seed=seed)

    def _gpssi(self, imageVolume, referenceSegmentation, referenceSegmentId, **modelParameters):
        modelParameters.pop("source", None)
        modelParameters.pop("scale", None)
        return self.model(imageVolume, referenceSegmentation, referenceSegmentId, source="gpssi", **modelParameters)

    # ------------------------------------------------------------------------------------ generate
    def generate(self, imageVolume, referenceSegmentation, referenceSegmentId: str | None = None,
                 source: str = "gpssi", targetDice: float | None = 0.85, omega0: float | None = None,
                 numberOfSamples: int = 20, seed: int = 0, gamma: float | None = None, h: float = 1.0,
                 omega1: float | None = None, scale: float | None = None, device: str = "cpu",
                 outputs: SamplerOutputs | None = None, progress: Progress | None = None) -> SamplerOutputs:
        """Draw ``numberOfSamples`` segmentations around the reference segment.

        Parameters
        ----------
        imageVolume : vtkMRMLScalarVolumeNode
            The image (GPSSI's geodesic mean follows its borders) and the output grid.
        referenceSegmentation, referenceSegmentId : vtkMRMLSegmentationNode, str
            The reference segment (default: the first segment).
        source : str
            ``"gpssi"``, the baselines ``"logodds"`` and ``"staple-icm"``, or a shipped network ``"ssn"``,
            ``"phiseg"``, ``"prob-unet"``, ``"mc-dropout"`` (see :data:`SOURCE_TITLES`).
        targetDice, omega0 : float
            GPSSI spread: a target mean pairwise DICE in (0, 1) (calibrated), or ω0 in mm² (takes precedence).
        numberOfSamples, seed : int
            How many samples (at least 2), and the seed (same seed → same samples).
        gamma, h, omega1 : float, optional
            GPSSI's geodesic contrast weight (default 100 / mean image; 0 = Euclidean), image smoothing (mm)
            and correlation length (mm; default: the equivalent-sphere radius of the reference).
        scale : float, optional
            Log-odds / STAPLE-ICM: the signed-distance scale in mm (their default when omitted).
        outputs : SamplerOutputs, optional
            Nodes to overwrite (never an input node); others are created and named after the reference
            segment. The same object is returned, filled in.
        progress : callable(fraction, message), optional
            Called as the work advances; returning ``False`` cancels: :class:`SamplingCancelled` is raised
            and the nodes this call created are removed.

        Returns
        -------
        SamplerOutputs
            ``samples`` (segmentation, one segment per sample, distinct colours, on the image's geometry),
            ``frequency``, ``entropy``, ``meanLevel`` (GPSSI) volumes, ``table`` (per-sample volume and
            Dice to the reference), ``curveTable`` / ``curveChart`` (GPSSI), ``omega0``, ``measuredDice``.

        Example
        -------
        >>> out = GPSSISamplerLogic().generate(volume, reference, targetDice=0.9, numberOfSamples=10)  # doctest: +SKIP
        """
        if isinstance(numberOfSamples, (bool, np.bool_)) or int(numberOfSamples) != numberOfSamples \
                or numberOfSamples < 2:
            raise ValueError(f"the number of samples must be an integer of at least 2, got {numberOfSamples!r}")
        numberOfSamples = int(numberOfSamples)
        seed = check_seed(seed)
        if source == "gpssi":
            if omega0 is None and targetDice is None:
                raise ValueError("give a target DICE or an ω0 for GPSSI")
            if omega0 is not None and not (np.isfinite(omega0) and omega0 > 0):
                raise ValueError(f"ω0 must be a positive number (mm²), got {omega0}")
            if omega0 is None:
                targetDice = check_target_dice(targetDice)
        result = check_outputs(outputs, (imageVolume, referenceSegmentation))
        run = LogicRun(progress)
        run.report(0.0, "Building the model (geodesic distance)" if source == "gpssi" else "Building the model")
        model = self.model(imageVolume, referenceSegmentation, referenceSegmentId, source, gamma, h, omega1,
                           None if source == "gpssi" else scale, device)
        referenceSegmentId = require_segment(referenceSegmentation, referenceSegmentId, "reference segmentation")
        name = referenceSegmentation.GetSegmentation().GetSegment(referenceSegmentId).GetName()

        curve = None
        result.omega0 = None
        if source == "gpssi":
            run.report(0.1, "Calibrating ω0 to the target DICE")
            # Calibrate first: it may widen the curve's range, and the plot shows the widened curve.
            model.omega0 = omega0 if omega0 is not None else model.calibrate(targetDice, seed=seed)
            curve = self._curveFor(model, seed, calibrated=omega0 is None)
            result.omega0 = float(model.omega0)
        result.parameters = model.parameters()
        with run:
            self._draw(model, imageVolume, numberOfSamples, seed, name, source, result, run)
            run.report(0.92, "Maps and tables")
            if curve is not None:
                self._writeCurve(curve, result, name, run)
            run.report(1.0, f"{numberOfSamples} samples, mean pairwise DICE {result.measuredDice:.3f}")
        return _deliver(result, outputs)

    @staticmethod
    def _draw(model, imageVolume, numberOfSamples: int, seed: int, name: str, source: str, result: SamplerOutputs,
              run: LogicRun) -> None:
        run.report(0.2, f"Drawing {numberOfSamples} samples")
        samples = run.output(result, "samples", lambda node: new_or_cleared_segmentation(
            imageVolume, f"{name} {source} samples", node))
        # Many overlapping samples read best as outlines over the filled reference.
        display = samples.GetDisplayNode()
        display.SetOpacity2DFill(0.0)
        display.SetOpacity2DOutline(0.9)
        colors = distinct_colors(numberOfSamples)
        stats = metrics.SampleStatistics(model.spacing)
        stack = _CroppedStack(model.reference)
        dices = []
        for index, sample in enumerate(model.sample(numberOfSamples, seed=seed)):
            add_segment(samples, f"sample {index + 1:03d}", sample, imageVolume, colors[index])
            stats.update(sample)
            stack.add(sample)
            dices.append(metrics.dice(sample, model.reference))
            run.report(0.2 + 0.7 * (index + 1) / numberOfSamples, f"Sample {index + 1}/{numberOfSamples}")

        result.measuredDice = metrics.mean_pairwise_dice(stack.array())
        # named after the source too: the frequency maps of several samplers are raters of a fusion
        run.output(result, "frequency", lambda node: mark_probability_map(update_or_add_volume(
            stats.frequency, imageVolume, f"{name} {source} frequency", node), "samples"))
        run.output(result, "entropy", lambda node: update_or_add_volume(
            stats.entropy, imageVolume, f"{name} {source} entropy", node))
        if getattr(model, "mean", None) is not None:
            run.output(result, "meanLevel", lambda node: update_or_add_volume(
                model.mean, imageVolume, f"{name} mean level (mm)", node))
        run.output(result, "table", lambda node: write_table(
            {"sample": [f"sample {i + 1:03d}" for i in range(len(dices))], "volume (ml)": list(stats.volumes),
             "Dice to reference": dices}, f"{name} samples table", node))

    @staticmethod
    def _writeCurve(curve, result: SamplerOutputs, name: str, run: LogicRun) -> None:
        import slicer

        chosen = result.omega0
        omega0_column, dice_column, chosen_omega0_column, chosen_dice_column = CURVE_COLUMNS
        if result.curveTable is None and result.curveChart is not None:
            # A chart passed alone keeps writing into the table its series already read.
            series = result.curveChart.GetNthPlotSeriesNode(0)
            result.curveTable = series.GetTableNode() if series is not None else None
        table = run.output(result, "curveTable", lambda node: write_table(
            {omega0_column: list(curve.omega0), dice_column: list(curve.dice),
             chosen_omega0_column: [chosen] * len(curve.omega0),
             chosen_dice_column: [curve.dice_at(chosen)] * len(curve.omega0)},
            f"{name} omega0-DICE curve", node))
        chart = run.output(result, "curveChart", lambda node: node or slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLPlotChartNode", f"{name} omega0-DICE"))
        series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
        if len(series) != 2 or any(s is None for s in series):
            chart.RemoveAllPlotSeriesNodeIDs()
            series = []
            for title in ("DICE(ω0)", "chosen"):
                node = run.created_node(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {title}"))
                chart.AddAndObservePlotSeriesNodeID(node.GetID())
                series.append(node)
        line, point = series
        for node, (x, y), marker, style in (
                (line, (omega0_column, dice_column), "MarkerStyleNone", "LineStyleSolid"),
                (point, (chosen_omega0_column, chosen_dice_column), "MarkerStyleCircle", "LineStyleNone")):
            node.SetAndObserveTableNodeID(table.GetID())
            node.SetXColumnName(x)
            node.SetYColumnName(y)
            node.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            node.SetMarkerStyle(getattr(slicer.vtkMRMLPlotSeriesNode, marker))
            node.SetLineStyle(getattr(slicer.vtkMRMLPlotSeriesNode, style))
        chart.SetTitle(f"{name}: ω0 = {chosen:.3g} mm², DICE {curve.dice_at(chosen):.3f}")
        chart.SetXAxisTitle("ω0 (mm²)")
        chart.SetYAxisTitle("mean pairwise DICE")
        chart.SetXAxisLogScale(True)


def _deliver(result: SamplerOutputs, outputs: SamplerOutputs | None) -> SamplerOutputs:
    """Return ``result``, copied into the caller's ``outputs`` object when there is one."""
    if outputs is None:
        return result
    for item in fields(SamplerOutputs):
        setattr(outputs, item.name, getattr(result, item.name))
    return outputs


class _CroppedStack:
    """Samples kept only on the box where they differ from the reference: pairwise Dice over N samples
    without N full-size masks in memory (voxels outside the box equal the reference in every sample)."""

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = reference
        self.crops: list[tuple[tuple[slice, ...], np.ndarray]] = []

    def add(self, sample: np.ndarray) -> None:
        changed = np.argwhere(sample != self.reference)
        if changed.size == 0:
            box = tuple(slice(0, 0) for _ in sample.shape)
        else:
            box = tuple(slice(lo, hi + 1) for lo, hi in zip(changed.min(axis=0), changed.max(axis=0)))
        self.crops.append((box, sample[box].copy()))

    def array(self) -> np.ndarray:
        """Stack (N, *box) on the union box, plus one slab holding the reference's voxels outside it."""
        boxes = [b for b, _ in self.crops if all(s.stop > s.start for s in b)]
        if not boxes:
            return np.stack([self.reference] * len(self.crops))
        lo = np.min([[s.start for s in b] for b in boxes], axis=0)
        hi = np.max([[s.stop for s in b] for b in boxes], axis=0)
        union = tuple(slice(a, b) for a, b in zip(lo, hi))
        outside = np.count_nonzero(self.reference) - np.count_nonzero(self.reference[union])
        rows = []
        for box, crop in self.crops:
            full = self.reference[union].copy()
            if all(s.stop > s.start for s in box):
                local = tuple(slice(s.start - u.start, s.stop - u.start) for s, u in zip(box, union))
                full[local] = crop
            # The reference's voxels outside the union box are in every sample: keep their count.
            rows.append(np.concatenate([full.ravel(), np.ones(outside, dtype=bool)]))
        return np.stack(rows)
