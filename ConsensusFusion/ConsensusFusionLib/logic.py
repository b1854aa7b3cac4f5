"""ConsensusFusionLogic: a robust consensus of raters given as segments or probability volumes, as MRML nodes.

Console example (inside Slicer, or outside after ``create_scene()``)::

    from ConsensusFusionLib.logic import ConsensusFusionLogic
    out = ConsensusFusionLogic().fuse(ratersSegmentation, imageVolume, method="student-t")
    print(out.summary)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable

import numpy as np

from SegmentationUncertaintyLib import fusion
from SegmentationUncertaintyLib.fusion import DEFAULT_SMOOTHNESS_MM, default_smoothness_mm
from SegmentationUncertaintyLib.fusion.links import LINKS
from SegmentationUncertaintyLib.validation import check_device
from SegmentationUncertaintyLogic.nodes import (Cancelled, LogicRun, add_segment, distinct_colors,
                                                geometry_of_volume, mark_probability_map, new_or_cleared_segmentation,
                                                reference_grid_volume, require_output_nodes, require_segment,
                                                require_volume, segment_ids, segment_mask, update_or_add_volume,
                                                write_table)

#: ``progress(fraction, message)``; returning ``False`` (not merely a falsy value) cancels the work.
Progress = Callable[[float, str], object]

#: Fusion methods offered by the panel: key (``SegmentationUncertaintyLib.fusion.METHODS``) -> title.
METHODS = {"student-t": "Student-t (robust, τ maps)", "gaussian": "Gaussian (continuous STAPLE)",
           "staple": "STAPLE (SimpleITK)", "majority": "Majority vote"}

#: Output node class of each :class:`FusionOutputs` node field.
OUTPUT_CLASSES = {"consensus": "vtkMRMLSegmentationNode", "probabilities": "vtkMRMLScalarVolumeNode",
                  "tau": "vtkMRMLScalarVolumeNode", "raterTable": "vtkMRMLTableNode"}

#: Columns of the rater table.
#: "relative tau" is the mean τ over that of a rater equal to the consensus, in (0, 1]: it compares raters
#: whatever their ν (the raw mean τ does not: heavy-tailed raters have high τ where they agree).
RATER_COLUMNS = ("rater", "cluster", "bias", "variance", "nu", "mean tau", "relative tau", "Dice to consensus",
                 "HD95 to consensus (mm)")

#: τ maps are drawn only below this fraction of their range: above it the rater is trusted as much as anywhere.
TRUSTED_FRACTION = 0.9

#: Raised when the progress callback returns ``False``; the nodes the call had created are removed.
FusionCancelled = Cancelled


@dataclass
class FusionOutputs:
    """Output nodes of :meth:`ConsensusFusionLogic.fuse`; pass one back as ``outputs`` to reuse its nodes."""

    consensus: object = None  # vtkMRMLSegmentationNode: one segment per consensus ("consensus", or "consensus m")
    probabilities: list = field(default_factory=list)  # vtkMRMLScalarVolumeNode per consensus: P(structure)
    tau: list = field(default_factory=list)  # vtkMRMLScalarVolumeNode per rater: E[τ] (Student-t only)
    raterTable: object = None  # vtkMRMLTableNode: one row per rater (RATER_COLUMNS)
    result: object = None  # SegmentationUncertaintyLib.fusion.FusionResult: every array, for scripting
    summary: str = ""


@dataclass
class _Raters:
    """The raters read from their nodes, on one grid."""

    arrays: np.ndarray  # (P, *shape): bool masks or float32 probabilities
    kind: str  # "mask" or "probability"
    names: list[str]
    nodes: list  # the input nodes (never modified)
    grid: object  # volume node giving the grid (the image, a rater volume, or a scene-less reference grid)
    base: str  # what output names start with


class ConsensusFusionLogic:
    """Qt-free logic of the ConsensusFusion module, scriptable from the Slicer Python console.

    Example
    -------
    >>> logic = ConsensusFusionLogic()
    >>> out = logic.fuse([(raters, "rater 1"), (raters, "rater 2"), (raters, "rater 3")])   # doctest: +SKIP
    >>> logic.showTau(out, 2)                                                             # doctest: +SKIP
    """

    methods = dict(METHODS)

    def readRaters(self, raters, imageVolume=None) -> _Raters:  # noqa: N802 (Slicer API style)
        """Check the raters and read them as arrays on the output grid (``imageVolume``'s, else the first
        rater's).

        Parameters
        ----------
        raters : vtkMRMLSegmentationNode, or sequence of
            ``(segmentation node, segment ID)`` pairs, segmentation nodes (all their segments) or scalar
            volume nodes (foreground probabilities in [0, 1], all on one grid). Segments and volumes do
            not mix.
        imageVolume : vtkMRMLScalarVolumeNode, optional
        """
        import slicer

        items = [raters] if raters is None or hasattr(raters, "IsA") else list(raters)
        segments, volumes = [], []
        for item in items:
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise ValueError(f"a segment rater is a (segmentation node, segment ID) pair, got {item!r}")
                node, segment_id = item
                segments.append((node, require_segment(node, segment_id, "rater segmentation")))
            elif hasattr(item, "IsA") and item.IsA("vtkMRMLSegmentationNode"):
                require_segment(item, None, "rater segmentation")
                segments.extend((item, segment_id) for segment_id in segment_ids(item))
            elif hasattr(item, "IsA") and item.IsA("vtkMRMLScalarVolumeNode"):
                require_volume(item, "rater probability volume")
                volumes.append(item)
            else:
                raise ValueError("a rater is missing or is neither a segment nor a probability volume: select "
                                 f"segments or scalar volumes, got {item!r}")
        if segments and volumes:
            raise ValueError("raters are either segments or probability volumes, not both: fuse them separately")
        keys = [(node.GetID(), segment_id) for node, segment_id in segments] + [node.GetID() for node in volumes]
        if len(set(keys)) != len(keys):
            raise ValueError("a rater was selected twice: select each segment or volume once")
        if len(keys) < 2:
            raise ValueError(f"a fusion needs at least 2 raters, got {len(keys)}: select more segments or volumes")
        if imageVolume is not None:
            require_volume(imageVolume, "image volume")

        if volumes:
            grid = imageVolume or volumes[0]
            shape = require_volume(grid, "image volume")
            arrays = []
            for node in volumes:
                if require_volume(node, "rater probability volume") != shape or not np.allclose(
                        geometry_of_volume(node).ijk_to_ras(), geometry_of_volume(grid).ijk_to_ras(), atol=1e-4):
                    raise ValueError(f"rater volume '{node.GetName()}' is not on the grid of '{grid.GetName()}': "
                                     "resample the probability volumes onto one grid first")
                array = np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float32)
                if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
                    raise ValueError(f"rater volume '{node.GetName()}' has values outside [0, 1]: give foreground "
                                     "probabilities")
                arrays.append(array)
            names = [node.GetName() for node in volumes]
            if len(set(names)) != len(names):
                names = [f"{name} ({index + 1})" for index, name in enumerate(names)]
            return _Raters(np.stack(arrays), "probability", names, volumes, grid, "Raters")

        grid = imageVolume or reference_grid_volume(segments[0][0])
        names = [node.GetSegmentation().GetSegment(segment_id).GetName() for node, segment_id in segments]
        if len(set(names)) != len(names):
            names = [f"{node.GetName()}: {name}" for (node, _), name in zip(segments, names)]
        masks = []
        for (node, segment_id), name in zip(segments, names):
            mask = segment_mask(node, segment_id, grid)
            if not mask.any():
                raise ValueError(f"rater '{name}' is empty on the grid of '{grid.GetName()}': draw it, uncheck it, "
                                 "or pick the image the raters outlined")
            masks.append(mask)
        nodes = list(dict.fromkeys(node for node, _ in segments))
        return _Raters(np.stack(masks), "mask", names, nodes, grid, segments[0][0].GetName())

    def fuse(self, raters, imageVolume=None, method: str = "student-t",
             smoothness: float | None = None, mixture: bool = False, scale: float = 1.0,
             link: str = "sqrt", maxIterations: int = 500, outputs: FusionOutputs | None = None,
             progress: Progress | None = None, device: str = "auto") -> FusionOutputs:
        """Fuse raters into a consensus, with per-rater τ maps and a rater table.

        Parameters
        ----------
        raters : see :meth:`readRaters`
            Segments (masks become probabilities by a sigmoid of their signed distance, geodesic along the
            image's edges when ``imageVolume`` is given) or foreground probability volumes.
        imageVolume : vtkMRMLScalarVolumeNode, optional
            The output grid (default: the first rater's) and, for segments, the image of the geodesic distance.
        method : str
            ``"student-t"`` (robust: τ maps), ``"gaussian"``, ``"staple"`` or ``"majority"`` (:data:`METHODS`).
        smoothness : float, optional
            Spacing (mm) of the consensus's Gaussian bases (Student-t and Gaussian); 0 = no smoothness prior.
            Default: 2 mm for segments, 0 for probability volumes, which are smooth already and fuse better
            and far faster without it (``SegmentationUncertaintyLib.fusion.default_smoothness_mm``).
        mixture : bool
            Mixture of consensuses: raters who disagree systematically get their own consensus
            (Student-t and Gaussian only); the table's ``cluster`` says whose.
        scale : float
            Masks' probability width (mm): ``P(inside) = sigmoid(−distance / scale)``.
        link : {"sqrt", "logit"}
            Space in which the Student-t and Gaussian methods fuse the maps: square root (Hellinger, the
            paper's) or logit. For smooth probability volumes (a network's softmax) the logit fuses what a
            network computes, its logits (bench/colin27_fusion_table.py); frequency maps of a few samples, mostly
            exactly 0 or 1, fuse better with the square root (bench/frequency_maps_fusion.py).
        maxIterations : int
            Cap on the Student-t and Gaussian fits' iterations; they stop earlier once nothing moves by more
            than 1e-3, and ``summary`` says when the cap stopped them. Large structures may need more.
        outputs : FusionOutputs, optional
            Nodes to overwrite (never an input node; lists are reused in order); others are created, named
            after the first rater segmentation ("Raters" for volumes). The same object is returned, filled in.
        progress : callable(fraction, message), optional
            Returning ``False`` cancels: :class:`FusionCancelled` is raised and the new nodes are removed.
        device : {"auto", "cpu", "cuda"}
            Where the Student-t and Gaussian fits run; ``"auto"``: the GPU when torch sees one, else the CPU.
            Both fit the same model (float32 rounding differs); with the smoothness prior the GPU is the
            fast one (the README's times for ``bench/bench_fusion.py``).

        Returns
        -------
        FusionOutputs
            ``consensus`` (segmentation), ``probabilities`` (one volume per consensus), ``tau`` (one volume
            per rater, Student-t), ``raterTable``, ``result`` (the arrays), ``summary`` (one line).

        Example
        -------
        >>> out = ConsensusFusionLogic().fuse(ratersSegmentation, image, method="student-t")   # doctest: +SKIP
        """
        if method not in METHODS:
            raise ValueError(f"unknown fusion method {method!r}; choose one of {list(METHODS)}")
        if smoothness is not None and not (np.isfinite(smoothness) and smoothness >= 0):
            raise ValueError(f"smoothness must be a length >= 0 in mm (0: no smoothness prior), got {smoothness}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive length in mm, got {scale}")
        if link not in LINKS:
            raise ValueError(f"unknown link {link!r}; choose one of {list(LINKS)}")
        if isinstance(maxIterations, bool) or not isinstance(maxIterations, (int, np.integer)) or maxIterations < 1:
            raise ValueError(f"maxIterations must be a positive integer, got {maxIterations!r}")
        if mixture and method not in ("student-t", "gaussian"):
            raise ValueError(f"the mixture of consensuses needs the Student-t or Gaussian method, not {method!r}")
        check_device(device)
        if outputs is not None and not isinstance(outputs, FusionOutputs):
            raise ValueError(f"outputs must be a FusionOutputs, got {type(outputs).__name__}")
        run = LogicRun(progress)
        run.report(0.0, "Reading the raters")
        read = self.readRaters(raters, imageVolume)
        if smoothness is None:
            smoothness = default_smoothness_mm(read.kind)
        inputs = (*read.nodes, imageVolume)
        result = FusionOutputs() if outputs is None else replace(
            outputs, probabilities=list(outputs.probabilities), tau=list(outputs.tau))
        require_output_nodes(result, OUTPUT_CLASSES, inputs)

        import slicer

        image = None
        if imageVolume is not None and read.kind == "mask":
            image = np.asarray(slicer.util.arrayFromVolume(imageVolume), dtype=np.float32)
        options = dict(spacing=geometry_of_volume(read.grid).spacing, image=image, kind=read.kind,
                       names=read.names, scale_mm=float(scale), link=link, spatial_prior=smoothness > 0,
                       smoothness_mm=float(smoothness) if smoothness > 0 else DEFAULT_SMOOTHNESS_MM,
                       max_iterations=int(maxIterations),
                       progress=lambda f, m: run.report(0.05 + 0.8 * f, f"{method}: {m}"), device=device)
        if mixture:
            fused = fusion.fuse_mixture(read.arrays, method, **options)
        else:
            fused = fusion.fuse(read.arrays, method, **options)
        run.report(0.88, "Writing the consensus, τ maps and rater table")
        with run:
            self._write(fused, read, result, run, smoothness)
            run.report(1.0, result.summary)
        if outputs is None:
            return result
        for item in fields(FusionOutputs):
            setattr(outputs, item.name, getattr(result, item.name))
        return outputs

    @staticmethod
    def _write(fused, read: _Raters, result: FusionOutputs, run: LogicRun, smoothness: float) -> None:
        grid, base = read.grid, read.base
        labels = fused.consensus_labels()
        n_consensus = labels.shape[0]
        titles = ["consensus"] if n_consensus == 1 else [f"consensus {m + 1}" for m in range(n_consensus)]
        segmentation = run.output(result, "consensus", lambda node: new_or_cleared_segmentation(
            grid, f"{base} consensus", node))
        for title, label, color in zip(titles, labels, distinct_colors(n_consensus)):
            add_segment(segmentation, title, label > 0, grid, color)
        # P(structure) = 1 − P(background): every foreground class together.
        maps = [(f"{base} {title} probability", 1.0 - fused.consensuses[m, 0]) for m, title in enumerate(titles)]
        if fused.tau is not None:
            tau = [(f"{name} tau", fused.tau[p]) for p, name in enumerate(read.names)]
        else:
            tau = []
        for name, maps_list in (("probabilities", maps), ("tau", tau)):
            nodes = getattr(result, name)
            for index, (title, array) in enumerate(maps_list):
                existing = nodes[index] if index < len(nodes) else None
                node = update_or_add_volume(np.asarray(array, dtype=np.float32), grid, title, existing)
                if name == "probabilities":
                    mark_probability_map(node, "consensus")
                if existing is None:
                    run.created_node(node)
                    nodes.append(node)
        bias = fused.bias[:, 1:].sum(axis=1) if fused.bias.shape[1] > 1 else fused.bias[:, 0]
        columns = (read.names, [int(c) + 1 for c in fused.clusters], bias, fused.variance, fused.nu, fused.mean_tau,
                   fused.relative_tau, fused.dice, fused.hd95_mm)
        run.output(result, "raterTable", lambda node: write_table(
            {title: list(values) for title, values in zip(RATER_COLUMNS, columns)}, f"{base} raters", node))
        result.result = fused
        volume_ml = np.count_nonzero(fused.mask) * float(np.prod(fused.spacing)) / 1000.0
        summary = f"{len(read.names)} raters fused ({fused.method}): consensus {volume_ml:.2f} ml"
        if fused.method in ("student-t", "gaussian"):
            summary += f"; smoothness prior {smoothness:g} mm" if smoothness > 0 else "; no spatial prior"
        outlier = fused.lowest_tau_rater()
        if outlier is not None:
            summary += f"; least trusted: {read.names[outlier]} (relative τ {fused.relative_tau[outlier]:.2f})"
        floor = fused.parameters.get("min_variance")
        at_floor = int(np.sum(fused.variance <= floor * (1 + 1e-3))) if floor else 0
        if at_floor:
            # the Variance column then shows the floor, not the rater (its spread, outliers aside, is below a
            # voxel's worth): say so, or the equal values look like a bug
            who = "every rater's" if at_floor == len(read.names) else f"{at_floor} raters'"
            summary += f"; {who} variance at the maps' voxel-resolution floor ({floor:.3g})"
        if n_consensus > 1:
            summary += f"; {n_consensus} clusters of raters"
        fits = fused.parameters.get("clusters", [fused.parameters])
        if any(fit.get("device") == "cuda" for fit in fits):
            summary += "; fitted on the GPU"
        # a mixture fits one consensus per cluster: report the one furthest from settled
        stopped = [fit for fit in fits if not fit.get("converged", True)]
        if stopped:
            fit = max(stopped, key=lambda fit: fit["last_change"])
            summary += (f"; not converged: stopped after {fit['n_iterations']} iterations, the last still moving the "
                        f"consensus, a weight or a hyperparameter by {fit['last_change']:.2g}")
        result.summary = summary

    def showTau(self, outputs: FusionOutputs, rater: int):  # noqa: N802
        """Overlay rater ``rater``'s τ map (low: where the consensus treated it as an outlier)."""
        from SegmentationUncertaintyLogic.overlays import show_map_overlay

        if not outputs.tau:
            raise ValueError("these outputs have no τ maps: τ comes from the Student-t method")
        if not 0 <= rater < len(outputs.tau):
            raise ValueError(f"rater index {rater} out of range: there are {len(outputs.tau)} raters")
        node = outputs.tau[rater]
        display = show_map_overlay(node, color_table="Rainbow", zero_transparent=False, title=node.GetName())
        # Where the rater is fully trusted (τ near its maximum) the map says nothing: leave the image clear
        # there, so the eye goes to the voxels where the rater was down-weighted.
        import slicer

        tau = slicer.util.arrayFromVolume(node)
        low, high = float(tau.min()), float(tau.max())
        display.AutoThresholdOff()
        display.SetLowerThreshold(low - 1.0)
        display.SetUpperThreshold(low + TRUSTED_FRACTION * (high - low))
        display.ApplyThresholdOn()
        return display
