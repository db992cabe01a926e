"""Per-subject preparation: read a scan, describe its geometry, normalise, mask; and the
simulation of an LR acquisition from an HR ground truth (benchmark protocols)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .degrade import degrade
from .errors import ThinsliceError
from .geometry import Geometry, describe, output_shape
from .io import load_volume, output_type, read_nifti, save_volume
from .normalize import foreground_mask, robust_range
from .volume import Volume


def prepare(path: str | Path, out_image: str | Path, out_geometry: str | Path, out_mask: str | Path,
            echo: int | None = None, slice_axis: int | None = None, thickness_mm: float | str | None = None,
            factor: int | None = None, target_spacing_mm: float | None = None,
            output_dtype: str = "float32") -> Geometry:
    """Read a scan and write its LR volume (input intensities), geometry record and mask.

    Thickness: the given value, else the DICOM SliceThickness; "auto": the FWHM of the slice
    profile estimated from the scan itself (slice_profile), which is recorded in any case and
    compared with the header's (a warning beyond 25%). With neither (a NIfTI file), the slice
    spacing, unless the estimate is more than 25% below it: then the estimate (a scan with gaps
    between its slices, or every other slice of one, is thinner than its spacing; an estimate
    above the spacing is not taken, as 2D slices do not overlap and the estimate reads wide on
    some real scans).
    output_dtype: "float32", or "input": the integer type the scan's voxels fit (float32 if
    they are not whole numbers), recorded for the methods' outputs.
    Everything is checked before anything is written.
    """
    from .slice_profile import PROFILE_WARNING, estimate_readings, profile_mismatch

    auto = thickness_mm == "auto"
    vol, meta = load_volume(path, echo=echo)
    header = meta.get("slice_thickness") if thickness_mm is None or auto else float(thickness_mm)
    mask = foreground_mask(vol.data)
    norm = robust_range(vol.data, mask, source=str(path))
    dtype = output_type(output_dtype, vol.data)
    geom = describe(vol.affine, vol.shape, slice_axis, header, factor, target_spacing_mm,
                    norm, source=str(path))
    readings = estimate_readings(vol.data, mask, geom.slice_axis, vol.spacing)
    estimate, wide = readings if readings is not None else (None, None)
    if estimate is None:
        print(f"{path}: too few slices in the foreground to estimate the slice profile"
              + ("; slice_thickness auto falls back to the header's" if auto else ""))
    else:
        print(f"{path}: slice profile FWHM {estimate:.3g} mm estimated from the scan (the thinner in-plane reading; "
              f"the other {wide:.3g} mm), "
              + (f"{header:.3g} mm in the header" if header is not None else "no thickness in the header"))
        thinner = header is None and estimate < (1 - PROFILE_WARNING) * geom.spacing_mm
        if thinner:
            print(f"{path}: the estimate is more than {PROFILE_WARNING:.0%} below the {geom.spacing_mm:.3g} mm slice "
                  f"spacing, so it is taken as the slice thickness (give the thickness to override)")
        if auto or thinner:
            geom = describe(vol.affine, vol.shape, geom.slice_axis, estimate, factor, target_spacing_mm,
                            norm, source=str(path))
    geom.output_dtype, geom.header_thickness_mm = dtype, header
    geom.fwhm_estimate_mm, geom.fwhm_wide_reading_mm = estimate, wide
    if mismatch := profile_mismatch(geom):
        print(f"warning: {path}: {mismatch}")
    save_volume(vol, out_image)
    save_volume(Volume(mask.astype(np.float32), vol.affine), out_mask)
    geom.save(out_geometry)
    return geom


def rician(data: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """The magnitude of `data` plus complex Gaussian noise of standard deviation `sigma` per
    channel: the noise of a magnitude MR image (Rician; no noise for sigma 0)."""
    if sigma == 0:
        return np.asarray(data, dtype=np.float32)
    rng = np.random.default_rng(seed)
    real = data + rng.normal(0.0, sigma, data.shape)
    imaginary = rng.normal(0.0, sigma, data.shape)
    return np.hypot(real, imaginary).astype(np.float32)


def simulate(truth_path: str | Path, out_lr: str | Path, out_truth: str | Path, axis: int, factor: int,
             profile: str, fwhm_mm: float, target_spacing_mm: float | None = None,
             noise_percent: float = 0.0) -> None:
    """Simulate an LR scan from an HR ground truth: slice profile along `axis`, slices 0, r, 2r...

    With `noise_percent` the thick slices get Rician noise of that standard deviation in percent
    of the truth's 99th intensity percentile (the bright tissue); the truth stays noise-free.
    The truth is written on the output grid, so that scores compare voxel for voxel: cropped
    to (n_lr-1)*r+1 slices, or, for an output spacing `target_spacing_mm` (a multiple of the
    truth's spacing), every (target / spacing)-th slice up to the last real slice.
    """
    if not noise_percent >= 0:
        raise ThinsliceError(f"noise level must be >= 0 percent, got {noise_percent}")
    hr, _ = load_volume(truth_path)
    spacing = float(hr.spacing[axis])
    if hr.shape[axis] < 2 * factor:
        raise ThinsliceError(f"{truth_path}: {hr.shape[axis]} slices along axis {axis} are too few for factor {factor}")
    step = 1
    if target_spacing_mm is not None:
        step = int(round(target_spacing_mm / spacing))
        if step < 1 or abs(step * spacing - target_spacing_mm) > 1e-3 * target_spacing_mm:
            raise ThinsliceError(f"{truth_path}: target spacing {target_spacing_mm:g} mm is not a multiple of the "
                                 f"truth's {spacing:.4g} mm slices, so no truth lies on the output grid")
    lr = degrade(hr.data, axis, factor, profile, fwhm_mm, spacing)
    lr = rician(lr, noise_percent / 100 * float(np.percentile(hr.data, 99)))
    n_out = output_shape(lr.shape, axis, factor / step)[axis]
    index = [slice(None)] * 3
    index[axis] = slice(0, (n_out - 1) * step + 1, step)
    save_volume(hr.coarsened(lr, axis, factor), out_lr)
    save_volume(hr.coarsened(hr.data[tuple(index)], axis, step), out_truth)


def load_prepared(image: str | Path, geometry: str | Path) -> tuple[Volume, Geometry]:
    """The LR volume and its geometry record, as written by `prepare`."""
    return read_nifti(image), Geometry.load(geometry)
