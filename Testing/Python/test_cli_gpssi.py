"""The ``gpssi`` command end to end on a small real crop (Colin27 left hippocampus), and its file I/O."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from SegmentationUncertaintyCLI.gpssi import main
from SegmentationUncertaintyCLI.io import read_image, read_segmentation, write_map, write_segmentation
from SegmentationUncertaintyLib.geometry import Geometry, apply_geometry_to_sitk
from SegmentationUncertaintyLib.metrics import dice


@pytest.fixture(scope="module")
def case_files(tmp_path_factory, colin27):
    """Image, a two-segment .seg.nrrd (hippocampus and thalamus) and a NIfTI label map, on disk."""
    case = colin27.crop(6.0, ["Hippocampus_L"])
    folder = tmp_path_factory.mktemp("case")
    write_map(folder / "t1.nrrd", case.image, case.geometry)
    write_segmentation(folder / "structures.seg.nrrd", [case.masks["Thalamus_L"], case.masks["Hippocampus_L"]],
                       case.geometry, names=["Thalamus_L", "Hippocampus_L"], crop=False)
    labels = sitk.GetImageFromArray(case.masks["Hippocampus_L"].astype(np.uint8) * 3)
    apply_geometry_to_sitk(labels, case.geometry)
    sitk.WriteImage(labels, str(folder / "hippocampus.nii.gz"))
    return folder, case


def test_gpssi_end_to_end_writes_samples_maps_curve_and_figure(case_files, tmp_path):
    folder, case = case_files
    out = tmp_path / "out"
    status = main([str(folder / "t1.nrrd"), str(folder / "structures.seg.nrrd"), "--segment", "Hippocampus_L",
                   "--dice", "0.85", "-n", "12", "--seed", "3", "-o", str(out), "-q"])
    assert status == 0
    for name in ("samples.seg.nrrd", "frequency.nrrd", "entropy.nrrd", "dice_curve.csv", "preview.png",
                 "summary.json"):
        assert (out / name).stat().st_size > 0, name

    image, geometry = read_image(folder / "t1.nrrd")
    samples = read_segmentation(out / "samples.seg.nrrd", reference=(image.shape, geometry))
    assert len(samples.segments) == 12
    assert samples.names[0] == "sample_01" and len({s.color for s in samples.segments}) == 12
    reference = case.masks["Hippocampus_L"]
    stack = np.stack([s.mask for s in samples.segments])
    overlap = (stack & reference).sum(axis=(1, 2, 3)) / reference.sum()
    assert np.all(overlap > 0.7) and not all(np.array_equal(s, reference) for s in stack)
    # the file itself is cropped to the samples but lies on the image's grid
    raw = read_segmentation(out / "samples.seg.nrrd")
    assert raw.geometry.spacing == pytest.approx(geometry.spacing)
    np.testing.assert_allclose(raw.geometry.directions, geometry.directions, atol=1e-9)
    offset = np.linalg.solve(geometry.ijk_to_ras(), np.array([*raw.geometry.origin, 1.0]))[:3]
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-6)

    frequency, frequency_geometry = read_image(out / "frequency.nrrd")
    assert frequency.shape == image.shape and frequency_geometry.origin == pytest.approx(geometry.origin)
    np.testing.assert_allclose(frequency, stack.mean(axis=0), atol=1e-6)
    entropy, _ = read_image(out / "entropy.nrrd")
    assert np.all((entropy >= 0) & (entropy <= 1)) and entropy[(frequency > 0) & (frequency < 1)].min() > 0

    rows = list(csv.DictReader(open(out / "dice_curve.csv")))
    omega0 = np.array([float(r["omega0"]) for r in rows])
    dice = np.array([float(r["dice"]) for r in rows])
    assert len(rows) >= 10 and np.all(np.diff(omega0) > 0) and dice[0] > 0.99 and dice[-1] < 0.85

    summary = json.loads((out / "summary.json").read_text())
    assert summary["segment"] == "Hippocampus_L" and summary["omega0"] > 0 and summary["gamma"] > 0
    assert summary["mean_pairwise_dice"] == pytest.approx(0.85, abs=0.03)

    import matplotlib.image

    picture = matplotlib.image.imread(out / "preview.png")
    assert picture.shape[0] > 300 and picture[..., :3].std() > 0.1


def test_samples_file_opens_in_slicer(case_files, tmp_path, slicer_scene):
    from SegmentationUncertaintyLogic.nodes import add_volume, load_segmentation, segment_ids, segment_mask

    folder, case = case_files
    out = tmp_path / "out"
    assert main([str(folder / "t1.nrrd"), str(folder / "hippocampus.nii.gz"), "--omega0", "3", "-n", "3",
                 "-o", str(out), "-q"]) == 0
    image, geometry = read_image(folder / "t1.nrrd")
    volume = add_volume(image, geometry, "t1")
    node = load_segmentation(str(out / "samples.seg.nrrd"))
    ids = segment_ids(node)
    ours = read_segmentation(out / "samples.seg.nrrd", reference=(image.shape, geometry))
    assert [node.GetSegmentation().GetSegment(i).GetName() for i in ids] == ours.names
    for segment_id, segment in zip(ids, ours.segments):
        np.testing.assert_array_equal(segment_mask(node, segment_id, volume), segment.mask)
        assert node.GetSegmentation().GetSegment(segment_id).GetColor() == pytest.approx(segment.color, abs=1e-4)


def test_baseline_sources_and_a_single_slice(case_files, tmp_path):
    folder, case = case_files
    out = tmp_path / "logodds"
    assert main([str(folder / "t1.nrrd"), str(folder / "hippocampus.nii.gz"), "--source", "staple-icm", "-n", "4",
                 "-o", str(out), "-q"]) == 0
    assert len(read_segmentation(out / "samples.seg.nrrd").segments) == 4 and not (out / "dice_curve.csv").exists()
    # a 2-D image and mask: sampled in 2-D, written as one slice
    k = int(np.argmax(case.masks["Hippocampus_L"].sum(axis=(1, 2))))
    image2d = sitk.GetImageFromArray(case.image[k])
    image2d.SetSpacing(case.spacing[::-1][:2])
    sitk.WriteImage(image2d, str(tmp_path / "slice.nrrd"))
    mask2d = sitk.GetImageFromArray(case.masks["Hippocampus_L"][k].astype(np.uint8))
    mask2d.CopyInformation(image2d)
    sitk.WriteImage(mask2d, str(tmp_path / "slice_mask.nrrd"))
    out = tmp_path / "flat"
    assert main([str(tmp_path / "slice.nrrd"), str(tmp_path / "slice_mask.nrrd"), "--dice", "0.9", "-n", "6",
                 "-o", str(out), "-q"]) == 0
    flat = read_segmentation(out / "samples.seg.nrrd")
    assert len(flat.segments) == 6 and flat.segments[0].mask.shape[0] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["omega1_mm"] == pytest.approx(np.sqrt(case.masks["Hippocampus_L"][k].sum() / np.pi), rel=1e-6)


def test_network_source_samples_from_the_command_line(case_files, tmp_path):
    """A shipped network (SSN) as the source: no GPSSI option, samples around the reference."""
    folder, case = case_files
    out = tmp_path / "ssn"
    assert main([str(folder / "t1.nrrd"), str(folder / "hippocampus.nii.gz"), "--source", "ssn", "-n", "4",
                 "-o", str(out), "-q"]) == 0
    samples = read_segmentation(out / "samples.seg.nrrd", reference=(case.image.shape, case.geometry)).segments
    assert len(samples) == 4 and not (out / "dice_curve.csv").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "ssn" and 0.5 < summary["mean_pairwise_dice"] < 1.0
    reference = case.masks["Hippocampus_L"]
    assert min(dice(s.mask, reference) for s in samples) > 0.6


def _bad_files(tmp_path, case):
    empty = tmp_path / "empty.nrrd"
    write_map(empty, np.zeros(case.image.shape), case.geometry)
    nan_image = tmp_path / "nan.nrrd"
    write_map(nan_image, np.where(case.masks["Hippocampus_L"], np.nan, case.image), case.geometry)
    four_d = tmp_path / "four_d.nrrd"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(case.image)] * 2), str(four_d))
    return {"empty": empty, "nan": nan_image, "four_d": four_d}


@pytest.mark.parametrize("arguments, message", [
    (["{t1}", "{missing}"], "no such file"),
    (["{t1}", "{empty}"], "empty"),
    (["{t1}", "{structures}"], "choose one"),
    (["{t1}", "{structures}", "--segment", "Amygdala"], "no segment named"),
    (["{t1}", "{structures}", "--segment", "7"], "out of range"),
    (["{nan}", "{labels}"], "NaN"),
    (["{four_d}", "{labels}"], "axes"),
    (["{t1}", "{labels}", "--dice", "1.5"], "between 0 and 1"),
    (["{t1}", "{labels}", "--omega0", "-2"], "positive"),
    (["{t1}", "{labels}", "--omega1", "0"], "positive"),
    (["{t1}", "{labels}", "--source", "logodds", "--dice", "0.8"], "gpssi only"),
    (["{t1}", "{labels}", "--source", "ssn", "--scale", "2"], "baselines logodds, staple-icm only"),
    (["{t1}", "{labels}", "-n", "0"], "at least 1"),
])
def test_bad_input_exits_with_status_2_and_a_message(arguments, message, case_files, tmp_path, capsys):
    folder, case = case_files
    files = {"t1": folder / "t1.nrrd", "structures": folder / "structures.seg.nrrd",
             "labels": folder / "hippocampus.nii.gz", "missing": tmp_path / "absent.nrrd", **_bad_files(tmp_path, case)}
    status = main([a.format(**{k: str(v) for k, v in files.items()}) for a in arguments] + ["-o", str(tmp_path / "o"), "-q"])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("gpssi: error:") and message in error, error


def test_console_script_entry_point_reports_bad_input(tmp_path):
    result = subprocess.run([sys.executable, "-m", "SegmentationUncertaintyCLI.gpssi", str(tmp_path / "a.nrrd"),
                             str(tmp_path / "b.nrrd"), "-o", str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_segmentation_io_round_trip_keeps_geometry_names_colours_and_overlaps(tmp_path):
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    geometry = Geometry(spacing=(2.5, 0.8, 0.6), origin=(-10.0, 20.0, 5.0), directions=rotation)
    a = np.zeros((12, 20, 16), bool)
    a[2:8, 3:12, 4:10] = True
    b = np.zeros_like(a)
    b[4:10, 6:15, 6:12] = True  # overlaps a: needs its own layer
    write_segmentation(tmp_path / "x.seg.nrrd", [a, b, np.zeros_like(a)], geometry, names=["a", "b", "none"],
                       colors=[(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    back = read_segmentation(tmp_path / "x.seg.nrrd", reference=(a.shape, geometry))
    assert back.names == ["a", "b", "none"] and back.segments[1].color == (0.0, 1.0, 0.0)
    for segment, mask in zip(back.segments, (a, b, np.zeros_like(a))):
        np.testing.assert_array_equal(segment.mask, mask)
    assert back.select("b") is back.segments[1] and back.select(0) is back.segments[0]
    with pytest.raises(ValueError, match="bad geometry|Geometry"):
        write_segmentation(tmp_path / "y.seg.nrrd", [a], geometry=(1, 1, 1))


def test_sample_data_command_reports_an_unwritable_folder(tmp_path, capsys):
    from SegmentationUncertaintyCLI.sample_data import main as sample_data_main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert sample_data_main([str(blocker / "sample")]) == 2
    assert "error: cannot write the results" in capsys.readouterr().err
    assert sample_data_main([str(tmp_path / "sample"), "--lidc", "-1"]) == 2
    assert "--lidc must be a number of nodules >= 0" in capsys.readouterr().err and not (tmp_path / "sample").exists()
