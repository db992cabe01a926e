"""Read one DICOM MR series (one folder) into a Volume with a RAS+ affine.

Headers are scanned with pydicom: thinslice picks the echo, orders the slices and checks the
geometry itself. GDCM (through SimpleITK) decodes the pixels of the chosen files, in that order.
Only geometry leaves this module: the returned metadata dict holds slice thickness,
echo times, the echo used and the slice count, never names, dates or UIDs.

Array layout (same as NIfTI / nibabel):
    data[i, j, k]  i = column index, along the DICOM row direction IOP[:3]
                   j = row index, along the DICOM column direction IOP[3:]
                   k = slice index, sorted along the normal cross(IOP[:3], IOP[3:])
DICOM patient coordinates are LPS; the affine is RAS+ (x and y negated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from .errors import ThinsliceError
from .volume import Volume

__all__ = ["read_dicom_series"]

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_ECHO_DECIMALS = 3  # echo times are grouped after rounding to 1e-3 ms
_IOP_TOL = 1e-4  # max abs difference between direction cosines of one series
_SPACING_TOL = 1e-4  # mm, for PixelSpacing equality
_DUPLICATE_TOL = 1e-3  # mm; slices closer than this along the normal are duplicates
# Slice positions may stray from an evenly spaced line by this much: scanners store them
# rounded (often to 0.1 mm per coordinate), which on an oblique stack makes the gaps jitter.
_JITTER_MM = 0.2
_JITTER_REL = 0.02     # ... or by this share of the spacing, when that is more
_MISSING_GAP = 1.5     # a gap this many times the median means a missing slice
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class _Header:
    """Geometry of one DICOM file, read without pixel data."""

    path: Path
    syntax: str  # transfer syntax, named in decoding errors
    series_uid: str | None
    echo_time: float | None  # ms, rounded to _ECHO_DECIMALS
    iop: np.ndarray  # (6,) row cosine then column cosine, LPS
    ipp: np.ndarray  # (3,) position of the first transmitted pixel, LPS mm
    pixel_spacing: np.ndarray  # (2,) mm: [between rows, between columns]
    rows: int
    columns: int
    thickness: float | None  # mm


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(folder: Path, problem: str, fix: str) -> ThinsliceError:
    return ThinsliceError(_one_line(f"DICOM folder {folder}: {problem}; {fix}"))


def _read_header(path: Path) -> pydicom.Dataset | None:
    """Header of `path` without pixels, or None when the file is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass  # no "DICM" preamble: may still be a bare dataset, tried below
    except Exception as exc:  # has the DICOM magic but is broken
        raise ThinsliceError(
            _one_line(
                f"DICOM file {path}: cannot be read ({type(exc).__name__}: {exc}); "
                "remove or replace the damaged file"
            )
        ) from exc
    # Some scanners write datasets without the preamble. force=True parses anything,
    # so accept the result only if it looks like an image with geometry.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "SOPClassUID" in ds and "ImagePositionPatient" in ds and "Rows" in ds:
            return ds
    except Exception:
        pass
    return None


def _floats(ds: pydicom.Dataset, keyword: str, n: int, path: Path, folder: Path):
    value = ds.get(keyword)
    try:
        values = [float(v) for v in (value if value is not None else [])]
    except (TypeError, ValueError):
        values = []
    if len(values) != n:
        raise _fail(
            folder,
            f"file {path.name} has no valid {keyword} (need {n} numbers)",
            "thinslice needs MR images with full geometry; "
            "keep only the image files of one series here",
        )
    return np.array(values, dtype=np.float64)


def _optional_float(ds: pydicom.Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _parse(ds: pydicom.Dataset, path: Path, folder: Path) -> _Header:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    # GDCM inverts MONOCHROME1 pixels for display, which would change the stored signal;
    # MR scanners write MONOCHROME2.
    if photometric != "MONOCHROME2" or samples != 1:
        raise _fail(
            folder,
            f"file {path.name} is not a MONOCHROME2 greyscale image ({photometric}, SamplesPerPixel {samples})",
            "thinslice reads greyscale MR only: export the series as MONOCHROME2, one sample per pixel",
        )
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise _fail(
            folder,
            f"file {path.name} is a multi-frame (enhanced) image",
            "export the series as classic single-frame DICOM (one file per slice)",
        )
    iop = _floats(ds, "ImageOrientationPatient", 6, path, folder)
    row, col = iop[:3], iop[3:]
    norms = np.array([np.linalg.norm(row), np.linalg.norm(col)])
    if np.abs(norms - 1).max() > 1e-3 or abs(row @ col) > 1e-3:
        raise _fail(
            folder,
            f"file {path.name} has ImageOrientationPatient {_show(iop)}, "
            "not two orthonormal vectors",
            "fix the export; the image orientation is corrupt",
        )
    if not ds.get("Rows") or not ds.get("Columns"):
        raise _fail(
            folder,
            f"file {path.name} has no Rows/Columns (not an image)",
            "keep only the image files of one series here",
        )
    echo = _optional_float(ds, "EchoTime")
    uid = ds.get("SeriesInstanceUID")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return _Header(
        path=path,
        syntax=getattr(syntax, "name", None) or "not stated",
        series_uid=str(uid) if uid else None,
        echo_time=None if echo is None else round(echo, _ECHO_DECIMALS),
        iop=iop,
        ipp=_floats(ds, "ImagePositionPatient", 3, path, folder),
        pixel_spacing=_floats(ds, "PixelSpacing", 2, path, folder),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        thickness=_optional_float(ds, "SliceThickness"),
    )


def _scan(folder: str | Path) -> tuple[Path, list[_Header]]:
    """Headers of every DICOM image file directly in `folder` (sorted by file name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ThinsliceError(
            f"DICOM folder {folder}: does not exist or is not a folder; "
            "fix the path (the sample sheet's `path` in the workflow)"
        )
    headers = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        ds = _read_header(path)
        if ds is None:
            continue  # not DICOM (e.g. a README); fine as long as other files are
        sop_class = getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
        if sop_class == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            continue  # a DICOMDIR index, not an image
        headers.append(_parse(ds, path, folder))
    if not headers:
        raise _fail(
            folder,
            "contains no DICOM image files",
            "give a folder holding the files of one DICOM series",
        )
    return folder, headers


def _echo_times(headers: list[_Header], folder: Path) -> list[float]:
    times = {h.echo_time for h in headers}
    if None in times and len(times) > 1:
        raise _fail(
            folder,
            "some files have an EchoTime and some do not",
            "one series per folder: move the other files out",
        )
    return sorted(t for t in times if t is not None)


def _check_same(values: list, name: str, folder: Path, same) -> None:
    first = values[0]
    for v in values[1:]:
        if not same(first, v):
            raise _fail(
                folder,
                f"files differ in {name} ({_show(first)} vs {_show(v)})",
                "one series per folder: move the other series' files to their own folder",
            )


def _show(v) -> str:
    if isinstance(v, np.ndarray):
        return "[" + ", ".join(f"{x:g}" for x in v) + "]"
    return str(v)


def _select_echo(headers: list[_Header], echo: int | None, folder: Path):
    """(sorted echo times, 1-based echo used, headers of that echo)."""
    times = _echo_times(headers, folder)
    n = max(len(times), 1)
    if echo is None:
        if n > 1:
            listed = ", ".join(f"{t:g}" for t in times)
            raise _fail(
                folder,
                f"holds {n} echoes (EchoTime {listed} ms)",
                f"choose one (1..{n}) with --echo, or the sample sheet's `echo` column in the workflow",
            )
        echo = 1
    if isinstance(echo, bool) or not isinstance(echo, (int, np.integer)) or not 1 <= echo <= n:
        raise _fail(
            folder,
            f"echo {echo!r} is out of range: the folder holds {n} echo(es)",
            f"choose an echo from 1 to {n}",
        )
    echo = int(echo)
    if times:
        chosen = [h for h in headers if h.echo_time == times[echo - 1]]
    else:
        chosen = list(headers)
    return times, echo, chosen


def read_dicom_series(folder: str | Path, echo: int | None = None) -> tuple[Volume, dict]:
    """Read the single series in `folder` (non-recursive) as a Volume.

    echo: 1-based index into the sorted echo times; required when the folder holds
    several echoes. Returns (volume, meta): volume.data is float32 (columns, rows,
    slices) after RescaleSlope/Intercept, volume.affine maps voxel indices to RAS+ mm.
    meta = {"slice_thickness": mm or None, "echo_times": sorted ms, "echo": int,
    "n_slices": int}. Slice spacing is measured from ImagePositionPatient, never from
    SpacingBetweenSlices. Raises ThinsliceError for anything the user must fix.
    """
    folder, headers = _scan(folder)
    _check_same([h.series_uid for h in headers], "SeriesInstanceUID", folder, lambda a, b: a == b)
    times, echo, chosen = _select_echo(headers, echo, folder)

    _check_same([h.iop for h in chosen], "ImageOrientationPatient", folder,
                lambda a, b: np.abs(a - b).max() <= _IOP_TOL)
    _check_same([(h.rows, h.columns) for h in chosen], "Rows/Columns", folder, lambda a, b: a == b)
    _check_same([h.pixel_spacing for h in chosen], "PixelSpacing", folder,
                lambda a, b: np.abs(a - b).max() <= _SPACING_TOL)
    if len(chosen) < 2:
        raise _fail(
            folder,
            "holds a single slice (a 2D image)",
            "thinslice needs a series of at least 2 parallel slices",
        )

    first = chosen[0]
    row_cos, col_cos = first.iop[:3], first.iop[3:]
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    positions = np.array([h.ipp for h in chosen])  # (K, 3) LPS mm
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    chosen = [chosen[i] for i in order]
    positions, depth = positions[order], depth[order]

    gaps = np.diff(depth)
    if gaps.min() < _DUPLICATE_TOL:
        k = int(np.argmin(gaps))
        raise _fail(
            folder,
            f"files {chosen[k].path.name} and {chosen[k + 1].path.name} "
            "are at the same slice position",
            "one series per folder and one file per slice: remove duplicates or other acquisitions",
        )
    median = float(np.median(gaps))
    if gaps.max() > _MISSING_GAP * median:
        k = int(np.argmax(gaps))
        raise _fail(
            folder,
            f"a slice is missing: {gaps[k]:.4g} mm between {chosen[k].path.name} and "
            f"{chosen[k + 1].path.name}, where the other slices are {median:.4g} mm apart",
            "export the whole series; thinslice needs evenly spaced slices",
        )
    # the spacing of the line through all positions; each slice must lie near it
    index = np.arange(len(depth))
    spacing, start = np.polyfit(index, depth, 1)
    spacing = float(spacing)
    stray = float(np.abs(depth - (start + spacing * index)).max())
    if stray > max(_JITTER_MM, _JITTER_REL * spacing):
        raise _fail(
            folder,
            f"slice spacing is irregular (gaps {gaps.min():.4g} to {gaps.max():.4g} mm; a slice lies "
            f"{stray:.3g} mm off an even spacing of {spacing:.4g} mm)",
            "check for mixed stacks; thinslice needs evenly spaced slices",
        )
    # The affine puts slice k at origin + k*spacing*normal; a sheared stack (gantry
    # tilt) would be misplaced, so require positions on that line to 0.1 pixel (or to the
    # rounding of stored positions, when that is more).
    offaxis = (positions - positions[0]) - np.outer(depth - depth[0], normal)
    worst = float(np.linalg.norm(offaxis, axis=1).max())
    if worst > max(0.1 * float(first.pixel_spacing.min()), _JITTER_MM):
        raise _fail(
            folder,
            f"slice positions drift {worst:.3g} mm sideways from the slice normal "
            "(gantry tilt or sheared stack)",
            "resample to an orthogonal stack before using thinslice",
        )

    data = _decode(chosen, folder)
    row_step, col_step = first.pixel_spacing  # DICOM order: between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_step  # i walks along a row: one column per step
    lps[:3, 1] = col_cos * row_step  # j walks down a column: one row per step
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = positions[0]
    affine = np.eye(4)
    affine[:3, :] = _LPS_TO_RAS @ lps[:3, :]

    meta = {
        "slice_thickness": first.thickness,
        "echo_times": list(times),
        "echo": echo,
        "n_slices": len(chosen),
    }
    return Volume(data, affine), meta


def _decode(chosen: list[_Header], folder: Path) -> np.ndarray:
    """Modality values (RescaleSlope/Intercept applied per file), float32 (columns, rows, slices)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(h.path) for h in chosen])  # thinslice's slice order, kept as given
    reader.SetOutputPixelType(sitk.sitkFloat64)  # rescaled values exactly, before the float32 cast
    # The spacing was checked above, with a tolerance for positions stored rounded; ITK's own
    # check would warn about such stacks on stderr.
    reader.SetSpacingWarningRelThreshold(float("inf"))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        bad = next((h for h in chosen if not _decodes(h.path)), chosen[0])  # the file GDCM rejects
        reason = str(exc).strip().splitlines()[-1].split("): ")[-1]  # "ITK ERROR: GDCMImageIO(0x..): why"
        raise _fail(
            folder,
            f"cannot decode the pixel data of {bad.path.name} (transfer syntax {bad.syntax}; GDCM: {reason})",
            "re-export the series, or convert it to uncompressed DICOM (e.g. gdcmconv --raw)",
        ) from exc
    # SimpleITK's array is (slice, row, column) = (k, j, i)
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0), dtype=np.float32)


def _decodes(path: Path) -> bool:
    try:
        sitk.ReadImage(str(path))
        return True
    except RuntimeError:
        return False
