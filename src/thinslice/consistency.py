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

from .degrade import degrade
from .metrics import psnr

# The PSNR of a perfect re-acquisition is infinite; it is reported as this.
CONSISTENCY_CAP_DB = 99.0


def acquisition_matrix(n_out: int, r: int, model: str, thickness_mm: float, out_spacing_mm: float) -> np.ndarray:
    """D with D @ y = degrade(y) for every column y of n_out output slices (float64)."""
    return degrade(np.eye(n_out), 0, r, model, thickness_mm, out_spacing_mm).astype(np.float64)


def consistency_psnr(output: np.ndarray, lr: np.ndarray, axis: int, r: int, model: str, thickness_mm: float,
                     out_spacing_mm: float, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of the re-acquired output against the real slices, over `mask` (the input's
    foreground), peak = the real slices' maximum there; capped at CONSISTENCY_CAP_DB."""
    again = degrade(output, axis, r, model, thickness_mm, out_spacing_mm)   # the re-acquisition
    lr = np.asarray(lr, dtype=np.float64)
    mask = np.ones(lr.shape, dtype=bool) if mask is None or not mask.any() else mask
    value = psnr(again, lr, mask, peak=float(lr[mask].max()))
    return float(min(value, CONSISTENCY_CAP_DB))


def make_consistent(output: np.ndarray, lr: np.ndarray, axis: int, r: int, model: str, thickness_mm: float,
                    out_spacing_mm: float) -> np.ndarray:
    """`output` plus D^T (D D^T)^-1 (lr - D output) along `axis`: the least-squares correction
    after which the output re-acquires to `lr` (float32)."""
    y = np.moveaxis(np.asarray(output, dtype=np.float64), axis, -1)
    x = np.moveaxis(np.asarray(lr, dtype=np.float64), axis, -1)
    d = acquisition_matrix(y.shape[-1], r, model, thickness_mm, out_spacing_mm)
    gram = d @ d.T
    gram[np.diag_indices_from(gram)] += 1e-9 * np.trace(gram) / len(gram)   # guards a singular profile
    residual = x - y @ d.T
    corrected = y + np.linalg.solve(gram, residual.reshape(-1, len(gram)).T).T.reshape(residual.shape) @ d
    return np.ascontiguousarray(np.moveaxis(corrected, -1, axis), dtype=np.float32)
