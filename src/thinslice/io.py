"""The I/O layer: read NIfTI, NRRD, MHA or a DICOM series folder; write NIfTI atomically."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import ThinsliceError
from .volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    A failed write leaves nothing behind, and its OSError names `path` (a write to a full
    disk names no file, and the temporary's name would mean nothing to a user)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes) or ".tmp"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=suffix, dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def read_json(path: str | Path | None, kind: type = dict, fix: str = "fix it"):
    """The `kind` (dict or list) a JSON file holds (an empty one when no path is given), or a
    one-line error that ends with what to do (`fix`)."""
    if path is None:
        return kind()
    try:
        value = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ThinsliceError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(value, kind):
        raise ThinsliceError(f"{path}: holds a JSON {type(value).__name__}, not a {kind.__name__}; {fix}")
    return value


def write_json(path: str | Path, value, sort_keys: bool = False) -> None:
    """`value` as indented JSON at `path`, written atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")


def write_table(path: str | Path, columns: list[str], rows, delimiter: str = ",") -> None:
    """A CSV (or, with delimiter "\t", TSV) of `rows` (dicts; missing keys are empty cells), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter=delimiter, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in NIFTI_SUFFIXES[::-1] + SITK_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def read_nifti(path: str | Path) -> Volume:
    """A 3D NIfTI as a Volume (a trailing axis of length 1 is dropped); no input checks."""
    return nifti_volume(nib.load(str(path)), str(path))


def _has_no_voxel_size(path: Path) -> bool:
    """A NIfTI header without qform and sform whose pixdim is 0 along a spatial axis: nibabel
    reads it as 1 mm (with a warning), which would upsample along a wrong axis or to a wrong spacing."""
    img = nib.load(str(path))
    if int(img.header["qform_code"]) or int(img.header["sform_code"]):
        return False
    with nib.openers.ImageOpener(str(path)) as f:
        raw = type(img.header).from_fileobj(f, check=False)   # the header as stored, before nibabel's fixes
    return bool(np.any(np.asarray(raw["pixdim"][1:4]) == 0))


def nifti_volume(img, source: str) -> Volume:
    """A nibabel image (NIfTI or any image with an affine) as a Volume; a trailing axis of
    length 1 is dropped; no input checks."""
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise ThinsliceError(
            f"{source}: 4D image of shape {data.shape}; split it into 3D volumes first "
            f"(e.g. one file per echo or time point)")
    return Volume(np.asarray(data, dtype=np.float32), img.affine)


def _read_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ThinsliceError(f"{path}: has {img.GetNumberOfComponentsPerPixel()} components per voxel; "
                             f"give a scalar image")
    if img.GetDimension() != 3:
        raise ThinsliceError(f"{path}: {img.GetDimension()}D image; thinslice needs a 3D volume")
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (i, j, k)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.array(img.GetOrigin())
    return Volume(arr.astype(np.float32), affine)


def load_volume(path: str | Path, echo: int | None = None) -> tuple[Volume, dict]:
    """Read a scan. Returns the volume and geometry facts (`slice_thickness` when known).

    path: .nii/.nii.gz, .nrrd/.mha/.mhd, or a folder holding one DICOM series.
    echo: 1-based echo to take from a multi-echo DICOM series.
    """
    path = Path(path)
    if not path.exists():
        raise ThinsliceError(f"{path}: no such file or folder; check the path")
    meta: dict = {"slice_thickness": None}
    if path.is_dir():
        from .dicom import read_dicom_series

        vol, meta = read_dicom_series(path, echo=echo)
    else:
        suffix = _suffix(path)
        try:
            if suffix in NIFTI_SUFFIXES:
                if _has_no_voxel_size(path):
                    raise ThinsliceError(f"{path}: the header gives no voxel size (pixdim 0, no qform or sform); "
                                         f"write the voxel size into the header (e.g. nibabel set_zooms) first")
                vol = read_nifti(path)
            elif suffix in SITK_SUFFIXES:
                vol = _read_sitk(path)
            else:
                raise ThinsliceError(
                    f"{path}: unknown format '{suffix}'; give a NIfTI (.nii, .nii.gz), NRRD, MHA "
                    f"or a folder holding one DICOM series")
        except ThinsliceError:
            raise
        except ValueError as exc:  # Volume(): not 3D
            raise ThinsliceError(f"{path}: {exc}; thinslice needs a 3D volume") from None
        except Exception as exc:  # any reader failure: corrupt or truncated file
            # SimpleITK's first line only locates its own source file: skip it
            lines = [line.strip() for line in str(exc).splitlines()
                     if line.strip() and not line.startswith("Exception thrown in SimpleITK")]
            first = lines[0] if lines else type(exc).__name__
            raise ThinsliceError(f"{path}: cannot be read ({first}); is the file complete?") from None
    check_volume(vol, str(path))
    return vol, meta


def check_volume(vol: Volume, source: str) -> None:
    """Refuse what cannot be upsampled: 2D images, non-finite voxels, degenerate affines."""
    if min(vol.shape) < 2:
        raise ThinsliceError(f"{source}: shape {vol.shape} is a 2D image; thinslice needs a 3D volume")
    bad = ~np.isfinite(vol.data)
    if bad.any():
        raise ThinsliceError(f"{source}: {int(bad.sum())} voxels are NaN or Inf; "
                             f"replace them (e.g. with 0) before upsampling")
    if abs(np.linalg.det(vol.affine[:3, :3])) < 1e-9:
        raise ThinsliceError(f"{source}: degenerate affine (zero voxel size); fix the header")


# int16 first (MR scans are 12 to 16 bit): even an 8-bit scan keeps the room its output may
# overshoot into, and an output never clips where its input did not.
INTEGER_TYPES = ("int16", "uint16", "int32")


def integer_type(data: np.ndarray) -> str:
    """The first of INTEGER_TYPES that holds every value of `data` exactly, or "float32" when a
    value is not a whole number: the integer type a scan's voxels were stored in, near enough."""
    if data.size == 0 or not np.array_equal(data, np.rint(data)):
        return "float32"
    lo, hi = float(data.min()), float(data.max())
    for name in INTEGER_TYPES:
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return name
    return "float32"


def output_type(choice: str, data: np.ndarray) -> str:
    """The data type of outputs made from `data`: "float32", or for "input" its `integer_type`."""
    if choice not in ("float32", "input"):
        raise ThinsliceError(f"output_dtype must be 'float32' or 'input', got {choice!r}")
    return integer_type(data) if choice == "input" else "float32"


def save_volume(vol: Volume, path: str | Path, descrip: str = "", dtype: str = "float32") -> None:
    """Write a NIfTI with qform and sform set to the affine; atomic. `descrip` (what made it)
    goes into the header's description after the thinslice version; an integer `dtype`
    rounds and clips the voxels to its range."""
    with atomic_path(path) as tmp:
        nib.save(nifti_image(vol, descrip, dtype), tmp)


def nifti_image(vol: Volume, descrip: str = "", dtype: str = "float32") -> nib.Nifti1Image:
    """A NIfTI image (float32, or an integer `dtype`: rounded and clipped) with qform and sform
    set to the affine, units mm, and the header description "thinslice <version> <descrip>"
    (cut to the field's 80 bytes)."""
    from . import __version__

    data = np.asarray(vol.data, dtype=np.float32)
    if dtype != "float32":
        info = np.iinfo(dtype)
        converted = np.empty(data.shape, dtype)
        for i in range(0, len(data), 8):   # a few planes at a time: no float copy of a large volume
            converted[i:i + 8] = np.clip(np.rint(data[i:i + 8]), info.min, info.max)
        data = converted
    img = nib.Nifti1Image(data, vol.affine)
    img.set_qform(vol.affine, code=1)
    img.set_sform(vol.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = f"thinslice {__version__} {descrip}".strip().encode("ascii", "replace")[:80]
    return img
