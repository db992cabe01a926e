"""Agreement of an output with the acquisition, the one measurement a real scan has.

The true thin-slice volume, pushed through the scan's slice model (profile, thickness,
spacing), gives back exactly the acquired slices. Along the slice axis that model is one
matrix D (n_lr x n_out), the same for every column of the volume: `consistency_psnr`
re-acquires an output with it and compares the result with the real slices, and
`make_consistent` adds the smallest correction (least squares) after which the output
re-acquires to the real slices exactly; the correction lies in the row space of D, so
what the acquisition cannot see is left as it was.
"""

from __future__ import annotations

import numpy as np

from .degrade import FWHM_PER_SIGMA, degrade
from .settings import SLICE_MODELS
from .metrics import psnr

# The PSNR of a perfect re-acquisition is infinite; it is reported as this.
CONSISTENCY_CAP_DB = 99.0


def acquisition_matrix(n_lr: int, n_out: int, ratio: float, model: str, thickness_mm: float,
                       out_spacing_mm: float) -> np.ndarray:
    """D (n_lr x n_out) with D @ y = the acquisition of every column y of n_out output slices
    (float64). For an integer ratio it is exactly `degrade` (the simulation of the benchmarks);
    for any other, each real slice weighs the output slices by its profile centred at
    i * ratio (edge slices repeated beyond the grid, as `degrade` does)."""
    if ratio == int(ratio):
        return degrade(np.eye(n_out), 0, int(ratio), model, thickness_mm, out_spacing_mm)[:n_lr].astype(np.float64)
    if model not in SLICE_MODELS:
        raise ValueError(f"unknown slice model {model!r}; choose one of {SLICE_MODELS}")
    width = thickness_mm / out_spacing_mm   # the profile in output slices
    d = np.zeros((n_lr, n_out))
    for i in range(n_lr):
        centre = i * ratio
        if model == "skip":   # no blur: the grid's value at the centre, linearly interpolated
            lo = int(np.floor(centre))
            taps, w = np.array([lo, lo + 1]), np.array([lo + 1 - centre, centre - lo])
        elif model == "gaussian":
            sigma = width / FWHM_PER_SIGMA
            taps = np.arange(np.floor(centre - 4 * sigma) - 1, np.ceil(centre + 4 * sigma) + 2)
            w = np.exp(-0.5 * ((taps - centre) / sigma) ** 2)
        else:                 # box: overlap of each output slice with the slice's extent
            taps = np.arange(np.floor(centre - width / 2) - 1, np.ceil(centre + width / 2) + 2)
            w = np.clip(np.minimum(taps + 0.5, centre + width / 2) - np.maximum(taps - 0.5, centre - width / 2), 0, None)
        np.add.at(d[i], np.clip(taps.astype(int), 0, n_out - 1), w / w.sum())
    return d


def consistency_psnr(output: np.ndarray, lr: np.ndarray, axis: int, ratio: float, model: str, thickness_mm: float,
                     out_spacing_mm: float, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of the re-acquired output against the real slices, over `mask` (the input's
    foreground), peak = the real slices' maximum there; capped at CONSISTENCY_CAP_DB."""
    d = acquisition_matrix(lr.shape[axis], output.shape[axis], ratio, model, thickness_mm, out_spacing_mm)
    again = np.moveaxis(np.moveaxis(np.asarray(output, dtype=np.float64), axis, -1) @ d.T, -1, axis)
    lr = np.asarray(lr, dtype=np.float64)
    mask = np.ones(lr.shape, dtype=bool) if mask is None or not mask.any() else mask
    value = psnr(again, lr, mask, peak=float(lr[mask].max()))
    return float(min(value, CONSISTENCY_CAP_DB))


def make_consistent(output: np.ndarray, lr: np.ndarray, axis: int, ratio: float, model: str, thickness_mm: float,
                    out_spacing_mm: float) -> np.ndarray:
    """`output` plus D^T (D D^T)^-1 (lr - D output) along `axis`: the least-squares correction
    after which the output re-acquires to `lr` (float32)."""
    y = np.moveaxis(np.asarray(output, dtype=np.float64), axis, -1)
    x = np.moveaxis(np.asarray(lr, dtype=np.float64), axis, -1)
    d = acquisition_matrix(x.shape[-1], y.shape[-1], ratio, model, thickness_mm, out_spacing_mm)
    gram = d @ d.T
    gram[np.diag_indices_from(gram)] += 1e-9 * np.trace(gram) / len(gram)   # guards a singular profile
    residual = x - y @ d.T
    corrected = y + np.linalg.solve(gram, residual.reshape(-1, len(gram)).T).T.reshape(residual.shape) @ d
    return np.ascontiguousarray(np.moveaxis(corrected, -1, axis), dtype=np.float32)
