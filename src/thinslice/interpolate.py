"""Interpolation along the slice axis onto the output grid (the baselines), and the
resampling of the learned methods' working grid onto the output grid."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from .geometry import output_positions

ORDERS = {"linear": 1, "cubic": 3}


def interpolation_matrix(n_in: int, ratio: float, method: str) -> np.ndarray:
    """Weights W of shape (n_out, n_in): output slice m = sum_i W[m, i] * slice i, on the
    output grid of `ratio`.

    `cubic` is cubic B-spline interpolation (mirror boundary), `linear` is linear; both
    pass exactly through the input slices.
    """
    return matrix_at(n_in, output_positions(n_in, ratio), method)


def matrix_at(n_in: int, positions: np.ndarray, method: str) -> np.ndarray:
    """Interpolation weights (len(positions), n_in) at `positions`, in input slice indices."""
    if method not in ORDERS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {sorted(ORDERS)}")
    positions = np.asarray(positions, dtype=np.float64)
    eye = np.eye(n_in)
    w = np.empty((positions.size, n_in))
    for i in range(n_in):
        w[:, i] = ndimage.map_coordinates(eye[i], positions[None], order=ORDERS[method], mode="mirror")
    return w


def _along(data: np.ndarray, axis: int, w: np.ndarray) -> np.ndarray:
    moved = np.moveaxis(np.asarray(data, dtype=np.float32), axis, -1)
    return np.moveaxis(moved @ w.astype(np.float32).T, -1, axis)


def upsample(data: np.ndarray, axis: int, ratio: float, method: str = "cubic") -> np.ndarray:
    """`data` interpolated along `axis` onto the output grid of `ratio` (floor((n-1)*ratio)+1
    slices; (n-1)*r+1 for an integer r), float32."""
    return _along(data, axis, interpolation_matrix(data.shape[axis], ratio, method))


@functools.lru_cache(maxsize=None)
def _upsampling_weights(n: int, r: int) -> np.ndarray:
    """The float32 cubic upsampling matrix, one read-only copy for all the volumes of n slices (a
    cohort's pairs would otherwise hold one each)."""
    w = interpolation_matrix(n, r, "cubic").astype(np.float32)
    w.flags.writeable = False
    return w


class Upsampled:
    """upsample(slices, axis, r) computed where it is read: it holds the slices, 1/r of the
    upsampled volume, and computes each window from them. Training pairs' inputs are such
    volumes: each takes 1/r of the memory and disk of its array.

    Index it with up to three slices or integers (basic indexing, as training's windows);
    np.asarray(it) is the whole upsampled volume, equal to upsample()'s.
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, slices: np.ndarray, axis: int, r: int):
        self.slices = np.asanyarray(slices, dtype=np.float32)     # a memory map stays one
        self.axis, self.factor = int(axis), int(r)
        self.weights = _upsampling_weights(self.slices.shape[axis], int(r))
        shape = list(self.slices.shape)
        shape[axis] = len(self.weights)
        self.shape = tuple(shape)
        self.size = int(np.prod(shape))

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > 3 or not all(isinstance(i, (slice, int, np.integer)) for i in index):
            raise TypeError("Upsampled takes up to three slices or integers")
        index = index + (slice(None),) * (3 - len(index))
        rows = np.atleast_2d(self.weights[index[self.axis]])
        whole = list(index)
        whole[self.axis] = slice(None)
        dropped = sum(not isinstance(i, slice) for i in index[:self.axis])   # integer indices before the axis
        out = _along(self.slices[tuple(whole)], self.axis - dropped, rows)
        return out if isinstance(index[self.axis], slice) else np.take(out, 0, axis=self.axis - dropped)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[(slice(None),) * 3]
        return whole if dtype is None else whole.astype(dtype)


def working_to_output(data: np.ndarray, axis: int, factor: int, ratio: float, method: str = "cubic") -> np.ndarray:
    """A volume on the working grid of the integer `factor` sampled (cubic B-spline) at the
    slices of the output grid of `ratio`; unchanged when the two grids are one."""
    if ratio == factor:
        return data
    n_lr = (data.shape[axis] - 1) // factor + 1
    positions = output_positions(n_lr, ratio) * factor
    return _along(data, axis, matrix_at(data.shape[axis], positions, method))


def nearest_upsample(data: np.ndarray, axis: int, ratio: float) -> np.ndarray:
    """`data` on the output grid of `ratio` along `axis`, each output slice taking the
    nearest input slice (input slice i covers positions i - 1/2 .. i + 1/2)."""
    n = data.shape[axis]
    index = np.minimum(np.floor(output_positions(n, ratio) + 0.5).astype(int), n - 1)
    return np.take(data, index, axis=axis)
