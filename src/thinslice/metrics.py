"""Image quality against a ground truth, and no-reference checks for real scans."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .normalize import above_fraction
from .resample import resample_to
from .volume import Volume

# Scores count the ground truth's voxels above this fraction of its range (normalize.above_fraction):
# the head without the air around it (on Colin27, 0-254 with 99th percentile 164: voxels above 20.5).
TRUTH_FRACTION = 0.125


def psnr(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
         peak: float | None = None) -> float:
    """PSNR in dB over `mask` (all voxels if None); peak defaults to the ground-truth max."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if mask is None:
        mask = np.ones(truth.shape, dtype=bool)
    peak = float(truth.max()) if peak is None else float(peak)
    mse = float(np.mean((pred[mask] - truth[mask]) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


def ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
         data_range: float | None = None) -> tuple[float, float]:
    """3D SSIM (7-voxel uniform window). Returns (mean over the volume, mean over `mask`)."""
    from skimage.metrics import structural_similarity

    truth = np.asarray(truth, dtype=np.float64)
    data_range = float(truth.max()) if data_range is None else float(data_range)
    mean, full = structural_similarity(truth, np.asarray(pred, dtype=np.float64),
                                       data_range=data_range, full=True)
    masked = float(full[mask].mean()) if mask is not None and mask.any() else float(mean)
    return float(mean), masked


def compare(pred: Volume, truth: Volume) -> dict:
    """PSNR (peak = truth max, over the truth's foreground) and SSIM of `pred` against `truth`, in
    world coordinates.

    ssim is the mean SSIM over the whole overlapping volume; ssim_fg its mean over the
    foreground (normalize.above_fraction(truth, TRUTH_FRACTION)).
    """
    values, inside = resample_to(pred, truth)
    fg = above_fraction(truth.data, TRUTH_FRACTION) & inside
    if inside.all():
        s, s_fg = ssim(values, truth.data, fg)
    else:  # SSIM on the bounding box of the overlap
        box = ndimage.find_objects(inside.astype(np.uint8))[0]
        s, s_fg = ssim(values[box], truth.data[box], fg[box], data_range=float(truth.data.max()))
    return {"psnr": psnr(values, truth.data, fg), "ssim": s, "ssim_fg": s_fg,
            "n_voxels": int(fg.sum())}


def through_plane_sharpness(data: np.ndarray, axis: int, mask: np.ndarray | None = None) -> float:
    """Mean absolute finite difference along `axis` over the mask: higher is sharper.

    A no-reference measure for real scans; only comparable between outputs on one grid.
    """
    d = np.abs(np.diff(np.asarray(data, dtype=np.float64), axis=axis))
    if mask is None:
        return float(d.mean())
    index = [slice(None)] * 3
    index[axis] = slice(0, -1)
    m = mask[tuple(index)]
    return float(d[m].mean()) if m.any() else float(d.mean())


def slice_phases(n_out: int, ratio: float) -> np.ndarray:
    """The phase of each output slice of the grid of `ratio`: where it lies between two real
    slices, in ceil(ratio) steps (k mod r for an integer r; 0 = on a real slice)."""
    steps = int(np.ceil(ratio - 1e-6))
    return np.rint(np.mod(np.arange(n_out) / ratio, 1.0) * steps).astype(int) % steps


def phase_energy(data: np.ndarray, axis: int, ratio: float, mask: np.ndarray | None = None,
                 sigma: float = 1.0) -> np.ndarray:
    """Mean in-plane high-pass energy of the output slices of each phase (`slice_phases`;
    phase 0: the real slices' positions).

    The high-pass is the slice minus its in-plane Gaussian blur (`sigma` voxels), squared and
    averaged over `mask` (all voxels if None). Returns one value per phase, phase 0 first.
    """
    data = np.asarray(data, dtype=np.float64)
    sigmas = [sigma] * 3
    sigmas[axis] = 0.0
    energy = (data - ndimage.gaussian_filter(data, sigmas, mode="nearest")) ** 2
    if mask is None:
        mask = np.ones(data.shape, dtype=bool)
    energy, mask = np.moveaxis(energy, axis, 0), np.moveaxis(np.asarray(mask, dtype=bool), axis, 0)
    phases = slice_phases(len(energy), ratio)
    out = np.zeros(phases.max() + 1)
    for k in range(len(out)):
        m = mask[phases == k]
        out[k] = energy[phases == k][m].mean() if m.any() else 0.0
    return out


def periodic_artifact(data: np.ndarray, axis: int, ratio: float, mask: np.ndarray | None = None) -> float:
    """Max over min of `phase_energy`: 1.0 when every slice phase has the same texture.

    A dot or stripe pattern that repeats with the real slices (real slices noisy and the
    synthesised ones smooth, or the reverse) raises it; 1.0 for a ratio of 1.
    """
    if ratio <= 1:
        return 1.0
    e = phase_energy(data, axis, ratio, mask)
    return float(e.max() / e.min()) if e.min() > 0 else float("inf")
