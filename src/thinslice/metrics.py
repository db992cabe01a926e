"""Image quality against a ground truth, and no-reference checks for real scans."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .volume import Volume

TRUTH_THRESHOLD = 20.0  # voxels of the ground truth above this count as foreground


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


def compare(pred: Volume, truth: Volume) -> dict:
    """PSNR (peak = truth max, over truth > 20) and SSIM of `pred` against `truth`, in world coordinates.

    ssim is the mean SSIM over the whole overlapping volume; ssim_fg its mean over the
    foreground (truth > 20).
    """
    values, inside = resample_to(pred, truth)
    fg = (truth.data > TRUTH_THRESHOLD) & inside
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
