"""``gpssi``: sample plausible segmentations around a reference, from the command line.

Example::

    gpssi t1.nii.gz ventricles.seg.nrrd --segment ventricles --dice 0.85 -n 40 -o out/

reads the image and the reference segment (resampled onto the image grid), calibrates ω0 so that the
samples' mean pairwise Dice is 0.85, draws 40 samples and writes into ``out/``:

=======================  ======================================================================
``samples.seg.nrrd``     the samples, one segment each (distinct colours), opens in 3D Slicer
``frequency.nrrd``       fraction of the samples containing each voxel
``entropy.nrrd``         binary entropy (bits) of that frequency
``dice_curve.csv``       mean pairwise Dice against ω0 (GPSSI only): ``omega0,dice,stderr``
``preview.png``          the axial slice where the reference is largest (oriented as in Slicer):
                         reference and sample contours, and the frequency map
``summary.json``         parameters (ω0, ω1, γ, ...), the samples' mean pairwise Dice and volumes
=======================  ======================================================================

Bad input (missing file, empty reference, unknown segment, NaN in the image, ...) exits with status 2
and a message that says what is wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Sequence

import numpy as np

from SegmentationUncertaintyLib.geometry import Geometry, slice_view
from SegmentationUncertaintyLib.metrics import SampleStatistics, coefficient_of_variation, mean_pairwise_dice
from SegmentationUncertaintyLib.samplers import SOURCES, SegmentationSampler, create_sampler

from .io import read_image, read_segmentation, run_command, write_map, write_segmentation

PROGRAM = "gpssi"
#: Margin (mm) around the samples in the preview, which is zoomed on them.
ZOOM_MARGIN_MM = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Sample plausible segmentations around a reference segmentation (GPSSI, "
        "Lê et al. MICCAI 2015), or with the log-odds / STAPLE-ICM baselines.")
    parser.add_argument("image", help="image volume (NRRD, NIfTI, MHA, ...)")
    parser.add_argument("reference", help="reference: a mask / label map, or a Slicer .seg.nrrd")
    parser.add_argument("--segment", help="segment of the reference to use, by name, identifier or index "
                        "(needed when it holds several)")
    spread = parser.add_mutually_exclusive_group()
    spread.add_argument("--dice", type=float, help="target mean pairwise Dice of the samples, in (0, 1); "
                        "GPSSI calibrates ω0 to it (default 0.85 when --omega0 is not given)")
    spread.add_argument("--omega0", type=float, help="GPSSI level-function variance ω0 (mm²)")
    parser.add_argument("-n", "--n-samples", type=int, default=20, help="number of samples (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); calibration uses seed + 1")
    parser.add_argument("--gamma", type=float, help="geodesic edge weight γ (default 100 / mean |image|; 0 = "
                        "Euclidean distance)")
    parser.add_argument("--h", type=float, default=1.0, help="image smoothing scale for the geodesic, mm (default 1)")
    parser.add_argument("--omega1", type=float, help="correlation length ω1, mm (default: equivalent-sphere radius)")
    parser.add_argument("--source", choices=sorted(SOURCES), default="gpssi", help="sampler (default gpssi)")
    parser.add_argument("--scale", type=float, help="log-odds / STAPLE-ICM: distance scale of "
                        "P(inside) = sigmoid(-d / scale), mm (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples drawn at once (default 8)")
    parser.add_argument("-o", "--output", default="gpssi_output", help="output folder (created if needed)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


#: Sources whose spread ``--scale`` sets (the others: GPSSI by its DICE or ω0, a network by itself).
BASELINES = ("logodds", "staple-icm")


def _sampler(args: argparse.Namespace, reference: np.ndarray, image: np.ndarray,
             spacing: Sequence[float]) -> SegmentationSampler:
    if args.source == "gpssi":
        return create_sampler("gpssi", reference, image, spacing, omega0=args.omega0, omega1=args.omega1,
                              gamma=args.gamma, h=args.h, device=args.device)
    baseline = args.source in BASELINES
    if args.dice is not None or args.omega0 is not None or args.omega1 is not None or args.gamma is not None:
        raise ValueError(f"--dice, --omega0, --omega1 and --gamma apply to --source gpssi only; the spread of "
                         + (f"{args.source} is set by --scale" if baseline else f"the {args.source} network is its own"))
    if not baseline:
        if args.scale is not None:
            raise ValueError(f"--scale applies to the baselines {', '.join(BASELINES)} only, not to {args.source}")
        return create_sampler(args.source, reference, image, spacing, device=args.device)
    return create_sampler(args.source, reference, image, spacing, scale=1.0 if args.scale is None else args.scale,
                          device=args.device)


def _check_arguments(args: argparse.Namespace) -> None:
    """Cheap checks before any file is read."""
    if args.n_samples < 1:
        raise ValueError(f"-n must be at least 1, got {args.n_samples}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.dice is not None and not 0.0 < args.dice < 1.0:
        raise ValueError(f"--dice must lie strictly between 0 and 1, got {args.dice}")
    for name in ("omega0", "omega1"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"--{name} must be a positive number, got {value}")


def write_preview(path: str, image: np.ndarray, reference: np.ndarray, samples: np.ndarray, frequency: np.ndarray,
                  geometry: Geometry, title: str) -> None:
    """PNG of the slice where the reference is largest, drawn as Slicer draws it
    (:func:`~SegmentationUncertaintyLib.geometry.slice_view`) and zoomed on the samples: image with reference
    (red) and sample (orange) contours, and the frequency map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = slice_view(geometry, reference.shape)
    k = int(np.argmax(view.slice_sums(reference)))
    extent = view.extent(reference.shape)
    outline = view.image(reference, k).astype(float)
    figure, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    axes[0].imshow(view.image(image, k), cmap="gray", extent=extent, interpolation="nearest")
    for sample in samples:
        picture = view.image(sample, k)
        if picture.any() and not picture.all():
            axes[0].contour(picture.astype(float), levels=[0.5], colors=["#ff9a1f"], linewidths=0.7, extent=extent,
                            origin="upper")
    axes[0].contour(outline, levels=[0.5], colors=["#e8112d"], linewidths=1.8, extent=extent, origin="upper")
    axes[0].set_title(f"reference (red) and {len(samples)} samples (orange), slice {k}")
    shown = axes[1].imshow(view.image(frequency, k), cmap="magma", vmin=0, vmax=1, extent=extent,
                           interpolation="nearest")
    axes[1].contour(outline, levels=[0.5], colors=["#33c4ff"], linewidths=1.2, extent=extent, origin="upper")
    axes[1].set_title("frequency of the samples (reference in blue)")
    figure.colorbar(shown, ax=axes[1], shrink=0.8)
    xlim, ylim = view.zoom((outline > 0) | (view.image(frequency, k) > 0), ZOOM_MARGIN_MM)
    for axis in axes:
        axis.set_xlim(*xlim)
        axis.set_ylim(*ylim)
        axis.set_xlabel(f"{view.column_label} (mm)")
        axis.set_ylabel(f"{view.row_label} (mm)")
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(args: argparse.Namespace) -> dict:
    """Do the work of :func:`main` for parsed arguments; raises ``ValueError`` for bad input."""
    from tqdm import tqdm

    _check_arguments(args)
    image, geometry = read_image(args.image)
    segmentation = read_segmentation(args.reference, reference=(image.shape, geometry))
    segment = segmentation.select(args.segment)
    reference = segment.mask
    # a single slice is sampled in 2-D (ω1 then defaults to the equivalent-disc radius)
    flat = reference.shape[0] == 1
    core_reference, core_image = (reference[0], image[0]) if flat else (reference, image)
    spacing = geometry.spacing[1:] if flat else geometry.spacing
    sampler = _sampler(args, core_reference, core_image, spacing)
    os.makedirs(args.output, exist_ok=True)
    summary: dict = {"image": os.fspath(args.image), "reference": os.fspath(args.reference),
                     "segment": segment.name, "n_samples": args.n_samples, "seed": args.seed}
    if args.source == "gpssi":
        if sampler.omega0 is None:
            target = 0.85 if args.dice is None else args.dice
            sampler.calibrate(target, seed=args.seed + 1)
            summary["target_dice"] = target
        curve = sampler.dice_curve(seed=args.seed + 1)
        with open(os.path.join(args.output, "dice_curve.csv"), "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["omega0", "dice", "stderr"])
            for row in zip(curve.omega0, curve.dice, curve.stderr):
                writer.writerow([f"{v:.6g}" for v in row])
    summary.update(sampler.parameters())

    statistics = SampleStatistics(spacing)
    samples = np.empty((args.n_samples, *core_reference.shape), dtype=bool)
    with tqdm(total=args.n_samples, desc=f"{args.source} samples", unit="sample", disable=args.quiet,
              file=sys.stderr) as progress:
        done = 0
        for batch in sampler.sample_batches(args.n_samples, seed=args.seed, batch_size=args.batch_size):
            samples[done:done + len(batch)] = batch
            for sample in batch:
                statistics.update(sample)
            done += len(batch)
            progress.update(len(batch))
    full = samples[:, None] if flat else samples
    frequency, entropy = statistics.frequency, statistics.entropy
    if flat:
        frequency, entropy = frequency[None], entropy[None]
    width = len(str(args.n_samples))
    write_segmentation(os.path.join(args.output, "samples.seg.nrrd"), full, geometry,
                       names=[f"sample_{i + 1:0{width}d}" for i in range(args.n_samples)])
    write_map(os.path.join(args.output, "frequency.nrrd"), frequency, geometry)
    write_map(os.path.join(args.output, "entropy.nrrd"), entropy, geometry)
    if args.n_samples > 1:
        summary["mean_pairwise_dice"] = mean_pairwise_dice(samples)
    volumes = statistics.volumes
    summary["volumes_ml" if not flat else "areas_cm2"] = [round(float(v), 4) for v in volumes]
    summary["volume_cv"] = coefficient_of_variation(volumes) if volumes.mean() > 0 else None
    title = f"{args.source}: {segment.name}, " + ", ".join(
        f"{key} = {summary[key]:.3g}" for key in ("omega0", "mean_pairwise_dice") if summary.get(key) is not None)
    write_preview(os.path.join(args.output, "preview.png"), image, reference, full, frequency, geometry, title)
    with open(os.path.join(args.output, "summary.json"), "w") as file:
        json.dump(summary, file, indent=2, default=float)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpssi`` console script; returns the exit status (0, or 2 for bad input)."""
    args = build_parser().parse_args(argv)
    status, summary = run_command(PROGRAM, run, args)
    if status == 0 and not args.quiet:
        dice = summary.get("mean_pairwise_dice")
        print(f"wrote {args.n_samples} samples to {args.output}"
              + (f" (mean pairwise Dice {dice:.3f})" if dice is not None else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
