"""The Python entry point: upsample one scan, held in memory or on disk, with a trained SR
model or by interpolation, and get a nibabel image back.

    import thinslice
    hr = thinslice.upsample("knee.nii.gz", model="results/my-study/models/sr_self.pt")
    hr.to_filename("knee_thin.nii.gz")
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib

from .errors import ThinsliceError
from .geometry import detect_slice_axis, resolve_ratio
from .interpolate import upsample as interpolate
from .io import check_volume, load_volume, nifti_image, nifti_volume
from .volume import Volume


def _as_volume(image, echo: int | None) -> tuple[Volume, str]:
    if isinstance(image, (str, Path)):
        return load_volume(image, echo=echo)[0], str(image)
    if not hasattr(image, "dataobj") or not hasattr(image, "affine"):
        raise ThinsliceError(f"upsample: give a nibabel image or a path, got {type(image).__name__}")
    vol = nifti_volume(image, "image")
    check_volume(vol, "image")
    return vol, "image"


def upsample(image, model: str | Path | None = None, *, method: str = "cubic", factor: int | None = None,
             target_spacing_mm: float | None = None, slice_axis: int | None = None, echo: int | None = None,
             keep_real_slices: bool = False, data_consistency: bool = False, device: str = "auto") -> nib.Nifti1Image:
    """The scan with a finer slice spacing, as a float32 NIfTI image.

    image:   a nibabel image, or a path to a NIfTI, NRRD, MHA or DICOM series folder
             (`echo`: which echo of a multi-echo series, 1-based).
    model:   an SR model file written by the workflow (results/<run>/models/sr_<source>.pt);
             its output spacing applies (or `target_spacing_mm`, no finer than the model's
             working spacing), and the scan's slice spacing must be the model's.
             Without a model, `method` ("linear" or "cubic") interpolates by the integer
             `factor`, or to any `target_spacing_mm`.
    slice_axis: the thick-slice axis (default: the axis of largest spacing).
    data_consistency: correct the SR output so that it re-acquires to the real slices.
    The output lies on the workflow's grid: its first slice on the first real slice, the
    input's affine with the slice-axis column divided by the ratio (slice spacing / output
    spacing), so it overlays the input in a viewer.
    Errors a user can fix raise thinslice.ThinsliceError.
    """
    vol, source = _as_volume(image, echo)
    if model is not None:
        if factor is not None:
            raise ThinsliceError("upsample: a model brings its own factor; leave factor out")
        from .steps import apply_model

        out, _, _ = apply_model(model, vol, source, keep_real_slices=keep_real_slices, device=device,
                                slice_axis=slice_axis, data_consistency=data_consistency,
                                target_spacing_mm=target_spacing_mm)
    else:
        if method not in ("linear", "cubic"):
            raise ThinsliceError(f"upsample: method must be 'linear' or 'cubic' without a model, got {method!r}")
        axis = detect_slice_axis(vol.spacing, source) if slice_axis is None else int(slice_axis)
        ratio = resolve_ratio(float(vol.spacing[axis]), factor, target_spacing_mm, source)
        out = vol.refined(interpolate(vol.data, axis, ratio, method), axis, ratio)
    return nifti_image(out)
