"""Offline sample data: each source loads, with the documented array convention and geometry."""

import numpy as np
import pytest

from SegmentationUncertaintyLib import sample_data
from SegmentationUncertaintyLib.sample_data import SampleDataNotInstalledError


def _inside_image(mask):
    """True when the mask does not touch the array border (the structure lies inside the field of view)."""
    border = np.zeros_like(mask)
    border[[0, -1]] = border[:, [0, -1]] = border[:, :, [0, -1]] = True
    return not (mask & border).any()


def test_mni152(mni152):
    assert mni152.image.shape == (189, 233, 197)  # [z, y, x] of 197×233×189 voxels
    assert mni152.spacing == (1.0, 1.0, 1.0)
    assert mni152.image.dtype == np.float32 and 0.0 <= mni152.image.min() < mni152.image.max() <= 1.0
    ventricles = mni152.masks["lateral_ventricles"]
    volume_ml = ventricles.sum() * np.prod(mni152.spacing) / 1000
    assert 8 < volume_ml < 40  # adult lateral ventricles are ~7-30 ml; the template's are ~18 ml
    assert _inside_image(ventricles)
    # CSF is dark on T1: the ventricles are darker than the white matter around them.
    assert mni152.image[ventricles].mean() < 0.6 * mni152.image[mni152.maps["wm"] > 0.9].mean()
    # They straddle the midline (RAS x = 0), one on each side.
    ras = mni152.geometry.ijk_to_ras() @ np.c_[np.argwhere(ventricles)[:, ::-1], np.ones(ventricles.sum())].T
    assert (ras[0] < -5).sum() > 1000 and (ras[0] > 5).sum() > 1000
    for name in ("gm", "wm", "csf"):
        assert mni152.maps[name].shape == mni152.image.shape


def test_mni152_ventricle_raters(mni152):
    from SegmentationUncertaintyLib import metrics

    case = sample_data.load_mni152_ventricle_raters(outlier_rim_mm=3.0, near_mm=3.0)
    assert tuple(case.masks) == sample_data.VENTRICLE_RATERS
    reference = mni152.masks["lateral_ventricles"]
    assert np.array_equal(case.masks["CSF ≥ 0.5"], reference)
    near = sample_data.ndi.distance_transform_edt(~reference, sampling=case.spacing) <= 3.0 + 1e-6
    ras_y = lambda mask: (case.geometry.ijk_to_ras() @ np.c_[np.argwhere(mask)[:, ::-1], np.ones(mask.sum())].T)[1]
    for name, mask in case.masks.items():
        assert not (mask & ~near).any(), name  # every rater outlines the ventricles, nowhere else
        assert metrics.dice(mask, reference) > 0.5, name
    assert len({m.tobytes() for m in case.masks.values()}) == 5  # five different opinions
    assert case.masks["CSF ≥ 0.7"].sum() < reference.sum() < case.masks["CSF ≥ 0.3"].sum()
    extra = case.masks["outlier"] & ~reference  # the outlier's rim lies on the anterior half
    assert extra.sum() > 1000 and ras_y(extra).min() >= np.median(ras_y(reference)) - 1.0


def test_mni152_is_a_fresh_copy_each_call(mni152):
    other = sample_data.load_mni152()
    other.masks["lateral_ventricles"][:] = False
    assert mni152.masks["lateral_ventricles"].any()


def test_colin27_structures(colin27):
    assert colin27.image.shape == (181, 217, 181)
    assert colin27.spacing == (1.0, 1.0, 1.0)
    for name, mask in colin27.masks.items():
        assert 2 < mask.sum() / 1000 < 15, name  # hippocampus and thalamus are a few ml each
        assert _inside_image(mask)
        assert colin27.image[mask].mean() > 0.2  # brain tissue, not background
    # Left is patient left: RAS x < 0.
    centre = np.argwhere(colin27.masks["Hippocampus_L"]).mean(axis=0)
    x_ras = (colin27.geometry.ijk_to_ras() @ np.array([*centre[::-1], 1.0]))[0]
    assert x_ras < -10


def test_crop_keeps_ras_positions(colin27):
    crop = colin27.crop(margin_mm=5.0, structures=["Hippocampus_L"])
    assert crop.image.size < colin27.image.size / 20
    assert crop.masks["Hippocampus_L"].sum() == colin27.masks["Hippocampus_L"].sum()
    full = colin27.geometry.ijk_to_ras() @ np.array([*np.argwhere(colin27.masks["Hippocampus_L"])[0][::-1], 1.0])
    cropped = crop.geometry.ijk_to_ras() @ np.array([*np.argwhere(crop.masks["Hippocampus_L"])[0][::-1], 1.0])
    np.testing.assert_allclose(full, cropped)


def test_unknown_aal_structure_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown AAL structure"):
        sample_data.load_colin27(("Hipocampus_L",))


def test_lidc_nodules():
    nodules = sample_data.load_lidc_nodules(min_diameter_mm=10.0, min_raters=3, limit=6)
    assert len(nodules) == 6
    for nodule in nodules:
        assert nodule.diameter_mm >= 10.0 and len(nodule.masks) >= 3
        assert len({m.shape for m in nodule.masks}) == 1
        dz, dy, dx = nodule.geometry.spacing
        assert dy == dx and 0.4 < dx < 1.0 and 0.5 <= dz <= 5.0
        # DICOM's axial axes: columns to the patient's left, rows to posterior, slices (sorted by z) upwards
        assert np.array_equal(nodule.geometry.directions, np.diag([-1.0, -1.0, 1.0]))
        for mask in nodule.masks:
            assert mask.dtype == bool and mask.any() and _inside_image(mask)
        # Raters outline the same nodule: their masks overlap.
        assert np.logical_and.reduce(nodule.masks).sum() > 0


def test_missing_source_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sample_data, "MRICRON_TEMPLATES", str(tmp_path))
    with pytest.raises(SampleDataNotInstalledError, match="apt-get install mricron-data"):
        sample_data.load_colin27()
