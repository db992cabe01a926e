"""The interpolation baselines along the slice axis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from thinslice.interpolate import Upsampled, interpolation_matrix, upsample


def _take(a, axis, index):
    sl = [slice(None)] * a.ndim
    sl[axis] = index
    return a[tuple(sl)]


@pytest.mark.parametrize("method", ["linear", "cubic"])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("r", [2, 3, 4])
def test_passes_through_input_slices(method, axis, r):
    data = np.random.default_rng(1).normal(size=(7, 8, 9)).astype(np.float32) * 100
    out = upsample(data, axis, r, method)
    expected_shape = list(data.shape)
    expected_shape[axis] = (data.shape[axis] - 1) * r + 1
    assert out.shape == tuple(expected_shape)
    assert out.dtype == np.float32
    np.testing.assert_allclose(_take(out, axis, slice(None, None, r)), data, atol=1e-3)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cubic_is_scipy_cubic_bspline_on_the_volume(axis, anatomical):
    data = anatomical[0][:20, :22, :16]
    r = 3
    out = upsample(data, axis, r, "cubic")
    coords = np.indices(out.shape, dtype=np.float64)
    coords[axis] /= r
    ref = ndimage.map_coordinates(data.astype(np.float64), coords, order=3, mode="mirror")
    span = float(data.max() - data.min())
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * span)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_linear_of_a_ramp_is_exact(axis):
    shape = [5, 6, 7]
    n = shape[axis]
    ramp = 3.5 * np.arange(n) - 2.0
    data = np.broadcast_to(np.expand_dims(ramp, [a for a in range(3) if a != axis]), shape).astype(np.float32)
    r = 4
    out = upsample(data, axis, r, "linear")
    expected = 3.5 * np.arange((n - 1) * r + 1) / r - 2.0
    for line in np.moveaxis(out, axis, -1).reshape(-1, out.shape[axis]):
        np.testing.assert_allclose(line, expected, atol=1e-5)


def test_linear_between_two_slices_is_the_weighted_mean():
    data = np.stack([np.zeros((3, 3)), np.full((3, 3), 8.0)], axis=2)
    out = upsample(data, 2, 4, "linear")
    np.testing.assert_allclose(out[1, 1], [0, 2, 4, 6, 8], atol=1e-6)


def test_cubic_differs_from_linear_on_curved_data():
    x = np.arange(31, dtype=np.float32) ** 2
    data = np.broadcast_to(x, (3, 3, 31))
    lin = upsample(data, 2, 2, "linear")[1, 1]
    cub = upsample(data, 2, 2, "cubic")[1, 1]
    truth = (np.arange(61) / 2) ** 2
    inner = slice(20, 41)  # away from the mirror boundary
    assert np.abs(cub[inner] - truth[inner]).max() < 0.1 * np.abs(lin[inner] - truth[inner]).max()


def test_interpolation_matrix_rows_sum_to_one():
    for method in ("linear", "cubic"):
        w = interpolation_matrix(6, 4, method)
        assert w.shape == (21, 6)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)
        np.testing.assert_allclose(w[::4], np.eye(6), atol=1e-9)


def test_unknown_method():
    with pytest.raises(ValueError, match="nearest"):
        upsample(np.zeros((2, 2, 2)), 0, 2, "nearest")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_upsampled_windows_are_upsample_s(axis, anatomical):
    # what training reads of a pair's input: windows, flipped ones, single planes
    volume = anatomical[0][:40, :44, :36]
    lr = np.take(volume, np.arange(0, volume.shape[axis], 4), axis=axis)
    lazy, whole = Upsampled(lr, axis, 4), upsample(lr, axis, 4)
    assert lazy.shape == whole.shape and lazy.size == whole.size
    np.testing.assert_array_equal(np.asarray(lazy), whole)
    rng = np.random.default_rng(axis)
    for _ in range(50):
        index = []
        for n in whole.shape:
            s = int(rng.integers(0, n - 8))
            index.append([int(s), slice(s, s + 8), slice(s + 8, s, -1), slice(s + 7, s - 1 if s else None, -1)]
                         [int(rng.integers(0, 4))])
        np.testing.assert_allclose(lazy[tuple(index)], whole[tuple(index)], rtol=1e-6, atol=1e-6 * np.abs(whole).max())
    np.testing.assert_allclose(lazy[:, ::2], whole[:, ::2], rtol=1e-6, atol=1e-6 * np.abs(whole).max())
    with pytest.raises(TypeError):
        lazy[[0, 1]]
