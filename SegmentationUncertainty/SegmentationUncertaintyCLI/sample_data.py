"""``segmentation-uncertainty-sample-data``: the bundled sample cases as files, to try the command-line tools on.

Example::

    segmentation-uncertainty-sample-data sample/

writes into ``sample/`` (from data installed offline: :mod:`SegmentationUncertaintyLib.sample_data`):

====================================  ===============================================================
``mni152_t1.nrrd``                    MNI ICBM152 2009a T1 (1 mm)
``mni152_ventricles.seg.nrrd``        its lateral ventricles (segment ``lateral_ventricles``)
``mni152_ventricle_raters.seg.nrrd``  five raters of the ventricles, one of them an outlier
``colin27_t1.nrrd``                   Colin27 T1 (1 mm)
``colin27_aal.seg.nrrd``              AAL structures: ``Hippocampus_L``, ``Hippocampus_R``, ``Thalamus_L``,
                                      ``Thalamus_R``
``lidc_nodule_<n>.seg.nrrd``          LIDC-IDRI lung nodules of at least 10 mm (``--lidc``, default 3):
                                      one segment per radiologist who outlined it (no CT: LIDC's
                                      outlines only)
====================================  ===============================================================

Exits with status 2 and a message saying what to install when a data package is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from SegmentationUncertaintyLib import sample_data

from .io import run_command, write_map, write_segmentation

PROGRAM = "segmentation-uncertainty-sample-data"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Write the bundled sample cases as NRRD files: "
                                     "the MNI152 and Colin27 T1 MRIs with reference segmentations, five raters of "
                                     "the MNI152 ventricles, and LIDC-IDRI nodules outlined by their radiologists.")
    parser.add_argument("output", help="output folder (created if needed)")
    parser.add_argument("--lidc", type=int, default=3, help="number of LIDC-IDRI nodules to write (default 3)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not list the files written")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Write the files of :func:`main`; returns ``{"files": [paths], "notes": {path: what it holds}}``."""
    if args.lidc < 0:
        raise ValueError(f"--lidc must be a number of nodules >= 0, got {args.lidc}")
    try:
        mni, raters = sample_data.load_mni152(), sample_data.load_mni152_ventricle_raters()
        colin = sample_data.load_colin27()
        nodules = sample_data.load_lidc_nodules(limit=args.lidc) if args.lidc else []
    except sample_data.SampleDataNotInstalledError as error:
        raise ValueError(str(error)) from None
    os.makedirs(args.output, exist_ok=True)
    files = []

    def path(name: str) -> str:
        files.append(os.path.join(args.output, name))
        return files[-1]

    write_map(path("mni152_t1.nrrd"), mni.image, mni.geometry)
    write_segmentation(path("mni152_ventricles.seg.nrrd"), list(mni.masks.values()), mni.geometry,
                       names=list(mni.masks))
    write_segmentation(path("mni152_ventricle_raters.seg.nrrd"), list(raters.masks.values()), raters.geometry,
                       names=list(raters.masks))
    write_map(path("colin27_t1.nrrd"), colin.image, colin.geometry)
    write_segmentation(path("colin27_aal.seg.nrrd"), list(colin.masks.values()), colin.geometry,
                       names=list(colin.masks))
    notes = {}
    for number, nodule in enumerate(nodules, start=1):
        write_segmentation(path(f"lidc_nodule_{number}.seg.nrrd"), nodule.masks, nodule.geometry,
                           names=[f"radiologist {r + 1}" for r in range(len(nodule.masks))])
        patient, index = nodule.id.split("/")
        notes[files[-1]] = f"{patient} nodule {index}, {nodule.diameter_mm:.0f} mm, {len(nodule.masks)} radiologists"
    return {"files": files, "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (0, or 2 for a missing data package)."""
    args = build_parser().parse_args(argv)
    status, summary = run_command(PROGRAM, run, args)
    if status == 0 and not args.quiet:
        print("\n".join(f"{name}  ({summary['notes'][name]})" if name in summary["notes"] else name
                        for name in summary["files"]))
    return status


if __name__ == "__main__":
    sys.exit(main())
