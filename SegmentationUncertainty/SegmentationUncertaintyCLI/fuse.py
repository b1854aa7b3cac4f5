"""``fuse``: a consensus of several raters' segmentations or probability maps, from the command line.

Examples::

    fuse raters.seg.nrrd --image t1.nii.gz -o out/                 # one segment per rater
    fuse r1.nrrd r2.nrrd r3.nrrd --method gaussian -o out/         # one mask / label map per file
    fuse net*.nrrd --probabilities --link logit -o out/            # networks' P(structure) volumes
    fuse raters.seg.nrrd --mixture -o out/                         # clusters of raters

writes into the output folder:

=========================  ====================================================================
``consensus.seg.nrrd``     the consensus (one segment per consensus with ``--mixture``)
``probability.nrrd``       the consensus' P(structure) (``probability_<m>.nrrd`` per consensus)
``tau_<rater>.nrrd``       each rater's τ map (Student-t): low where it was an outlier
``raters.csv``             per rater: cluster, bias, variance, ν, mean τ, Dice and HD95 to the consensus
``figure.png``             a slice with the raters (thin), the consensus (thick) and the region of
                           lowest τ of the most outlying rater (red), oriented as Slicer's axial view
``summary.json``           options, parameters and per-rater table
=========================  ====================================================================

The raters are put on one grid: the image's with ``--image``, else the first rater's (nearest-neighbour
resampling). Bad input (fewer than 2 raters, unreadable file, probabilities outside [0, 1], NaN, ...)
exits with status 2 and a message that says what is wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from typing import Sequence

import numpy as np

from SegmentationUncertaintyLib.fusion import (DEFAULT_SMOOTHNESS_MM, METHODS, FusionResult, default_smoothness_mm,
                                               fuse, fuse_mixture)
from SegmentationUncertaintyLib.geometry import Geometry, slice_view
from SegmentationUncertaintyLib.validation import check_device

from .io import read_image, read_segmentation, run_command, write_map, write_segmentation

PROGRAM = "fuse"
#: Margin (mm) around the raters in the figure, which is zoomed on them.
ZOOM_MARGIN_MM = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Fuse raters' segmentations or probability maps into a robust consensus "
        "(Student-t variational Bayes), or with the Gaussian model, STAPLE or majority vote.")
    parser.add_argument("raters", nargs="+", help="one Slicer .seg.nrrd / label map with one segment per rater, or "
                        "one file per rater (mask, label map, or with --probabilities a P(structure) volume)")
    parser.add_argument("--segment", help="with one file per rater: the segment to take from each (by name, "
                        "identifier or index) when they hold several")
    parser.add_argument("--probabilities", action="store_true", help="the rater files are probability volumes "
                        "in [0, 1] (e.g. networks' outputs), not masks")
    parser.add_argument("--method", choices=METHODS, default="student-t", help="fusion method (default student-t)")
    parser.add_argument("--image", help="image volume: masks become probabilities through geodesic distances that "
                        "follow its edges (default: Euclidean); also the output grid and the figure's background")
    parser.add_argument("--smoothness-mm", type=float, default=None,
                        help=f"spacing (and width) of the spatial prior's Gaussian bases, mm; 0: no spatial prior "
                        f"(default {DEFAULT_SMOOTHNESS_MM:g} for masks, {default_smoothness_mm('probability'):g} "
                        "with --probabilities: smooth maps fuse better without it)")
    parser.add_argument("--scale-mm", type=float, default=1.0, help="width of the masks' probability maps: "
                        "P(inside) = sigmoid(-distance / scale), mm (default 1)")
    parser.add_argument("--link", choices=("sqrt", "logit"), default="sqrt", help="link function (default sqrt)")
    parser.add_argument("--mixture", action="store_true", help="find clusters of raters and one consensus each")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto: the GPU when torch sees one "
                        "(default auto)")
    parser.add_argument("-o", "--output", default="fuse_output", help="output folder (created if needed)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    return parser


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "rater"


def rater_names(paths: Sequence[str]) -> list[str]:
    """A name per rater file: its name without extensions, with its folder where files share a name (as the
    ``frequency.nrrd`` of ``gpssi`` runs in ``out/ssn/``, ``out/phiseg/``: ``ssn/frequency``)."""
    stems = [os.path.basename(path).split(".")[0] for path in paths]
    return [f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}/{stem}" if stems.count(stem) > 1 else stem
            for path, stem in zip(paths, stems)]


def read_raters(paths: Sequence[str], *, segment: str | None = None, probabilities: bool = False,
                grid: tuple[tuple[int, ...], Geometry] | None = None
                ) -> tuple[np.ndarray, list[str], tuple[tuple[int, ...], Geometry]]:
    """The raters as ``(P, Z, Y, X)`` (bool masks or float32 probabilities), their names and the grid."""
    file_names = rater_names(paths)
    if probabilities:
        arrays = []
        for path in paths:
            array, geometry = read_image(path)
            if grid is None:
                grid = (array.shape, geometry)
            elif array.shape != tuple(grid[0]):
                raise ValueError(f"{path} has shape {array.shape} but the first rater (or the image) has "
                                 f"{tuple(grid[0])}; resample the probability volumes onto one grid")
            arrays.append(array)
        return np.stack(arrays), file_names, grid
    if len(paths) == 1:
        segmentation = read_segmentation(paths[0], reference=grid)
        if segment is not None:
            raise ValueError("--segment selects one segment per file; with a single file every segment is a rater")
        masks = [s.mask for s in segmentation.segments]
        names = segmentation.names
    else:
        masks, names = [], file_names
        for path in paths:
            segmentation = read_segmentation(path, reference=grid)
            if grid is None:
                grid = (segmentation.segments[0].mask.shape if segmentation.segments else None, segmentation.geometry)
            chosen = segmentation.select(segment) if segmentation.segments else None
            masks.append(np.zeros(grid[0], dtype=bool) if chosen is None else chosen.mask)
    if grid is None or grid[0] is None:
        segmentation = read_segmentation(paths[0], reference=grid)
        grid = (segmentation.segments[0].mask.shape if segmentation.segments else None, segmentation.geometry)
    if len(masks) < 2:
        raise ValueError(f"a fusion needs at least 2 raters, got {len(masks)}: give a segmentation with several "
                         "segments or several files")
    return np.stack(masks), [str(n) for n in names], grid


def write_figure(path: str, result: FusionResult, geometry: Geometry, image: np.ndarray | None) -> dict:
    """PNG of one slice, drawn as Slicer draws it (:func:`~SegmentationUncertaintyLib.geometry.slice_view`) and
    zoomed on the raters: raters (thin), consensus (thick), lowest-τ region of the most outlying rater."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from SegmentationUncertaintyCLI.io import distinct_colors

    mask = result.mask
    view = slice_view(geometry, mask.shape)
    outlier = result.lowest_tau_rater()
    region = None
    if outlier is not None:
        tau = result.tau[outlier]
        inside = tau[result.domain]
        threshold = float(np.quantile(inside, 0.02))
        region = np.zeros(mask.shape, dtype=bool)
        region[result.domain] = inside <= threshold
        region &= (result.rater_labels[outlier] > 0) ^ mask      # where it disagrees with the consensus
        if not region.any():
            region = None
    k = int(np.argmax(view.slice_sums(region if region is not None else mask)))
    extent = view.extent(mask.shape)
    consensus = view.image(mask, k)
    raters = [view.image(result.rater_labels[p] > 0, k) for p in range(result.n_raters)]
    figure, axis = plt.subplots(figsize=(7.5, 6.5), constrained_layout=True)
    background = view.image(image, k) if image is not None else np.zeros(consensus.shape)
    axis.imshow(background, cmap="gray", extent=extent, interpolation="nearest")
    handles = []
    for rater, name, color in zip(raters, result.rater_names, distinct_colors(result.n_raters)):
        if rater.any() and not rater.all():
            axis.contour(rater.astype(float), levels=[0.5], colors=[color], linewidths=1.0, extent=extent,
                         origin="upper")
        handles.append(Line2D([], [], color=color, linewidth=1.0, label=name))
    if consensus.any() and not consensus.all():
        # a dark halo keeps the white line visible on white matter as on fluid
        for color, width in (("black", 3.6), ("white", 2.0)):
            axis.contour(consensus.astype(float), levels=[0.5], colors=[color], linewidths=width, extent=extent,
                         origin="upper")
    handles.append(Line2D([], [], color="white", linewidth=2.0, label="consensus"))
    low_tau = view.image(region, k) if region is not None else None
    if low_tau is not None and low_tau.any():
        overlay = np.zeros((*consensus.shape, 4))
        overlay[low_tau] = (1.0, 0.1, 0.1, 0.6)
        axis.imshow(overlay, extent=extent, interpolation="nearest")
        handles.append(Patch(color=(1.0, 0.1, 0.1, 0.6), label=f"lowest τ of {result.rater_names[outlier]}"))
    xlim, ylim = view.zoom(np.logical_or.reduce([consensus, *raters]), ZOOM_MARGIN_MM)
    axis.set_xlim(*xlim)
    axis.set_ylim(*ylim)
    # outside the axes, where the layout makes room for it (rater names can be long)
    figure.legend(handles=handles, loc="outside right upper", fontsize="small", facecolor="0.35",
                  labelcolor="white", framealpha=1.0)
    axis.set_title(f"{result.method} consensus of {result.n_raters} raters, slice {k}")
    axis.set_xlabel(f"{view.column_label} (mm)")
    axis.set_ylabel(f"{view.row_label} (mm)")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return {"slice": k, "outlier": None if outlier is None else result.rater_names[outlier]}


def run(args: argparse.Namespace) -> dict:
    """Do the work of :func:`main` for parsed arguments; raises ``ValueError`` for bad input."""
    smoothness = args.smoothness_mm
    if smoothness is None:
        smoothness = default_smoothness_mm("probability" if args.probabilities else "mask")
    if not (np.isfinite(smoothness) and smoothness >= 0):
        raise ValueError(f"--smoothness-mm must be a length >= 0 in mm (0: no spatial prior), got {smoothness}")
    if not (np.isfinite(args.scale_mm) and args.scale_mm > 0):
        raise ValueError(f"--scale-mm must be a positive length in mm, got {args.scale_mm}")
    if args.mixture and args.method not in ("student-t", "gaussian", "majority", "staple"):
        raise ValueError(f"unknown method {args.method!r}")
    device = str(check_device(args.device))
    image, grid = None, None
    if args.image is not None:
        image, geometry = read_image(args.image)
        grid = (image.shape, geometry)
    raters, names, (shape, geometry) = read_raters(args.raters, segment=args.segment,
                                                   probabilities=args.probabilities, grid=grid)
    names = [n if names.count(n) == 1 else f"{n}_{i + 1}" for i, n in enumerate(names)]
    flat = raters.shape[1] == 1                      # a single slice is fused in 2-D
    arrays = raters[:, 0] if flat else raters
    spacing = geometry.spacing[1:] if flat else geometry.spacing
    options = dict(spacing=spacing, image=None if (image is None or args.probabilities) else (image[0] if flat else image),
                   kind="probability" if args.probabilities else "mask", names=names, link=args.link,
                   scale_mm=args.scale_mm, spatial_prior=smoothness > 0,
                   smoothness_mm=smoothness if smoothness > 0 else DEFAULT_SMOOTHNESS_MM,
                   device=device)

    def progress(fraction: float, message: str) -> None:
        if not args.quiet:
            print(f"\r{PROGRAM}: {100 * fraction:5.1f}%  {message[:70]:70s}", end="", file=sys.stderr, flush=True)

    options["progress"] = progress
    if args.mixture:
        result = fuse_mixture(arrays, args.method, **options)
    else:
        result = fuse(arrays, args.method, **options)
    if not args.quiet:
        print(file=sys.stderr)

    def full(array: np.ndarray) -> np.ndarray:
        return array[None] if flat else array

    os.makedirs(args.output, exist_ok=True)
    labels = result.consensus_labels()
    titles = ["consensus"] if len(labels) == 1 else [f"consensus_{m + 1}" for m in range(len(labels))]
    write_segmentation(os.path.join(args.output, "consensus.seg.nrrd"), [full(l > 0) for l in labels], geometry,
                       names=titles)
    for m, title in enumerate(titles):
        name = "probability.nrrd" if len(titles) == 1 else f"probability_{m + 1}.nrrd"
        write_map(os.path.join(args.output, name), full(1.0 - result.consensuses[m, 0]), geometry)
    tau_files = []
    if result.tau is not None:
        for p, name in enumerate(names):
            tau_files.append(f"tau_{p + 1:02d}_{_safe(name)}.nrrd")
            write_map(os.path.join(args.output, tau_files[-1]), full(result.tau[p]), geometry)
    table = result.rater_table()
    with open(os.path.join(args.output, "raters.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        for row in table:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    figure = write_figure(os.path.join(args.output, "figure.png"), _as_3d(result) if flat else result, geometry,
                          None if image is None else image)
    summary = {"raters": list(args.raters), "names": names, "method": args.method, "mixture": args.mixture,
               "image": args.image, "smoothness_mm": smoothness, "scale_mm": args.scale_mm,
               "link": args.link, "device": device, "n_consensuses": len(titles), "tau_maps": tau_files,
               "figure": figure,
               "consensus_volume_ml": float(np.count_nonzero(result.mask) * np.prod(geometry.spacing) / 1000.0),
               "table": table, "parameters": {k: v for k, v in result.parameters.items()
                                              if isinstance(v, (int, float, str, bool, type(None)))}}
    with open(os.path.join(args.output, "summary.json"), "w") as file:
        json.dump(summary, file, indent=2, default=float)
    return summary


def _as_3d(result: FusionResult) -> FusionResult:
    """A 2-D result seen as one slice, for the figure."""
    from dataclasses import replace

    tau_box = None if result.tau_box is None else result.tau_box[:, None]
    return replace(result, probabilities=result.probabilities[:, None], labels=result.labels[None],
                   consensuses=result.consensuses[:, :, None], rater_labels=result.rater_labels[:, None],
                   tau_box=tau_box, domain=(slice(0, 1), *result.domain), spacing=(1.0, *result.spacing),
                   _overlaps=None, _tau=None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fuse`` console script; returns the exit status (0, or 2 for bad input)."""
    args = build_parser().parse_args(argv)
    status, summary = run_command(PROGRAM, run, args)
    if status == 0 and not args.quiet:
        print(f"fused {len(summary['names'])} raters ({summary['method']}) into {args.output}: consensus "
              f"{summary['consensus_volume_ml']:.2f} ml" + (f", {summary['n_consensuses']} clusters"
                                                            if summary["n_consensuses"] > 1 else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
