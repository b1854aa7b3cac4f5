"""The ``fuse`` command line: files in, consensus / τ maps / table / figure out, clear errors (exit 2)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from SegmentationUncertaintyCLI.fuse import main
from SegmentationUncertaintyCLI.io import read_image, read_segmentation, write_map, write_segmentation
from SegmentationUncertaintyLib.geometry import Geometry
from SegmentationUncertaintyLib.gpssi import GPSSISampler
from SegmentationUncertaintyLib.metrics import dice

GEOMETRY = Geometry(spacing=(1.5, 1.0, 1.0), origin=(10.0, -5.0, 3.0))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuse")
    grid = np.ogrid[0:18, 0:30, 0:30]
    truth = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, (9, 15, 15), (5, 9, 8))) < 1
    raters = list(GPSSISampler(truth, None, GEOMETRY.spacing, omega0=1.0).sample(4, seed=1))
    blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, (9, 15, 25), (3, 3, 3))) < 1
    raters[3] = raters[3] | blob
    write_segmentation(folder / "raters.seg.nrrd", raters, GEOMETRY, names=["ann", "bob", "cy", "dee"], crop=False)
    for i, rater in enumerate(raters):
        write_segmentation(folder / f"r{i}.seg.nrrd", [rater], GEOMETRY, crop=False)
        write_map(folder / f"p{i}.nrrd", rater.astype(np.float32) * 0.9 + 0.05, GEOMETRY)
    image = (100 + 50 * truth + np.random.default_rng(0).normal(0, 3, truth.shape)).astype(np.float32)
    write_map(folder / "image.nrrd", image, GEOMETRY)
    return folder, truth, raters


def test_fuse_one_segmentation_with_image(case):
    folder, truth, raters = case
    out = folder / "out"
    assert main([str(folder / "raters.seg.nrrd"), "--image", str(folder / "image.nrrd"), "-o", str(out), "-q"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["consensus.seg.nrrd", "figure.png", "probability.nrrd", "raters.csv", "summary.json",
                     "tau_01_ann.nrrd", "tau_02_bob.nrrd", "tau_03_cy.nrrd", "tau_04_dee.nrrd"]
    consensus = read_segmentation(out / "consensus.seg.nrrd", reference=(truth.shape, GEOMETRY))
    assert dice(consensus.segments[0].mask, truth) > 0.9
    rows = list(csv.DictReader(open(out / "raters.csv")))
    assert [r["rater"] for r in rows] == ["ann", "bob", "cy", "dee"]
    assert {"bias_1", "variance", "nu", "mean_tau", "dice", "hd95_mm"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    # the figure names the rater the fusion trusts least: here the one furthest from the truth (a GPSSI
    # sample with Dice 0.87; dee's blob costs it less, Dice 0.96)
    worst = min(range(4), key=lambda p: dice(raters[p], truth))
    assert summary["figure"]["outlier"] == rows[worst]["rater"]
    # dee's τ map marks its blob: its weight there is far below its weight on the rest of its border band
    tau, _ = read_image(out / "tau_04_dee.nrrd")
    blob = raters[3] & ~ndi.binary_dilation(truth, iterations=2)
    band = ndi.binary_dilation(raters[3], iterations=2) & ~ndi.binary_erosion(raters[3], iterations=2)
    assert tau[blob].mean() < 0.5 * tau[band & ~ndi.binary_dilation(blob, iterations=2)].mean()
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", ["gaussian", "staple", "majority"])
def test_fuse_one_file_per_rater(case, method):
    folder, truth, _ = case
    out = folder / f"out_{method}"
    files = [str(folder / f"r{i}.seg.nrrd") for i in range(4)]
    assert main([*files, "--method", method, "-o", str(out), "-q"]) == 0
    assert not list(out.glob("tau_*.nrrd"))
    consensus = read_segmentation(out / "consensus.seg.nrrd", reference=(truth.shape, GEOMETRY))
    assert dice(consensus.segments[0].mask, truth) > 0.9


def test_fuse_probability_volumes_and_mixture(case):
    folder, truth, _ = case
    files = [str(folder / f"p{i}.nrrd") for i in range(4)]
    assert main([*files, "--probabilities", "--smoothness-mm", "0", "-o", str(folder / "out_p"), "-q"]) == 0
    assert len(list((folder / "out_p").glob("tau_*.nrrd"))) == 4
    # the same file name in several folders (as gpssi writes frequency.nrrd per run): named by their folders
    for source, i in (("ssn", 0), ("phiseg", 1)):
        (folder / source).mkdir(exist_ok=True)
        (folder / source / "frequency.nrrd").write_bytes((folder / f"p{i}.nrrd").read_bytes())
    assert main([str(folder / "ssn" / "frequency.nrrd"), str(folder / "phiseg" / "frequency.nrrd"),
                 "--probabilities", "-o", str(folder / "out_f"), "-q"]) == 0
    probabilistic = json.loads((folder / "out_f" / "summary.json").read_text())
    assert probabilistic["names"] == ["ssn/frequency", "phiseg/frequency"]
    # probability volumes are fused without the smoothness prior by default, masks with it
    assert probabilistic["smoothness_mm"] == 0 and not probabilistic["parameters"]["spatial_prior"]
    # --device defaults to auto: the GPU when torch sees one
    assert probabilistic["device"] == probabilistic["parameters"]["device"] == (
        "cuda" if torch.cuda.is_available() else "cpu")
    assert main([str(folder / "raters.seg.nrrd"), "--mixture", "-o", str(folder / "out_m"), "-q"]) == 0
    summary = json.loads((folder / "out_m" / "summary.json").read_text())
    assert summary["n_consensuses"] == 1 and summary["smoothness_mm"] == 2.0


def test_fuse_errors_exit_2(case, tmp_path, capsys):
    folder, truth, _ = case
    assert main([str(folder / "r0.seg.nrrd"), "-o", str(tmp_path / "a")]) == 2
    assert "at least 2 raters" in capsys.readouterr().err
    assert main([str(folder / "missing.seg.nrrd"), str(folder / "r1.seg.nrrd"), "-o", str(tmp_path / "b")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([str(folder / "raters.seg.nrrd"), "--smoothness-mm", "-1", "-o", str(tmp_path / "c")]) == 2
    assert "--smoothness-mm" in capsys.readouterr().err
    write_map(tmp_path / "bad.nrrd", np.full(truth.shape, 1.7, dtype=np.float32), GEOMETRY)
    assert main([str(folder / "p0.nrrd"), str(tmp_path / "bad.nrrd"), "--probabilities", "-o",
                 str(tmp_path / "d")]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert main([str(folder / "raters.seg.nrrd"), "--device", "tpu", "-o", str(tmp_path / "e")]) == 2
    assert "'cpu', 'cuda' or 'auto'" in capsys.readouterr().err and not (tmp_path / "e").exists()
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder / "raters.seg.nrrd"), "--method", "average"])
    assert exit_info.value.code == 2
