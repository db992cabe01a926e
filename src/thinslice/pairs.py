"""Training pairs for the SR network: (input on the output grid, target) with a known degraded axis.

A pair's input is a degraded volume cubic-upsampled back onto the grid of its target, so
input and target have the same shape; along `axis` the input went through the slice
model (blur, keep every r-th sample starting at 0, cubic upsampling), along the other
axes both are the same. `context` names the axes that are high resolution in both (the
axes a 2D network may put beside the degraded one); None means both other axes.

Pairs are light: the input is an interpolate.Upsampled, which keeps the degraded slices
and upsamples only the windows that training reads, and the targets of the pairs that one
volume gives are views of one array (sr_training stores it once).

- `synthetic_pairs`: an HR volume (stage 1's synthetic HR, or a ground truth for the
  supervised upper bound) degraded along the slice axis: the real acquisition's grid.
- `self_pairs`: no HR volume at all (SMORE-like): the real LR scan's in-plane axes are
  high resolution, so the acquisition is simulated along each of them in turn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from . import noise
from .degrade import blur, degrade
from .settings import SLICE_MODELS
from .errors import ThinsliceError
from .interpolate import Upsampled

# Relative tolerance under which an in-plane spacing counts as equal to the target spacing.
SPACING_TOLERANCE = 1e-3


class Pair(NamedTuple):
    """One training pair. input, target: float32 volumes of equal shape (X, Y, Z); the input
    an Upsampled (np.asarray gives its array), the target an array.

    axis:    the degraded axis (the one a network restores);
    factor:  r, the ratio of the simulated slice spacing to the grid spacing along `axis`;
             along `axis` the input passes exactly through the degraded samples 0, r, 2r, ...;
    context: axes that are high resolution in input and target alike (None: both others);
    source:  "synthetic" (an HR volume degraded) or "self" (a real scan's in-plane axis degraded).
    """

    input: Upsampled
    target: np.ndarray
    axis: int
    factor: int
    context: tuple[int, ...] | None = None
    source: str = "synthetic"


def _check(data: np.ndarray, axis: int, r: int, model: str, thickness_mm: float, name: str) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 3:
        raise ThinsliceError(f"{name}: expected a 3D array, got shape {data.shape}")
    if axis not in (0, 1, 2):
        raise ThinsliceError(f"{name}: axis must be 0, 1 or 2, got {axis}")
    if int(r) != r or r < 2:
        raise ThinsliceError(f"{name}: factor must be an integer >= 2, got {r}")
    if model not in SLICE_MODELS:
        raise ThinsliceError(f"{name}: unknown slice model {model!r}; choose one of {SLICE_MODELS}")
    if not thickness_mm > 0:
        raise ThinsliceError(f"{name}: slice thickness must be positive, got {thickness_mm}")
    if not np.all(np.isfinite(data)):
        raise ThinsliceError(f"{name}: the volume holds NaN or infinite values")
    # C order once here (nibabel loads scans Fortran-ordered), so that targets that are the scan
    # itself are shared between the in-plane axes instead of copied for each
    return np.ascontiguousarray(data, dtype=np.float32)


def _simulate(hr: np.ndarray, axis: int, r: int, model: str, thickness_mm: float,
              hr_spacing_mm: float, noise_sd: float = 0.0, noise_gain: float = 1.0,
              rng: np.random.Generator | None = None) -> tuple[Upsampled, np.ndarray]:
    """(cubic upsampling of the degraded hr, hr cropped to the same grid) along `axis`; the
    degraded slices are topped up to `noise_sd` (their noise was scaled by `noise_gain`)."""
    if hr.shape[axis] < r + 1:
        raise ThinsliceError(
            f"need at least r+1 = {r + 1} samples along axis {axis} to simulate the slice model, "
            f"got {hr.shape[axis]}")
    lr = degrade(hr, axis, r, model, thickness_mm, hr_spacing_mm)
    if noise_sd > 0:
        lr = noise.top_up(lr, noise_sd, noise_gain, rng if rng is not None else np.random.default_rng(0))
    n = (lr.shape[axis] - 1) * r + 1
    index = [slice(None)] * 3
    index[axis] = slice(0, n)
    return Upsampled(lr, axis, r), np.asarray(hr[tuple(index)], dtype=np.float32)


def synthetic_pairs(hr: np.ndarray, slice_axis: int, r: int, model: str, thickness_mm: float,
                    hr_spacing_mm: float, noise_sd: float = 0.0,
                    rng: np.random.Generator | None = None) -> list[Pair]:
    """Degrade an HR volume with the acquisition's slice model and bring it back to its grid.

    hr: (X, Y, Z) on the output grid of an LR scan (n_hr = (n_lr-1)*r+1 slices along
    `slice_axis`, spacing `hr_spacing_mm` = LR spacing / r along it). The degraded
    volume (degrade.degrade) then has exactly the real LR grid, and the pair's input is
    its cubic upsampling, the network's input at inference. When n_hr is not of that
    form the trailing HR slices past the last LR slice are dropped from both. With
    `noise_sd` (the real scan's noise level) the degraded slices are topped up to it.
    Returns one Pair (in a list, to concatenate with other pair lists).
    """
    hr = _check(hr, slice_axis, r, model, thickness_mm, "synthetic_pairs")
    if not hr_spacing_mm > 0:
        raise ThinsliceError(f"synthetic_pairs: HR spacing must be positive, got {hr_spacing_mm}")
    gain = 1.0          # of the HR volume's noise, through the slice profile
    if noise_sd > 0:
        gain = noise.gain(lambda x: degrade(x, 0, int(r), model, thickness_mm, hr_spacing_mm),
                          min(hr.shape[slice_axis], 128))
    inp, target = _simulate(hr, slice_axis, int(r), model, thickness_mm, hr_spacing_mm, noise_sd, gain, rng)
    return [Pair(inp, target, int(slice_axis), int(r), None)]


def sample_axis(data: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Cubic B-spline samples of `data` along `axis` at `positions` (in samples; integers are
    taken as they are)."""
    data = np.asarray(data, dtype=np.float32)
    positions = np.asarray(positions, dtype=np.float64)
    if np.all(np.abs(positions - np.round(positions)) < 1e-6):
        return np.ascontiguousarray(np.take(data, np.round(positions).astype(int), axis=axis))
    eye = np.eye(data.shape[axis])
    w = np.empty((len(positions), data.shape[axis]), dtype=np.float64)
    for i in range(data.shape[axis]):
        w[:, i] = ndimage.map_coordinates(eye[i], positions[None], order=3, mode="mirror")
    moved = np.moveaxis(data, axis, -1)
    return np.ascontiguousarray(np.moveaxis(moved @ w.T.astype(np.float32), -1, axis))


def resample_axis(data: np.ndarray, axis: int, spacing_mm: float, new_spacing_mm: float,
                  antialias: bool = True) -> np.ndarray:
    """Cubic B-spline resampling of `data` along `axis` from one spacing to another.

    Sample k of the result lies at k * new_spacing_mm from sample 0 (same first sample,
    as long as it fits in the extent). Downsampling first applies a Gaussian anti-alias
    filter (sigma = (ratio - 1) / 2 input samples, as scikit-image's rescale does), unless
    `antialias` is false (data already blurred enough).
    """
    data = np.asarray(data, dtype=np.float32)
    ratio = new_spacing_mm / spacing_mm
    if abs(ratio - 1.0) <= SPACING_TOLERANCE:
        return data
    n_out = int(np.floor((data.shape[axis] - 1) / ratio + 1e-6)) + 1
    if ratio > 1 and antialias:
        data = ndimage.gaussian_filter1d(data, (ratio - 1.0) / 2.0, axis=axis, mode="mirror")
    return sample_axis(data, axis, np.arange(n_out) * ratio)


def rotated_in_plane(lr: np.ndarray, slice_axis: int, in_plane_mm, degrees: float) -> tuple[np.ndarray, float]:
    """(the scan rotated about its slice axis by `degrees`, its in-plane spacing): cubic B-spline,
    same array shape (the corners that leave it are dropped, those that enter are background, the
    scan's minimum). Unequal in-plane spacings are first made the finer one (cubic upsampling of
    the coarser axis), so that the rotation is one in millimetres."""
    axes = [a for a in range(3) if a != slice_axis]
    spacings = np.broadcast_to(np.asarray(in_plane_mm, dtype=float), (2,))
    fine = float(spacings.min())
    for a, h in zip(axes, spacings):
        lr = resample_axis(lr, a, float(h), fine)
    turned = ndimage.rotate(lr, degrees, axes=axes, reshape=False, order=3, mode="constant", cval=float(lr.min()))
    return np.ascontiguousarray(turned, dtype=np.float32), fine


def self_pairs(lr: np.ndarray, slice_axis: int, r: int, model: str, thickness_mm: float,
               spacing_mm: float, in_plane_mm, noise_sd: float = 0.0,
               rng: np.random.Generator | None = None, all_offsets: bool = False,
               rotations: int = 0, scale: float = 1.0, clean: np.ndarray | None = None) -> list[Pair]:
    """Pairs from the real LR scan alone: the slice model simulated along each in-plane axis.

    lr: the real scan (X, Y, Z), `slice_axis` with `spacing_mm` between slices of
    `thickness_mm`; in_plane_mm: the spacings of the two other axes in array order (or
    one number for both). For each in-plane axis a, the target is a resampled to the output
    spacing spacing_mm / r (cubic); the input is the acquisition simulated on a's own grid
    (blur with the slice profile, sample every spacing_mm, topped up to `noise_sd`, the scan's
    noise level, when given) and cubic-upsampled onto the target's grid. Simulating on the
    native grid keeps the input's blur that of the real slices even when the output spacing
    is much coarser than the in-plane one (its anti-alias filter is the target's alone).
    When the output spacing is no finer than the slices are thick, the target is a blurred
    with the slice profile instead, as the scanner's own slices at that spacing would be
    (held out real slices are predicted better so).
    With `all_offsets` the slices are simulated r times along each axis, through output
    samples k, k+r, ... for k = 0 .. r-1 (each its own pair, its target starting at sample k):
    r times the distinct examples from one scan.
    With `rotations` n the same is done on n copies of the scan rotated about its slice axis by
    90 k / (n + 1) degrees, k = 1 .. n (rotated_in_plane): the slices are then also simulated
    across the anatomy's oblique directions, n + 1 times the pairs. A scan has few slices, and a
    network trained on its two in-plane axes alone learns those axes' anatomy by heart.
    With `scale` s < 1 the same again from the scan and each rotated copy read as if their voxels
    were s times their size: the anatomy s times smaller against the slice profile, a turn of
    scale where the rotations give one of direction. Only the targets are resampled, to the
    output spacing from a finer one (a downsampling, never an upsampling).
    With `clean`, the scan denoised (noise.denoised; same shape), the targets are made from it and
    the inputs from `lr`: the network learns to leave out all of the slices' noise, also the part
    its input shows through the slice profile.
    Returns the Pairs degraded along the first in-plane axis, then those along the second (for
    the scan, then for each rotated copy, then for each of these scaled); the context of each is
    the other in-plane axis (the slice axis is low resolution in both).
    """
    lr = _check(lr, slice_axis, r, model, thickness_mm, "self_pairs")
    if not spacing_mm > 0:
        raise ThinsliceError(f"self_pairs: slice spacing must be positive, got {spacing_mm}")
    in_plane = np.broadcast_to(np.asarray(in_plane_mm, dtype=float), (2,))
    if not np.all(in_plane > 0):
        raise ThinsliceError(f"self_pairs: in-plane spacings must be positive, got {in_plane_mm}")
    if not 0 < scale <= 1:
        raise ThinsliceError(f"self_pairs: scale must be in (0, 1], got {scale}")
    if clean is not None and np.shape(clean) != lr.shape:
        raise ThinsliceError(f"self_pairs: the denoised scan has shape {np.shape(clean)}, the scan {lr.shape}")
    n = int(rotations)
    clean = lr if clean is None else np.asarray(clean, dtype=np.float32)
    scans = [(lr, clean, in_plane)]
    for k in range(1, n + 1):
        degrees = 90.0 * k / (n + 1)
        turned, fine = rotated_in_plane(lr, slice_axis, in_plane, degrees)
        turned_clean = turned if clean is lr else rotated_in_plane(clean, slice_axis, in_plane, degrees)[0]
        scans.append((turned, turned_clean, (fine, fine)))
    if scale < 1:
        scans += [(scan, target_scan, scale * np.asarray(spacings, dtype=float))
                  for scan, target_scan, spacings in scans]
    rng = rng if rng is not None else np.random.default_rng(0)
    return [pair for scan, target_scan, spacings in scans
            for pair in _in_plane_pairs(scan, target_scan, slice_axis, int(r), model, thickness_mm, spacing_mm,
                                        spacings, noise_sd, rng, all_offsets)]


def _in_plane_pairs(lr: np.ndarray, target_scan: np.ndarray, slice_axis: int, r: int, model: str,
                    thickness_mm: float, spacing_mm: float, in_plane, noise_sd: float, rng: np.random.Generator,
                    all_offsets: bool) -> list[Pair]:
    """self_pairs of one scan (no rotated copies), the targets from `target_scan` (`lr` or it denoised)."""
    axes = [a for a in range(3) if a != slice_axis]
    target_mm = spacing_mm / r
    pairs = []
    for a, h, other in zip(axes, in_plane, axes[::-1]):
        blurred = blur(lr, a, model, thickness_mm, float(h))       # the slice profile on a's own grid
        if target_mm >= thickness_mm:     # the profile is the target's blur
            target_blurred = blurred if target_scan is lr else blur(target_scan, a, model, thickness_mm, float(h))
            target = resample_axis(target_blurred, a, float(h), target_mm, antialias=False)
        else:
            target = resample_axis(target_scan, a, float(h), target_mm)
        # one array for the r offsets' targets (views of it); the scan itself, for both axes, when
        # resampling left it as it was (in-plane spacing = output spacing, thicker slices)
        target = np.ascontiguousarray(target, dtype=np.float32)
        if target.shape[a] < r + 1:
            raise ThinsliceError(f"self_pairs: in-plane axis {a} is too short: it spans {target.shape[a]} "
                                 f"samples at the output spacing, less than r+1 = {r + 1}")
        for k in range(r if all_offsets else 1):
            n_slices = (target.shape[a] - 1 - k) // r + 1
            if n_slices < 2:
                continue
            positions = (k + np.arange(n_slices) * r) * (target_mm / h)   # the simulated slices, in samples of a
            degraded = sample_axis(blurred, a, positions)
            if noise_sd > 0:     # the scan's noise, scaled by the slice profile and the sampling
                gain = noise.gain(lambda x: sample_axis(blur(x, 0, model, thickness_mm, float(h)), 0, positions),
                                  lr.shape[a])
                degraded = noise.top_up(degraded, noise_sd, gain, rng)
            kept = [slice(None)] * 3
            kept[a] = slice(k, k + (n_slices - 1) * r + 1)
            pairs.append(Pair(Upsampled(degraded, a, r), target[tuple(kept)], a, r, (other,), "self"))
    return pairs
