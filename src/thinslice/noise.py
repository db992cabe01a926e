"""A scan's noise level, noise that makes simulated thick slices as noisy as real ones, and
the scan without its noise for the targets of its self pairs.

A real thick slice is the tissue integrated over the slice profile *plus* the scanner's
noise at its full level. A thick slice simulated by blurring an image that already holds
that noise (a real scan's in-plane axis, or a synthetic volume built from real slices)
averages the noise down. A network trained on such cleaner inputs learns that what
varies from voxel to voxel is signal, and at inference sharpens the real slices' noise:
real slices then look different from the ones in between. Topping the simulated slices
up to the real noise level teaches it the opposite (its targets' own noise cannot be
predicted, so it learns to leave it out).

Only the part of a target's noise that its input cannot show is unpredictable, though: a self
pair's input is made from its own target, so what of the target's noise survives the slice
profile is in the input too, and the network learns to keep that part (the real slices come
out as noisy as they went in). Self pairs therefore take their targets from the scan denoised
within its slices (`denoised`) and their inputs from the scan as it is.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from .normalize import foreground_mask

# non-local means cut-off, in noise standard deviations (scikit-image's advice for its fast mode):
# on a noise-free 1 mm brain, whose estimated level is fine texture, it changes next to nothing
NLM_CUTOFF = 0.8

# median(|x|) / MAD_TO_SD is the standard deviation of zero-mean Gaussian values x
MAD_TO_SD = 0.6745


# a third difference, (1, -3, 3, -1) / sqrt(20): white noise keeps its standard deviation through it,
# smooth anatomy (power falling with frequency) mostly does not
THIRD_DIFFERENCE = np.array([1.0, -3.0, 3.0, -1.0], dtype=np.float32) / np.sqrt(20.0)


def estimate_sd(data: np.ndarray, slice_axis: int) -> float:
    """The noise standard deviation of a scan, from its slices alone.

    Within each slice, a third difference along each in-plane axis keeps only the highest
    frequencies, where white noise has as much power as anywhere and anatomy has least; the
    median absolute value inside the object (eroded, so its rim's edges stay out) gives a
    robust estimate. Fine texture still counts a little: on a noise-free 1 mm brain the
    estimate is about 0.2% of the intensity range.
    """
    in_plane = [axis for axis in range(3) if axis != slice_axis]
    x = np.asarray(data, dtype=np.float32)
    for axis in in_plane:
        x = ndimage.correlate1d(x, THIRD_DIFFERENCE, axis=axis, mode="nearest")
    box = [7, 7, 7]
    box[slice_axis] = 1     # erode within the slices only: thick slices are few
    inside = ndimage.binary_erosion(foreground_mask(data), structure=np.ones(box, bool))
    if not inside.any():
        return 0.0
    return float(np.median(np.abs(x[inside])) / MAD_TO_SD)


def gain(transform: Callable[[np.ndarray], np.ndarray], length: int) -> float:
    """The factor by which a linear `transform` along axis 0 scales white noise's standard
    deviation, computed exactly from its responses to unit impulses (median over its outputs,
    so the edges do not count)."""
    impulses = np.eye(length, dtype=np.float32)[:, :, None]
    responses = transform(impulses)[..., 0]          # (outputs, length): row j = weights of output j
    return float(np.sqrt(np.median(np.sum(responses.astype(np.float64) ** 2, axis=1))))


def top_up(degraded: np.ndarray, noise_sd: float, noise_gain: float, rng: np.random.Generator) -> np.ndarray:
    """`degraded` (whose noise was scaled by `noise_gain`) plus the Gaussian noise that brings
    it back to `noise_sd`."""
    missing = noise_sd * np.sqrt(max(0.0, 1.0 - noise_gain ** 2))
    if missing <= 0:
        return degraded
    return (degraded + rng.normal(0.0, missing, degraded.shape)).astype(np.float32)


def denoised(data: np.ndarray, slice_axis: int, noise_sd: float) -> np.ndarray:
    """The scan denoised within each slice: non-local means (5-pixel patches, searched 6 pixels
    around) at the noise level `noise_sd` (estimate_sd). Slice by slice, as the noise of thick
    slices is independent between them."""
    from skimage.restoration import denoise_nl_means

    data = np.asarray(data, dtype=np.float32)
    if noise_sd <= 0:
        return data
    slices = np.moveaxis(data, slice_axis, 0)
    out = np.stack([denoise_nl_means(s, h=NLM_CUTOFF * noise_sd, sigma=noise_sd, patch_size=5, patch_distance=6,
                                     fast_mode=True) for s in slices])
    return np.ascontiguousarray(np.moveaxis(out.astype(np.float32), 0, slice_axis))
