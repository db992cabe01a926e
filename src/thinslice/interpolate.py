"""Interpolation along the slice axis onto the output grid (the baselines)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

ORDERS = {"linear": 1, "cubic": 3}


def interpolation_matrix(n_in: int, r: int, method: str) -> np.ndarray:
    """Weights W of shape ((n_in-1)*r+1, n_in): output slice m = sum_i W[m, i] * slice i.

    `cubic` is cubic B-spline interpolation (mirror boundary), `linear` is linear; both
    pass exactly through the input slices at m = i*r.
    """
    if method not in ORDERS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {sorted(ORDERS)}")
    positions = np.arange((n_in - 1) * r + 1) / r
    eye = np.eye(n_in)
    w = np.empty((positions.size, n_in))
    for i in range(n_in):
        w[:, i] = ndimage.map_coordinates(eye[i], positions[None], order=ORDERS[method], mode="mirror")
    return w


def upsample(data: np.ndarray, axis: int, r: int, method: str = "cubic") -> np.ndarray:
    """Upsample `data` by the integer factor r along `axis`: (n-1)*r+1 slices, float32."""
    w = interpolation_matrix(data.shape[axis], r, method).astype(np.float32)
    moved = np.moveaxis(np.asarray(data, dtype=np.float32), axis, -1)
    return np.moveaxis(moved @ w.T, -1, axis)


def nearest_upsample(data: np.ndarray, axis: int, r: int) -> np.ndarray:
    """`data` on the output grid ((n-1)*r+1 slices along `axis`), each output slice taking the
    nearest input slice: input slice i covers output slices i*r - r/2 .. i*r + r/2."""
    n = data.shape[axis]
    index = np.minimum(np.floor(np.arange((n - 1) * r + 1) / r + 0.5).astype(int), n - 1)
    return np.take(data, index, axis=axis)
