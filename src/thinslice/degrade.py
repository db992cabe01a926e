"""The acquisition's slice model: blur along the slice axis, then keep every r-th slice.

Slice models (thickness t in mm, HR spacing h in mm along the slice axis):
- gaussian: Gaussian profile with FWHM = t;
- box:      uniform profile of width t (partial voxels weighted by overlap);
- skip:     no blur, every r-th slice only.
The gap between slices (spacing - thickness) needs no term of its own: sampling every
r-th slice of a profile narrower than the spacing leaves it out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .settings import SLICE_MODELS

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def box_kernel(width_vox: float) -> np.ndarray:
    """Discrete box of `width_vox` voxels: weight = overlap of each voxel with the box."""
    half = width_vox / 2.0
    n = int(np.ceil(half - 0.5))
    d = np.arange(-n, n + 1, dtype=np.float64)
    w = np.clip(np.minimum(d + 0.5, half) - np.maximum(d - 0.5, -half), 0.0, None)
    return w / w.sum()


def blur(data: np.ndarray, axis: int, model: str, thickness_mm: float, spacing_mm: float) -> np.ndarray:
    """Apply the slice profile along `axis` of an array sampled every `spacing_mm`."""
    if model not in SLICE_MODELS:
        raise ValueError(f"unknown slice model {model!r}; choose one of {SLICE_MODELS}")
    data = np.asarray(data, dtype=np.float32)
    if model == "skip":
        return data.copy()
    width = thickness_mm / spacing_mm
    if model == "gaussian":
        return ndimage.gaussian_filter1d(data, width / FWHM_PER_SIGMA, axis=axis, mode="nearest")
    return ndimage.convolve1d(data, box_kernel(width).astype(np.float32), axis=axis, mode="nearest")


def degrade(hr: np.ndarray, axis: int, r: int, model: str, thickness_mm: float,
            hr_spacing_mm: float) -> np.ndarray:
    """Simulate the LR acquisition of an HR array: blur, then slices 0, r, 2r, ...

    hr: (..., n, ...) with n along `axis`; returns (n-1)//r+1 slices along `axis`, which
    is exactly the LR grid when n = (n_lr-1)*r+1 (the output grid convention).
    """
    blurred = blur(hr, axis, model, thickness_mm, hr_spacing_mm)
    index = [slice(None)] * blurred.ndim
    index[axis] = slice(0, None, r)
    return np.ascontiguousarray(blurred[tuple(index)])
