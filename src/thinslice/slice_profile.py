"""The slice profile as the scan itself shows it: an estimate of the through-plane blur.

Stage 2 is only as good as its slice model, and headers lie (SliceThickness against the
spacing, gaps). The in-plane axes of a thick-slice scan are sharp; blurred with the right
Gaussian profile and sampled at the slice spacing, their lines must look like the lines
along the slice axis. So for each candidate FWHM, the mean power spectrum of windows along
the slice axis is compared with that of the in-plane lines so degraded, by the variance of
their log ratio: a shape match, blind to the overall contrast, which differs between axes.
Each side gets the candidate blur across its lines too (the slice axis along the other
in-plane axis), because the in-plane lines lie in slices that are themselves blurred.

Each in-plane axis gives an estimate, and the thinner one is taken. An axis whose anatomy
is finer than the slice axis's reads the profile too wide, a coarser one too thin, and on
few slices far apart the two readings can differ by the spacing itself. The errors do not
cost alike: a profile taken too wide trains the SR network to sharpen what the slices do
not hold, one taken too thin only to sharpen less (on real held-out slices, README). On ch2
at 4 mm spacing FWHM 2, 4 and 6 mm read 1.6-1.8, 3.8-4.0 and 6.0 mm along every axis
(tests/test_slice_profile.py). Windows span 16 samples, or 8 on scans too short for enough
of those (coarser; make bench-profile).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from .degrade import FWHM_PER_SIGMA

# The estimate and the header's thickness differ by more than this share: a warning.
PROFILE_WARNING = 0.25
# Samples per window along a line (64 mm at 4 mm spacing); the shorter one only where the scan
# has too few slices for the longer (its estimate is coarser, worst for thin profiles).
WINDOWS = (16, 8)
MIN_WINDOWS = 50     # fewer windows in the foreground: no estimate
COARSE = np.arange(0.1, 3.0001, 0.2)   # candidate FWHMs, in slice spacings


def _windows(data: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Windows of n samples along the last axis (half-overlapping) that lie in the mask."""
    if data.shape[-1] < n:
        return np.empty((0, n), dtype=data.dtype)
    v = sliding_window_view(data, n, axis=-1)[..., :: n // 2, :]
    inside = sliding_window_view(mask, n, axis=-1)[..., :: n // 2, :].all(axis=-1)
    return v[inside]


def _spectrum(windows: np.ndarray) -> np.ndarray:
    """Mean power spectrum of Hann-windowed, mean-removed windows, without the DC term."""
    x = windows - windows.mean(axis=1, keepdims=True)
    return (np.abs(np.fft.rfft(x * np.hanning(windows.shape[1]), axis=1)) ** 2).mean(axis=0)[1:]


def _along(data: np.ndarray, axis: int, fwhm_mm: float, spacing_mm: float) -> np.ndarray:
    return ndimage.gaussian_filter1d(data, fwhm_mm / spacing_mm / FWHM_PER_SIGMA, axis=axis, mode="nearest")


def estimate_fwhm(data: np.ndarray, mask: np.ndarray, axis: int, spacings) -> float | None:
    """The Gaussian-equivalent FWHM (mm) of the slice profile along `axis`: the thinner of
    the two in-plane readings (estimate_readings), or None."""
    found = estimate_readings(data, mask, axis, spacings)
    return None if found is None else found[0]


def estimate_readings(data: np.ndarray, mask: np.ndarray, axis: int, spacings) -> tuple[float, float] | None:
    """The slice profile's Gaussian-equivalent FWHM (mm) along `axis` as each in-plane axis
    reads it, thinner first; None when the foreground holds too few runs of 8 slices, along
    the slice axis and along the in-plane axes sampled at the slice spacing (or the in-plane
    axes are not finer).

    data, mask: the scan and its foreground; spacings: voxel size per array axis (mm)."""
    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    for n in WINDOWS:
        readings = _readings(data, mask, axis, spacings, n)
        if readings is not None:
            return readings
    return None


def _readings(data: np.ndarray, mask: np.ndarray, axis: int, spacings, n: int) -> tuple[float, float] | None:
    """estimate_readings with windows of n samples. Whether the foreground holds enough windows
    depends on the mask alone, so it is settled before any candidate is blurred."""
    spacing = float(spacings[axis])
    through_mask = np.moveaxis(mask, axis, -1)
    if len(_windows(through_mask, through_mask, n)) < MIN_WINDOWS:
        return None
    inplane = [a for a in range(3) if a != axis]
    samplings = []
    for a in inplane:
        step = spacing / float(spacings[a])
        if step <= 1:
            return None
        positions = np.arange(0, data.shape[a] - 1, step)     # in-plane samples at the slice spacing
        lo = np.floor(positions).astype(int)
        hi = np.minimum(lo + 1, data.shape[a] - 1)
        in_mask = np.moveaxis(mask, a, -1)
        in_mask = in_mask[..., lo] & in_mask[..., hi]
        if len(_windows(in_mask, in_mask, n)) < MIN_WINDOWS:
            return None
        samplings.append((lo, hi, (positions - lo).astype(np.float32), in_mask))
    pairs = list(zip((inplane, inplane[::-1]), samplings))   # (the axis of the lines, the other), its sampling

    def blurred(fwhm: float) -> dict:
        """The scan blurred with the candidate along each in-plane axis: both axes' costs use both."""
        return {a: _along(data, a, fwhm, spacings[a]) for a in inplane}

    def cost(pair, blurs: dict) -> float:
        (a, b), (lo, hi, t, in_mask) = pair
        through = _spectrum(_windows(np.moveaxis(blurs[b], axis, -1), through_mask, n))
        lines = np.moveaxis(blurs[a], a, -1)
        windows = _windows(lines[..., lo] * (1 - t) + lines[..., hi] * t, in_mask, n)
        return float(np.var(np.log(through + 1e-12) - np.log(_spectrum(windows) + 1e-12)))

    coarse = []     # every 0.2 spacings, one blur per candidate and axis for both costs
    for g in COARSE:
        blurs = blurred(g * spacing)
        coarse.append([cost(pair, blurs) for pair in pairs])
    estimates = []
    for pair, costs in zip(pairs, np.transpose(coarse)):
        best = float(COARSE[int(np.argmin(costs))])
        fine = np.arange(max(best - 0.2, 0.05), best + 0.2001, 0.05)     # then every 0.05 around the best
        best = float(fine[int(np.argmin([cost(pair, blurred(g * spacing)) for g in fine]))])
        estimates.append(best * spacing)
    return float(min(estimates)), float(max(estimates))


def profile_mismatch(geom) -> str | None:
    """A warning when the header's thickness lies more than PROFILE_WARNING outside the span of
    the scan's two in-plane readings (the estimate is the thinner: alone it would read a right
    header as too thick), else None."""
    est, header = geom.fwhm_estimate_mm, geom.header_thickness_mm
    if est is None or header is None:
        return None
    wide = geom.fwhm_wide_reading_mm or est      # records from before both readings were kept: the estimate
    if est <= (1 + PROFILE_WARNING) * header and wide >= (1 - PROFILE_WARNING) * header:
        return None
    looks = f"{est:.3g} mm" if wide == est else f"{est:.3g} to {wide:.3g} mm"
    return (f"the slice profile looks {looks} wide (FWHM) and the header says {header:.3g} mm thick; "
            f"check the slice thickness (slice_thickness: auto uses the estimate)")
