"""The slice model: profile widths, kernels, and the LR grid of a degraded HR volume."""

from __future__ import annotations

import numpy as np
import pytest

from thinslice.degrade import FWHM_PER_SIGMA, blur, box_kernel, degrade


def _fwhm(profile: np.ndarray, spacing: float) -> float:
    """Full width at half maximum of a single-peaked profile, by linear interpolation of the crossings."""
    half = profile.max() / 2.0
    above = np.nonzero(profile >= half)[0]
    lo, hi = above[0], above[-1]
    left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
    return (right - left) * spacing


def test_fwhm_constant():
    assert FWHM_PER_SIGMA == pytest.approx(2.3548, abs=1e-4)


@pytest.mark.parametrize("thickness", [2.0, 3.0, 4.0, 6.5])
@pytest.mark.parametrize("axis", [0, 2])
def test_gaussian_profile_has_fwhm_equal_to_thickness(thickness, axis):
    spacing = 0.05  # fine sampling of the profile, mm
    n = 801
    shape = [3, 3, 3]
    shape[axis] = n
    impulse = np.zeros(shape, dtype=np.float32)
    index = [1, 1, 1]
    index[axis] = n // 2
    impulse[tuple(index)] = 1.0
    out = blur(impulse, axis, "gaussian", thickness, spacing)
    profile = np.moveaxis(out, axis, -1)[1, 1].astype(np.float64)
    assert profile.sum() == pytest.approx(1.0, abs=1e-4)  # preserves intensity
    assert _fwhm(profile, spacing) == pytest.approx(thickness, abs=0.02)
    x = (np.arange(n) - n // 2) * spacing
    sigma = np.sqrt((profile * x**2).sum() / profile.sum())
    assert sigma == pytest.approx(thickness / 2.3548, rel=1e-3)  # analytic sigma = FWHM / 2.3548
    # the neighbouring lines are untouched: the blur acts along the slice axis only
    assert np.moveaxis(out, axis, -1)[0, 1].max() == 0.0


def test_box_kernels_from_the_brief():
    np.testing.assert_allclose(box_kernel(3.0), [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(box_kernel(2.0), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(box_kernel(1.0), [1.0])


@pytest.mark.parametrize("width", [1.0, 2.0, 2.5, 3.0, 4.0, 4.7, 7.2])
def test_box_kernel_sums_to_one_and_has_the_thickness_as_width(width):
    k = box_kernel(width)
    assert k.sum() == pytest.approx(1.0)
    assert len(k) % 2 == 1
    np.testing.assert_allclose(k, k[::-1])  # centred
    assert 1.0 / k.max() == pytest.approx(width)  # a box of height 1/width has width `width`
    assert (k > 0).all() and len(k) <= width + 2


def test_box_profile_in_mm():
    # thickness 4 mm on a 0.5 mm grid: 8 voxels wide
    impulse = np.zeros((1, 1, 41), dtype=np.float32)
    impulse[0, 0, 20] = 1.0
    out = blur(impulse, 2, "box", 4.0, 0.5)[0, 0]
    assert out.sum() == pytest.approx(1.0, abs=1e-6)
    assert out.max() == pytest.approx(1 / 8, abs=1e-6)
    assert np.count_nonzero(out > 1e-9) == 9  # 7 full voxels and two halves
    np.testing.assert_allclose(out[16:25], [1 / 16] + [1 / 8] * 7 + [1 / 16], atol=1e-7)


def test_skip_keeps_values():
    data = np.random.default_rng(2).normal(size=(4, 5, 13)).astype(np.float32)
    np.testing.assert_array_equal(blur(data, 2, "skip", 4.0, 1.0), data)
    np.testing.assert_array_equal(degrade(data, 2, 4, "skip", 4.0, 1.0), data[:, :, ::4])


@pytest.mark.parametrize("model", ["gaussian", "box", "skip"])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("r", [2, 3, 4])
def test_degrade_gives_the_lr_grid(model, axis, r):
    n_lr = 6
    shape = [5, 6, 7]
    shape[axis] = (n_lr - 1) * r + 1
    hr = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    lr = degrade(hr, axis, r, model, thickness_mm=r * 1.0, hr_spacing_mm=1.0)
    expected = list(shape)
    expected[axis] = n_lr
    assert lr.shape == tuple(expected)
    # LR slice i is the blurred HR slice i*r
    np.testing.assert_allclose(lr, np.take(blur(hr, axis, model, r * 1.0, 1.0), np.arange(0, shape[axis], r), axis=axis))


@pytest.mark.parametrize("model", ["gaussian", "box", "skip"])
def test_constant_volume_stays_constant(model):
    hr = np.full((4, 5, 17), 37.25, dtype=np.float32)
    lr = degrade(hr, 2, 4, model, 6.0, 1.0)
    np.testing.assert_allclose(lr, 37.25, rtol=1e-6)


def test_thicker_slices_blur_more(anatomical):
    hr = anatomical[0]
    thin = degrade(hr, 2, 2, "gaussian", 2.0, 2.0)
    thick = degrade(hr, 2, 2, "gaussian", 8.0, 2.0)
    skip = degrade(hr, 2, 2, "skip", 2.0, 2.0)
    err_thin = np.abs(thin - skip).mean()
    err_thick = np.abs(thick - skip).mean()
    assert 0 < err_thin < err_thick


def test_unknown_model():
    with pytest.raises(ValueError, match="triangle"):
        blur(np.zeros((2, 2, 2)), 0, "triangle", 1.0, 1.0)
