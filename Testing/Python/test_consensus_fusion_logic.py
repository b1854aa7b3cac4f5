"""ConsensusFusionLogic on a real slicer-core scene: raters around the real Colin27 hippocampus and MNI152
ventricles (cropped), given as segments of one or several segmentations or as probability volumes."""

import numpy as np
import pytest
import torch

from ConsensusFusionLib.logic import ConsensusFusionLogic, FusionCancelled, FusionOutputs
from ConsensusFusionLib.testing import OUTLIER, add_rater_case, check_fusion
from mrml_checks import assert_unchanged, node_snapshot
from SegmentationUncertaintyLib.geometry import Geometry
from SegmentationUncertaintyLogic.nodes import (add_segmentation, add_volume, geometry_of_volume, segment_ids,
                                                segment_mask, table_rows)


@pytest.fixture
def hippocampus(slicer_scene):
    """Cropped Colin27 T1 and five raters of its left hippocampus (AAL), in a fresh scene."""
    return add_rater_case("colin27-hippocampus", margin_mm=5.0)


def _masks(segmentation, volume):
    return [segment_mask(segmentation, i, volume) for i in segment_ids(segmentation)]


@pytest.mark.parametrize("key", ["colin27-hippocampus", "mni152-ventricles"])
@pytest.mark.parametrize("method", ["student-t", "gaussian", "staple", "majority"])
def test_fusion_end_to_end_leaves_inputs_unchanged(slicer_scene, key, method):
    volume, raters = add_rater_case(key, margin_mm=5.0)
    before = [node_snapshot(node, volume) for node in (volume, raters)]
    check_fusion(ConsensusFusionLogic(), volume, raters, method=method)
    for snapshot, node in zip(before, (volume, raters)):
        assert_unchanged(snapshot, node, volume)


def test_student_t_tau_is_low_where_a_rater_is_an_outlier_and_is_shown(hippocampus):
    import slicer

    volume, raters = hippocampus
    composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic = ConsensusFusionLogic()
    out = logic.fuse(raters, volume, method="student-t")
    rows = table_rows(out.raterTable)
    names = [row["rater"] for row in rows]
    assert min(rows, key=lambda row: row["relative tau"])["rater"] == OUTLIER
    assert all(0 < row["relative tau"] <= 1 for row in rows)
    assert f"least trusted: {OUTLIER}" in out.summary
    # segments are fused with the smoothness prior by default, and the summary says which model ran
    assert out.result.parameters["smoothness_mm"] == 2.0 and "smoothness prior 2 mm" in out.summary
    # the fit runs on the GPU when torch sees one (device="auto"), and the summary says so
    gpu = torch.cuda.is_available()
    assert out.result.parameters["device"] == ("cuda" if gpu else "cpu") and ("fitted on the GPU" in out.summary) == gpu
    # the variances at the floor of the maps' resolution are reported as such, not as the raters' own
    floor = out.result.parameters["min_variance"]
    at_floor = sum(row["variance"] <= floor * (1 + 1e-3) for row in rows)
    assert (f"variance at the maps' voxel-resolution floor ({floor:.3g})" in out.summary) == (at_floor > 0)
    masks = dict(zip(names, _masks(raters, volume)))
    # The outlier's extra rim: voxels only the outlier includes.
    rim = masks[OUTLIER] & ~np.any([m for name, m in masks.items() if name != OUTLIER], axis=0)
    tau = {name: slicer.util.arrayFromVolume(node) for name, node in zip(names, out.tau)}
    assert tau[OUTLIER][rim].mean() < 0.1 * tau[OUTLIER][masks["tight"]].mean()
    for name in names:
        if name != OUTLIER:
            assert tau[OUTLIER][rim].mean() < 0.1 * tau[name][rim].mean(), name

    outlier = names.index(OUTLIER)
    display = logic.showTau(out, outlier)
    assert composite.GetForegroundVolumeID() == out.tau[outlier].GetID()
    # Drawn where the rater was down-weighted (the rim), transparent where it is fully trusted.
    assert display.GetApplyThreshold()
    assert tau[OUTLIER][rim].mean() < display.GetUpperThreshold() < np.percentile(tau[OUTLIER], 50)
    assert "not converged" not in out.summary and out.result.parameters["converged"]
    capped = logic.fuse(raters, volume, method="student-t", maxIterations=3)
    assert "not converged: stopped after 3 iterations" in capped.summary
    with pytest.raises(ValueError, match="out of range"):
        logic.showTau(out, len(names))
    with pytest.raises(ValueError, match="no τ maps"):
        logic.showTau(logic.fuse(raters, volume, method="majority"), 0)


@pytest.mark.parametrize("method", ["student-t", "gaussian", "staple", "majority"])
def test_identical_raters_give_their_own_segmentation(slicer_scene, method):
    from SegmentationUncertaintyLib.sample_data import load_colin27

    case = load_colin27(["Hippocampus_R"]).crop(margin_mm=5.0)
    volume = add_volume(case.image, case.geometry, "Colin27")
    mask = case.masks["Hippocampus_R"]
    raters = add_segmentation({f"rater {i}": mask for i in range(3)}, volume, "Identical")
    out = ConsensusFusionLogic().fuse(raters, volume, method=method)
    assert np.array_equal(segment_mask(out.consensus, segment_ids(out.consensus)[0], volume), mask)
    assert all(row["Dice to consensus"] == 1.0 for row in table_rows(out.raterTable))


def test_majority_is_the_voxelwise_majority(hippocampus):
    volume, raters = hippocampus
    out = ConsensusFusionLogic().fuse(raters, volume, method="majority")
    masks = np.stack(_masks(raters, volume))
    expected = masks.sum(axis=0) * 2 > len(masks)
    assert np.array_equal(segment_mask(out.consensus, segment_ids(out.consensus)[0], volume), expected)


def test_raters_from_several_segmentations_and_no_image(hippocampus):
    import slicer

    volume, raters = hippocampus
    ids = segment_ids(raters)
    second = add_segmentation({"as drawn": segment_mask(raters, ids[2], volume)}, volume, "Second reader")
    pairs = [(raters, ids[0]), (raters, ids[1]), (second, segment_ids(second)[0])]
    out = ConsensusFusionLogic().fuse(pairs, method="student-t")  # no image: the first segmentation's grid
    names = [row["rater"] for row in table_rows(out.raterTable)]
    assert names == ["Raters: as drawn", "Raters: generous", "Second reader: as drawn"]  # made unique
    assert [node.GetName() for node in out.tau] == [f"{name} tau" for name in names]
    assert np.allclose(geometry_of_volume(out.probabilities[0]).ijk_to_ras(), geometry_of_volume(volume).ijk_to_ras())
    assert slicer.util.arrayFromVolume(out.probabilities[0]).shape == slicer.util.arrayFromVolume(volume).shape
    assert out.consensus.GetName() == "Raters consensus"


def test_probability_volumes_as_raters(hippocampus):
    import slicer

    from SegmentationUncertaintyLib.geodesic import signed_euclidean_distance

    volume, raters = hippocampus
    geometry = geometry_of_volume(volume)
    masks = _masks(raters, volume)[:3]
    probabilities = [1.0 / (1.0 + np.exp(signed_euclidean_distance(m, geometry.spacing) / 0.7)) for m in masks]
    nodes = [add_volume(p.astype(np.float32), geometry, f"network {i}") for i, p in enumerate(probabilities)]
    before = [node_snapshot(node) for node in nodes]
    out = ConsensusFusionLogic().fuse(nodes, volume, method="student-t")
    for snapshot, node in zip(before, nodes):
        assert_unchanged(snapshot, node)
    # probability volumes are smooth already: fused without the smoothness prior unless one is asked for
    assert not out.result.parameters["spatial_prior"] and "no spatial prior" in out.summary
    smooth = ConsensusFusionLogic().fuse(nodes, volume, method="student-t", smoothness=3.0)
    assert smooth.result.parameters["smoothness_mm"] == 3.0 and "smoothness prior 3 mm" in smooth.summary
    assert [row["rater"] for row in table_rows(out.raterTable)] == ["network 0", "network 1", "network 2"]
    assert out.consensus.GetName() == "Raters consensus" and len(out.tau) == 3
    probability = slicer.util.arrayFromVolume(out.probabilities[0])
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    # Three maps centred on as drawn / one voxel more / one voxel less: the consensus is near the middle one.
    from SegmentationUncertaintyLib import metrics

    assert metrics.dice(probability > 0.5, masks[0]) > 0.9
    logit = ConsensusFusionLogic().fuse(nodes, volume, method="student-t", link="logit")
    assert logit.result.parameters["link"] == "logit" and out.result.parameters["link"] == "sqrt"
    assert metrics.dice(slicer.util.arrayFromVolume(logit.probabilities[0]) > 0.5, masks[0]) > 0.9


def test_samplers_frequency_maps_are_offered_and_fused_as_probabilistic_raters(hippocampus):
    """Each sampler's frequency map is a probabilistic rater (a network's, say): marked as a probability map,
    named after its source, and fused as such; the consensus's own map is marked as a consensus."""
    import slicer

    from GPSSISamplerLib.logic import GPSSISamplerLogic
    from SegmentationUncertaintyLogic.nodes import PROBABILITY_MAP_ATTRIBUTE, probability_maps

    volume, raters = hippocampus
    reference = segment_ids(raters)[0]
    sampler = GPSSISamplerLogic()
    runs = [sampler.generate(volume, raters, reference, source=source, numberOfSamples=5, seed=1)
            for source in ("logodds", "staple-icm", "logodds")]
    maps = probability_maps(slicer.mrmlScene)
    assert maps == [run.frequency for run in runs]
    assert all(node.GetAttribute(PROBABILITY_MAP_ATTRIBUTE) == "samples" for node in maps)
    assert [node.GetName() for node in maps] == [f"{raters.GetSegmentation().GetSegment(reference).GetName()} "
                                                 f"{source} frequency" for source in ("logodds", "staple-icm", "logodds")]
    # frequency maps of a few samples are mostly exactly 0 or 1: the square-root link (the default) is the one
    # for them (bench/frequency_maps_fusion.py); with the logit and the smoothness prior the converged consensus
    # here had Dice 0.86 (probability maps are now fused without the prior by default: default_smoothness_mm)
    out = ConsensusFusionLogic().fuse(maps, volume, method="student-t")
    # the two runs of one source have one name: the table tells them apart
    names = [row["rater"] for row in table_rows(out.raterTable)]
    assert names == [f"{node.GetName()} ({i + 1})" for i, node in enumerate(maps)] and len(set(names)) == 3
    assert out.probabilities[0].GetAttribute(PROBABILITY_MAP_ATTRIBUTE) == "consensus"
    assert probability_maps(slicer.mrmlScene) == [*maps, out.probabilities[0]]
    assert all(node.GetAttribute(PROBABILITY_MAP_ATTRIBUTE) is None for node in out.tau)
    from SegmentationUncertaintyLib import metrics

    frequencies = np.mean([slicer.util.arrayFromVolume(node) for node in maps], axis=0)
    consensus = slicer.util.arrayFromVolume(out.probabilities[0]) > 0.5
    assert metrics.dice(consensus, frequencies >= 0.5) > 0.9


def test_mixture_separates_a_cluster_of_raters(slicer_scene):
    from SegmentationUncertaintyLib.sample_data import load_colin27

    from SegmentationUncertaintyLib import metrics

    case = load_colin27(["Hippocampus_L", "Thalamus_L"]).crop(margin_mm=5.0)
    volume = add_volume(case.image, case.geometry, "Colin27")
    hippocampus, thalamus = case.masks["Hippocampus_L"], case.masks["Thalamus_L"]
    from scipy import ndimage as ndi

    # Two schools: three raters outline the hippocampus, two the thalamus.
    raters = {"h1": hippocampus, "h2": ndi.binary_dilation(hippocampus), "h3": ndi.binary_erosion(hippocampus),
              "t1": thalamus, "t2": ndi.binary_dilation(thalamus)}
    segmentation = add_segmentation(raters, volume, "Two schools")
    out = ConsensusFusionLogic().fuse(segmentation, volume, method="student-t", mixture=True)
    clusters = {row["rater"]: row["cluster"] for row in table_rows(out.raterTable)}
    assert clusters["h1"] == clusters["h2"] == clusters["h3"] != clusters["t1"] == clusters["t2"]
    consensus_ids = segment_ids(out.consensus)
    names = [out.consensus.GetSegmentation().GetSegment(i).GetName() for i in consensus_ids]
    assert names == [f"consensus {m + 1}" for m in range(len(names))] and len(names) >= 2
    assert len(out.probabilities) == len(names) and len(out.tau) == len(raters)
    # Each school's consensus (the segment numbered by its cluster) outlines that school's structure.
    for rater, structure in (("h1", hippocampus), ("t1", thalamus)):
        consensus = segment_mask(out.consensus, consensus_ids[int(clusters[rater]) - 1], volume)
        assert metrics.dice(consensus, structure) > 0.8, rater
    assert "not converged" not in out.summary
    capped = ConsensusFusionLogic().fuse(segmentation, volume, method="student-t", mixture=True, maxIterations=2)
    assert "not converged: stopped after 2 iterations" in capped.summary


def test_output_nodes_are_reused_only_when_passed(hippocampus):
    import slicer

    volume, raters = hippocampus
    logic = ConsensusFusionLogic()
    three = [(raters, segment_id) for segment_id in segment_ids(raters)[:3]]
    first = logic.fuse(three, volume, method="student-t")
    nodes = (first.consensus, list(first.probabilities), list(first.tau), first.raterTable)
    count = slicer.mrmlScene.GetNumberOfNodes()
    second = logic.fuse(three, volume, method="student-t", smoothness=8.0, outputs=first)
    assert second is first
    assert (second.consensus, second.probabilities, second.tau, second.raterTable) == nodes
    assert slicer.mrmlScene.GetNumberOfNodes() == count
    assert second.consensus.GetSegmentation().GetNumberOfSegments() == 1
    third = logic.fuse(three, volume, method="majority", outputs=FusionOutputs(raterTable=first.raterTable))
    assert third.raterTable is first.raterTable and third.consensus is not first.consensus


def test_cancel_removes_the_nodes_it_created(hippocampus):
    import slicer

    volume, raters = hippocampus
    count = slicer.mrmlScene.GetNumberOfNodes()
    for stop_at in (0.5, 0.9, 1.0):  # 1.0: cancelled at the very end, after the nodes were written
        with pytest.raises(FusionCancelled):
            ConsensusFusionLogic().fuse(raters, volume, method="gaussian",
                                        progress=lambda fraction, _m: fraction < stop_at)
        assert slicer.mrmlScene.GetNumberOfNodes() == count


def test_bad_inputs_raise_before_work_and_leave_the_scene(hippocampus):
    import slicer

    volume, raters = hippocampus
    shape = slicer.util.arrayFromVolume(volume).shape
    ids = segment_ids(raters)
    empty = add_segmentation({"nothing": np.zeros(shape, bool)}, volume, "Empty")
    no_segments = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "No segments")
    geometry = geometry_of_volume(volume)
    other_grid = add_volume(np.full((6, 7, 8), 0.5, np.float32), Geometry((1.0, 1.0, 1.0)), "Other grid")
    p = [add_volume(np.full(shape, 0.5, np.float32), geometry, f"p{i}") for i in range(2)]
    too_big = add_volume(np.full(shape, 1.5, np.float32), geometry, "Too big")
    elsewhere = add_volume(np.zeros((8, 8, 8), np.float32), Geometry((1.0, 1.0, 1.0), origin=(900.0, 900.0, 900.0)),
                           "Elsewhere")
    logic = ConsensusFusionLogic()
    count = slicer.mrmlScene.GetNumberOfNodes()
    cases = [
        ({"raters": None}, "a rater is missing"),
        ({"raters": [(raters, ids[0])]}, "at least 2 raters"),
        ({"raters": [(raters, ids[0]), (raters, ids[0])]}, "selected twice"),
        ({"raters": [(raters, "not there"), (raters, ids[0])]}, "has no segment 'not there'"),
        ({"raters": [(None, "x"), (raters, ids[0])]}, "rater segmentation is missing"),
        ({"raters": no_segments}, "has no segment"),
        ({"raters": [raters, empty]}, "rater 'nothing' is empty"),
        ({"imageVolume": elsewhere}, "is empty on the grid of 'Elsewhere'"),  # geometry mismatch
        ({"raters": [raters, p[0]]}, "not both"),
        ({"raters": [p[0], other_grid]}, "not on the grid"),
        ({"raters": [p[0], too_big]}, "outside \\[0, 1\\]"),
        ({"raters": [raters, "text"]}, "neither a segment nor a probability volume"),
        ({"imageVolume": raters}, "must be a vtkMRMLScalarVolumeNode"),
        ({"method": "vote"}, "unknown fusion method"),
        ({"smoothness": -1.0}, "smoothness must be"),
        ({"scale": 0.0}, "scale must be"),
        ({"link": "probit"}, "unknown link 'probit'"),
        ({"device": "tpu"}, "'cpu', 'cuda' or 'auto'"),
        ({"maxIterations": 0}, "maxIterations must be a positive integer"),
        ({"maxIterations": 2.5}, "maxIterations must be a positive integer"),
        ({"method": "staple", "mixture": True}, "needs the Student-t or Gaussian"),
        ({"outputs": FusionOutputs(consensus=raters)}, "is the input node"),
        ({"outputs": FusionOutputs(tau=[volume])}, "is the input node"),
        ({"outputs": FusionOutputs(raterTable=volume)}, "must be a vtkMRMLTableNode"),
        ({"outputs": {"consensus": None}}, "outputs must be a FusionOutputs"),
    ]
    for changes, message in cases:
        arguments = {"raters": raters, "imageVolume": volume, **changes}
        with pytest.raises(ValueError, match=message):
            logic.fuse(**arguments)
        assert slicer.mrmlScene.GetNumberOfNodes() == count, f"{changes} left nodes behind"
