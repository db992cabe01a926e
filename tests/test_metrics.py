"""Quality metrics: hand-computed PSNR/SSIM, world-coordinate comparison, no-reference checks."""

from __future__ import annotations

import numpy as np
import pytest

from thinslice.degrade import degrade
from thinslice.interpolate import upsample
from thinslice.metrics import compare, periodic_artifact, phase_energy, psnr, ssim, through_plane_sharpness
from thinslice.resample import resample_to
from thinslice.volume import Volume


def test_psnr_hand_computed():
    truth = np.random.default_rng(0).uniform(0, 10, size=(6, 6, 6))
    mask = np.zeros(truth.shape, bool)
    mask[1:4] = True
    assert psnr(truth + 1.0, truth, mask, peak=10.0) == pytest.approx(20.0)
    assert psnr(truth + 0.1, truth, mask, peak=10.0) == pytest.approx(40.0)
    # only the mask counts: errors outside it change nothing
    pred = truth + 1.0
    pred[~mask] += 50.0
    assert psnr(pred, truth, mask, peak=10.0) == pytest.approx(20.0)
    # default peak is the ground-truth max
    t = np.zeros((4, 4, 4))
    t[0, 0, 0] = 100.0
    assert psnr(t + 2.0, t) == pytest.approx(10 * np.log10(100.0**2 / 4.0))
    assert psnr(truth, truth) == float("inf")


def test_ssim_hand_computed_constants():
    """Constant images: SSIM is the luminance term (2*a*b + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2."""
    truth = np.full((9, 9, 9), 10.0)
    pred = np.full((9, 9, 9), 5.0)
    c1 = (0.01 * 10.0) ** 2
    expected = (2 * 5.0 * 10.0 + c1) / (5.0**2 + 10.0**2 + c1)
    mean, masked = ssim(pred, truth, truth > 0, data_range=10.0)
    assert mean == pytest.approx(expected, rel=1e-9)
    assert masked == pytest.approx(expected, rel=1e-9)


def test_ssim_identical_is_one_and_noise_lowers_it(anatomical):
    truth = anatomical[0][:16, :16, :12].astype(np.float64)
    mean, masked = ssim(truth, truth, truth > 20)
    assert mean == pytest.approx(1.0) and masked == pytest.approx(1.0)
    noisy = truth + np.random.default_rng(1).normal(scale=0.05 * truth.max(), size=truth.shape)
    m1, _ = ssim(noisy, truth)
    noisier = truth + np.random.default_rng(1).normal(scale=0.2 * truth.max(), size=truth.shape)
    m2, _ = ssim(noisier, truth)
    assert 0 < m2 < m1 < 1


def test_ssim_masked_mean_is_over_the_mask():
    truth = np.full((9, 9, 18), 10.0)
    pred = truth.copy()
    pred[:, :, 9:] = 5.0  # right half wrong
    mask = np.zeros(truth.shape, bool)
    mask[:, :, :2] = True  # far from the wrong half (window 7)
    _, masked = ssim(pred, truth, mask, data_range=10.0)
    assert masked == pytest.approx(1.0)


def test_resample_to_identical_grid_passes_through():
    data = np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    vol = Volume(data, aff)
    values, inside = resample_to(vol, Volume(np.zeros_like(data), aff.copy()))
    np.testing.assert_array_equal(values, data)
    assert inside.all()


def test_resample_to_shifted_grid_and_field_of_view():
    data = np.random.default_rng(3).normal(size=(8, 8, 8)).astype(np.float32)
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = [10.0, -4.0, 7.0]
    ref_aff = aff.copy()
    ref_aff[:3, 3] += aff[:3, :3] @ [2, 3, 1]  # the reference starts at voxel (2, 3, 1) of `vol`
    values, inside = resample_to(Volume(data, aff), Volume(np.zeros((8, 8, 8)), ref_aff))
    np.testing.assert_allclose(values[:6, :5, :7], data[2:, 3:, 1:], atol=1e-4)
    assert inside[:6, :5, :7].all()
    assert not inside[6:].any() and not inside[:, 5:].any() and not inside[:, :, 7:].any()


def _pair(anatomical):
    """(prediction, truth) volumes on one grid: cubic from a x2 degraded real T1."""
    truth, aff = anatomical
    truth = truth[:, :, :25]
    lr = degrade(truth, 2, 2, "gaussian", 4.0, 2.0)
    pred = upsample(lr, 2, 2, "cubic")
    return Volume(pred, aff), Volume(truth, aff)


def test_compare_is_in_world_coordinates_flip(anatomical):
    pred, truth = _pair(anatomical)
    aligned = compare(pred, truth)
    assert 20 < aligned["psnr"] < 60 and 0.5 < aligned["ssim"] < 1
    # the same truth stored flipped along axis 0, with the affine adjusted
    flip = np.eye(4)
    flip[0, 0] = -1
    flip[0, 3] = truth.shape[0] - 1
    flipped = Volume(truth.data[::-1].copy(), truth.affine @ flip)
    np.testing.assert_allclose(flipped.world([0, 0, 0]), truth.world([truth.shape[0] - 1, 0, 0]))
    got = compare(pred, flipped)
    for key in ("psnr", "ssim", "ssim_fg"):
        assert got[key] == pytest.approx(aligned[key], rel=1e-4), key
    assert got["n_voxels"] == aligned["n_voxels"]
    # flipping the data WITHOUT adjusting the affine is a different image: the numbers drop
    wrong = compare(pred, Volume(truth.data[::-1].copy(), truth.affine))
    assert wrong["psnr"] < aligned["psnr"] - 3


def test_compare_is_in_world_coordinates_permutation(anatomical):
    pred, truth = _pair(anatomical)
    aligned = compare(pred, truth)
    order = (2, 0, 1)
    perm = np.eye(4)
    perm[:3, :3] = np.eye(3)[:, order]  # new index axis k is old axis order[k]
    permuted = Volume(np.transpose(truth.data, order).copy(), truth.affine @ perm)
    np.testing.assert_allclose(permuted.world([3, 5, 7]), truth.world([5, 7, 3]))
    got = compare(pred, permuted)
    for key in ("psnr", "ssim", "ssim_fg"):
        assert got[key] == pytest.approx(aligned[key], rel=1e-4), key


def test_compare_on_a_larger_prediction_uses_the_overlap(anatomical):
    pred, truth = _pair(anatomical)
    aligned = compare(pred, truth)
    # the truth covers only part of the prediction's field of view
    crop = (slice(3, 30), slice(5, 36), slice(None))
    aff = truth.affine.copy()
    aff[:3, 3] = truth.world([3, 5, 0])
    cropped = Volume(truth.data[crop], aff)
    got = compare(pred, cropped)
    expected = compare(Volume(pred.data[crop], aff), cropped)
    assert got["psnr"] == pytest.approx(expected["psnr"], rel=1e-4)
    assert got["psnr"] != pytest.approx(aligned["psnr"], rel=1e-6)


def test_compare_scores_the_same_at_any_intensity_scale(anatomical):
    """The foreground is relative to the truth's range: a truth in [0, 1] is scored like one in [0, 255]."""
    pred, truth = _pair(anatomical)
    top = truth.data.max()
    raw = compare(pred, truth)
    scaled = compare(Volume(pred.data / top, pred.affine), Volume(truth.data / top, truth.affine))
    assert 0 < raw["n_voxels"] == scaled["n_voxels"] < truth.data.size
    assert scaled["psnr"] == pytest.approx(raw["psnr"], abs=1e-3)
    assert scaled["ssim_fg"] == pytest.approx(raw["ssim_fg"], abs=1e-3)


def test_sharpness_higher_for_sharper_ramp():
    x = np.arange(40, dtype=np.float64)
    shallow = np.broadcast_to(0.5 * x, (4, 4, 40))
    steep = np.broadcast_to(2.0 * x, (4, 4, 40))
    assert through_plane_sharpness(shallow, 2) == pytest.approx(0.5)
    assert through_plane_sharpness(steep, 2) == pytest.approx(2.0)
    # an edge: the sharp step has a higher mean |difference| in a window around it than a soft ramp
    soft = np.clip((x - 20) / 8 + 0.5, 0, 1)
    hard = (x >= 20).astype(float)
    mask = np.zeros((4, 4, 40), bool)
    mask[:, :, 19:21] = True
    s_soft = through_plane_sharpness(np.broadcast_to(soft, (4, 4, 40)), 2, mask)
    s_hard = through_plane_sharpness(np.broadcast_to(hard, (4, 4, 40)), 2, mask)
    assert s_hard == pytest.approx(0.5) and s_soft == pytest.approx(1 / 8)


def test_sharpness_is_along_the_given_axis_and_drops_with_blur(anatomical):
    data = anatomical[0]
    blurred = degrade(data, 2, 1, "gaussian", 6.0, 2.0)
    assert through_plane_sharpness(blurred, 2) < 0.8 * through_plane_sharpness(data, 2)
    # blurring along axis 2 barely changes the sharpness along axis 0
    ratio0 = through_plane_sharpness(blurred, 0) / through_plane_sharpness(data, 0)
    ratio2 = through_plane_sharpness(blurred, 2) / through_plane_sharpness(data, 2)
    assert ratio2 < ratio0


def test_periodic_artifact_is_one_without_a_pattern_and_high_with_one(anatomical):
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(anatomical[0], dtype=np.float64), 1.5)  # a real scan, smoothed
    rng = np.random.default_rng(0)
    for r in (2, 3, 4):
        assert periodic_artifact(smooth, 2, r) == pytest.approx(1.0, abs=0.1)
        noisy = smooth.copy()
        noisy[:, :, ::r] += rng.normal(0, 0.02 * smooth.max(), noisy[:, :, ::r].shape)
        assert periodic_artifact(noisy, 2, r) > 2.0
        energy = phase_energy(noisy, 2, r)
        assert energy.shape == (r,) and energy.argmax() == 0              # the noisy phase is phase 0
        assert periodic_artifact(noisy, 0, r) < 1.2                        # read along the given axis only
        # inside the mask only: noise outside it does not count
        mask = np.zeros(smooth.shape, bool)
        mask[:12] = True   # a margin of 3 voxels: the high-pass reaches 1 voxel or so
        outside = smooth.copy()
        outside[15:, :, ::r] = noisy[15:, :, ::r]
        assert periodic_artifact(outside, 2, r, mask) == pytest.approx(periodic_artifact(smooth, 2, r, mask), rel=1e-4)
    assert periodic_artifact(smooth, 2, 1) == 1.0


@pytest.mark.parametrize("ratio", [1.5, 2.5])
def test_periodic_artifact_at_a_non_integer_ratio_groups_slices_by_where_they_lie(anatomical, ratio):
    from scipy import ndimage

    from thinslice.metrics import slice_phases

    smooth = ndimage.gaussian_filter(np.asarray(anatomical[0], dtype=np.float64), 1.5)
    assert periodic_artifact(smooth, 2, ratio) == pytest.approx(1.0, abs=0.2)   # phase 0: 1 slice in 5 or 3
    on_real = np.flatnonzero(np.mod(np.arange(smooth.shape[2]) / ratio, 1.0) < 1e-9)  # output slices on real ones
    assert set(np.flatnonzero(slice_phases(smooth.shape[2], ratio) == 0)) == set(on_real)
    noisy = smooth.copy()
    noisy[:, :, on_real] += np.random.default_rng(1).normal(0, 0.02 * smooth.max(), noisy[:, :, on_real].shape)
    assert periodic_artifact(noisy, 2, ratio) > 2.0 and phase_energy(noisy, 2, ratio).argmax() == 0
