"""Resampling in world coordinates: one volume sampled at the voxels of another grid, whatever
their orientations, spacings and extents (ground truths against outputs, a peer's output
onto thinslice's grid, figures in RAS order)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .volume import Volume


def resample_to(vol: Volume, reference: Volume, order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Sample `vol` at the world positions of `reference`'s voxels.

    Returns (values on the reference grid, boolean mask of reference voxels that fall
    inside `vol`'s field of view). Identical grids are passed through untouched.
    """
    if vol.shape == reference.shape and np.allclose(vol.affine, reference.affine, atol=1e-5):
        return vol.data, np.ones(reference.shape, dtype=bool)
    # reference index -> world -> vol index
    m = np.linalg.inv(vol.affine) @ reference.affine
    grid = np.indices(reference.shape, dtype=np.float64).reshape(3, -1)
    idx = m[:3, :3] @ grid + m[:3, 3:4]
    tol = 1e-3
    inside = np.all((idx >= -tol) & (idx <= np.array(vol.shape)[:, None] - 1 + tol), axis=0)
    values = ndimage.map_coordinates(vol.data, idx, order=order, mode="nearest")
    return values.reshape(reference.shape).astype(np.float32), inside.reshape(reference.shape)


def on_grid(vol: Volume, shape, affine, order: int = 1, outside: float = 0.0) -> tuple[Volume, np.ndarray]:
    """`vol` sampled on the grid (shape, affine), `outside` beyond its field of view, and the
    mask of the grid's voxels inside that field of view."""
    values, inside = resample_to(vol, Volume(np.zeros(shape, np.float32), affine), order=order)
    return Volume(np.where(inside, values, outside), affine), inside
