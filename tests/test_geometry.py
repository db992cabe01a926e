"""Slice geometry: slice axis, factor, the output grid convention, the geometry record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import oblique_affine

from thinslice.errors import ThinsliceError
from thinslice.geometry import (Geometry, describe, detect_slice_axis, lr_affine, output_affine,
                                output_positions, output_shape, resolve_ratio, working_factor)
from thinslice.volume import Volume


def _world(affine, index):
    return np.asarray(index, float) @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("spacing, axis", [((1, 1, 4), 2), ((0.6, 3.0, 0.6), 1), ((5, 1, 1), 0),
                                            ((0.625, 0.625, 4.0001), 2)])
def test_detect_slice_axis_is_largest_spacing(spacing, axis):
    assert detect_slice_axis(spacing) == axis


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 3.0, 3.0 + 1e-9), (0.7, 3.0, 2.98)])
def test_a_tie_for_the_largest_spacing_is_an_error(spacing):
    with pytest.raises(ThinsliceError, match="slice axis is ambiguous; name it"):
        detect_slice_axis(spacing, "scan.nii.gz")


def test_resolve_ratio_explicit_factor():
    assert resolve_ratio(4.0, factor=4) == 4
    assert resolve_ratio(4.0, factor=3) == 3
    with pytest.raises(ThinsliceError, match="integer >= 2"):
        resolve_ratio(4.0, factor=1, source="scan.nii")


def test_resolve_ratio_from_target_spacing_tolerates_header_noise():
    for spacing, target, r in [(4.0002, 1.0, 4), (3.0, 1.5, 2), (0.6 * 3, 0.6, 3)]:
        ratio = resolve_ratio(spacing, target_spacing_mm=target)
        assert ratio == r and isinstance(ratio, int)


@pytest.mark.parametrize("spacing, target, ratio, factor", [(3.3, 1.0, 3.3, 4), (5.0, 2.0, 2.5, 3), (3.0, 2.0, 1.5, 2),
                                                            (2.0, 0.75, 2.0 / 0.75, 3)])
def test_any_target_spacing_gives_a_ratio_and_the_integer_factor_above_it(spacing, target, ratio, factor):
    got = resolve_ratio(spacing, target_spacing_mm=target)
    assert isinstance(got, float) and got == pytest.approx(ratio)
    assert working_factor(got) == factor


@pytest.mark.parametrize("spacing, target", [(3.0, 3.0), (3.0, 4.0), (3.0, 2.98)])
def test_a_target_spacing_not_finer_than_the_slices_is_a_clear_error(spacing, target):
    with pytest.raises(ThinsliceError) as err:
        resolve_ratio(spacing, target_spacing_mm=target, source="subj01.nii.gz")
    msg = str(err.value)
    assert msg.startswith("subj01.nii.gz:") and "not finer than the slice spacing" in msg and "\n" not in msg


def test_the_output_grid_of_a_non_integer_ratio_starts_on_the_first_and_ends_by_the_last_real_slice():
    # 5 mm slices to 2 mm: 37 real slices span 180 mm, so 91 output slices at 0, 2, ..., 180 mm
    assert output_shape((10, 12, 37), 2, 2.5) == (10, 12, 91)
    np.testing.assert_allclose(output_positions(37, 2.5) * 5.0, np.arange(91) * 2.0)
    # 3 mm to 2 mm: 10 real slices span 27 mm: output at 0, 2, ..., 26 mm (14 slices)
    assert output_shape((10,), 0, 1.5) == (14,)
    aff = np.diag([0.9, 0.9, 5.0, 1.0])
    aff[:3, 3] = [-10, 20, 30]
    out = output_affine(aff, 2, 2.5)
    np.testing.assert_allclose(out @ [0, 0, 5, 1], aff @ [0, 0, 2, 1])   # output slice 5 on real slice 2
    np.testing.assert_allclose(np.linalg.norm(out[:3, 2]), 2.0)


def test_output_shape():
    assert output_shape((33, 41, 25), 2, 4) == (33, 41, 97)
    assert output_shape((33, 41, 25), 0, 3) == (97, 41, 25)
    assert output_shape((10, 2, 7), 1, 2) == (10, 3, 7)


@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_affine_puts_lr_slice_i_at_output_slice_i_times_r(axis, r):
    """For an oblique affine, output voxel (.., i*r, ..) sits where input voxel (.., i, ..) does."""
    spacing = [0.7, 0.9, 1.3]
    spacing[axis] = 4.0
    aff = oblique_affine(spacing=spacing)
    out = output_affine(aff, axis, r)
    rng = np.random.default_rng(axis * 10 + r)
    lr_index = rng.integers(0, 20, size=(50, 3)).astype(float)
    hr_index = lr_index.copy()
    hr_index[:, axis] *= r
    if r in (2, 4):  # division by a power of two is exact in floating point
        np.testing.assert_array_equal(_world(out, hr_index), _world(aff, lr_index))
    else:
        np.testing.assert_allclose(_world(out, hr_index), _world(aff, lr_index), rtol=0, atol=1e-12)
    # same origin, other columns untouched, slice column shrunk by r
    np.testing.assert_array_equal(out[:3, 3], aff[:3, 3])
    for a in range(3):
        if a != axis:
            np.testing.assert_array_equal(out[:, a], aff[:, a])
    np.testing.assert_allclose(np.linalg.norm(out[:3, axis]), 4.0 / r)
    np.testing.assert_array_equal(out[3], [0, 0, 0, 1])
    # in-between output slices lie on the segment between LR slices
    mid = lr_index[:1].copy()
    mid_hr = mid.copy()
    mid_hr[0, axis] = mid[0, axis] * r + 1
    step = _world(aff, mid + np.eye(3)[axis]) - _world(aff, mid)
    np.testing.assert_allclose(_world(out, mid_hr), _world(aff, mid) + step / r, atol=1e-12)
    # lr_affine is the inverse
    np.testing.assert_allclose(lr_affine(out, axis, r), aff, atol=1e-12)


def test_output_grid_last_slice_is_last_lr_slice():
    aff = oblique_affine()
    shape = (12, 9, 7)
    out_shape = output_shape(shape, 2, 4)
    out = output_affine(aff, 2, 4)
    np.testing.assert_allclose(Volume(np.zeros(out_shape), out).world([0, 0, out_shape[2] - 1]),
                               Volume(np.zeros(shape), aff).world([0, 0, shape[2] - 1]), atol=1e-12)


def _geometry(**kw) -> Geometry:
    d = dict(slice_axis=2, spacing_mm=4.0, thickness_mm=3.0, gap_mm=1.0, factor=4, in_plane_mm=(0.625, 0.625),
             shape=(256, 256, 24), orientation="LPS", norm_low=12.5, norm_high=812.0)
    d.update(kw)
    return Geometry(**d)


def test_geometry_save_load_round_trip(tmp_path):
    g = _geometry()
    path = tmp_path / "sub" / "g.json"
    g.save(path)
    assert json.loads(path.read_text())["factor"] == 4
    back = Geometry.load(path)
    assert back == g
    assert isinstance(back.shape, tuple) and isinstance(back.in_plane_mm, tuple)
    assert back.target_spacing_mm == pytest.approx(1.0) and back.ratio == 4 and back.on_working_grid
    assert [p.name for p in path.parent.iterdir()] == ["g.json"]  # no temporary file left


def test_a_non_integer_geometry_keeps_its_output_spacing(tmp_path):
    aff = np.diag([0.5, 0.5, 5.0, 1.0])
    g = describe(aff, (20, 20, 12), None, None, None, 2.0, (0.0, 1.0), "scan")
    assert (g.factor, g.ratio, g.target_spacing_mm, g.work_spacing_mm) == (3, 2.5, 2.0, pytest.approx(5 / 3))
    assert not g.on_working_grid
    g.save(tmp_path / "g.json")
    assert Geometry.load(tmp_path / "g.json") == g


def test_the_recorded_intensity_scale_normalizes_and_back():
    scale = _geometry().intensity
    x = np.random.default_rng(0).uniform(-100, 2000, size=(5, 6, 7)).astype(np.float32)
    y = scale.normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(scale.normalize(np.array([12.5, 812.0])), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(scale.denormalize(y), x, rtol=1e-5, atol=1e-3)


def test_describe_records_acquisition():
    aff = oblique_affine(spacing=(0.7, 0.9, 4.0))
    g = describe(aff, (40, 30, 12), None, 3.0, None, 1.0, (0.0, 1.0), source="x.nii")
    assert (g.slice_axis, g.factor) == (2, 4)
    assert g.spacing_mm == pytest.approx(4.0)
    assert g.thickness_mm == 3.0 and g.gap_mm == pytest.approx(1.0)
    assert g.in_plane_mm == pytest.approx((0.7, 0.9))
    assert g.shape == (40, 30, 12)
    g = describe(aff, (40, 30, 12), None, 5.0, 2, None, (0.0, 1.0), source="x.nii")
    assert g.gap_mm == 0.0  # overlapping slices: no gap
    g = describe(aff, (40, 30, 12), None, None, 2, None, (0.0, 1.0), source="x.nii")
    assert g.thickness_mm == pytest.approx(4.0)  # thickness defaults to the spacing
    g = describe(aff, (40, 30, 12), 0, None, 2, None, (0.0, 1.0), source="x.nii")
    assert g.slice_axis == 0 and g.spacing_mm == pytest.approx(0.7)


def test_describe_needs_two_slices():
    with pytest.raises(ThinsliceError, match="x.nii"):
        describe(np.diag([1, 1, 4, 1.0]), (10, 10, 1), 2, None, 2, None, (0, 1), source="x.nii")


@pytest.mark.parametrize("axis, ratio", [(2, 4), (0, 2.5)])
def test_a_refined_volume_holds_each_slice_at_index_i_times_ratio(axis, ratio):
    vol = Volume(np.zeros((6, 7, 5), np.float32), oblique_affine(spacing=(0.7, 0.9, 4.0)))
    fine = vol.refined(np.zeros(output_shape(vol.shape, axis, ratio), np.float32), axis, ratio)
    for i in range(vol.shape[axis]):
        index = np.zeros(3)
        index[axis] = i
        np.testing.assert_allclose(fine.world(index * np.where(np.arange(3) == axis, ratio, 1)), vol.world(index),
                                   atol=1e-9)
    if float(ratio).is_integer():
        np.testing.assert_allclose(fine.coarsened(vol.data, axis, int(ratio)).affine, vol.affine, atol=1e-12)
