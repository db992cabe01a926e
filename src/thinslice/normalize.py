"""Robust intensity normalisation and a foreground mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import ThinsliceError


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """Boolean mask of the object: above an Otsu threshold, closed, holes filled, largest part."""
    from skimage.filters import threshold_otsu

    data = np.asarray(data, dtype=np.float32)
    if float(data.max()) <= float(data.min()):
        return np.zeros(data.shape, dtype=bool)
    mask = data > threshold_otsu(data)
    # close on an edge-padded copy: an object that touches the field of view keeps its rim
    mask = ndimage.binary_closing(np.pad(mask, 2, mode="edge"), iterations=2)[(slice(2, -2),) * mask.ndim]
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return mask


def above_fraction(data: np.ndarray, fraction: float) -> np.ndarray:
    """Voxels above min + fraction x (99th percentile - min): a threshold relative to the image's
    own range, so the same fraction means the same thing at any intensity scale."""
    lo, hi = float(data.min()), float(np.percentile(data, 99))
    return data > lo + fraction * (hi - lo)


def robust_range(data: np.ndarray, mask: np.ndarray | None = None, low_pct: float = 0.5,
                 high_pct: float = 99.5, source: str = "input") -> tuple[float, float]:
    """(low, high) percentiles of the foreground: the map x -> (x - low) / (high - low)."""
    values = np.asarray(data)[mask] if mask is not None and mask.any() else np.asarray(data).ravel()
    low, high = np.percentile(values, [low_pct, high_pct])
    if not high > low:
        raise ThinsliceError(f"{source}: image is constant ({low:g}); nothing to upsample")
    return float(low), float(high)


@dataclass(frozen=True)
class Intensity:
    """A subject's intensity scale: x -> (x - low) / (high - low), its robust range onto [0, 1]."""

    low: float
    high: float

    def normalize(self, data: np.ndarray) -> np.ndarray:
        return ((data - self.low) / (self.high - self.low)).astype(np.float32)

    def denormalize(self, data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalised float32 values back in input units; `out=data` does it in place."""
        return np.add(np.multiply(data, self.high - self.low, out=out), self.low, out=out).astype(np.float32,
                                                                                                     copy=False)

    def denormalize_spread(self, spread: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A spread (standard deviation) of normalised values in input units: scale only."""
        return np.multiply(spread, self.high - self.low, out=out)
