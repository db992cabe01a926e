"""The I/O layer: NIfTI round trips, NRRD/MHA in world coordinates, and bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_affine, rotation

from thinslice.cli import main
from thinslice.errors import INPUT_ERROR, ThinsliceError
from thinslice.io import atomic_path, load_volume, save_volume
from thinslice.volume import Volume


def _oblique_reflected() -> np.ndarray:
    aff = oblique_affine(spacing=(0.7, 0.9, 4.0), offset=(-31.5, 12.25, 40.0))
    return aff @ np.diag([-1.0, 1.0, 1.0, 1.0])  # a left-handed (radiological) voxel order too


def _indices(shape, n=20, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in shape], axis=1)


@pytest.mark.parametrize("name", ["x.nii.gz", "x.nii"])
def test_nifti_round_trip_keeps_affine_and_data(tmp_path, name):
    data = np.random.default_rng(0).normal(size=(7, 8, 5)).astype(np.float32) * 100
    aff = _oblique_reflected()
    path = tmp_path / name
    save_volume(Volume(data, aff), path)
    img = nib.load(path)
    assert img.get_data_dtype() == np.float32
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.get_sform(), aff, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), aff, atol=1e-4)
    assert img.header.get_xyzt_units()[0] == "mm"
    vol, meta = load_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    assert meta["slice_thickness"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


def test_nifti_with_singleton_fourth_axis_is_3d(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6, 1)
    nib.save(nib.Nifti1Image(data, np.diag([1, 1, 3, 1.0])), tmp_path / "a.nii.gz")
    vol, _ = load_volume(tmp_path / "a.nii.gz")
    assert vol.shape == (4, 5, 6) and vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, data[..., 0])


def _sitk_image() -> sitk.Image:
    arr = np.random.default_rng(1).normal(size=(6, 9, 11)).astype(np.float32)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.9, 4.0))
    img.SetOrigin((12.5, -30.0, 55.0))
    img.SetDirection(tuple(rotation((0.3, -1.0, 2.0), 17.0).ravel()))
    return img


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_sitk_formats_read_in_ras_world_coordinates(tmp_path, suffix):
    """Whatever the file format, voxel (i, j, k) lies at the RAS position SimpleITK gives (LPS, x/y negated)."""
    img = _sitk_image()
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(img, str(path))
    vol, _ = load_volume(path)
    assert vol.shape == img.GetSize()
    for ijk in _indices(vol.shape):
        lps = np.array(img.TransformIndexToPhysicalPoint([int(v) for v in ijk]))
        np.testing.assert_allclose(vol.world(ijk), lps * [-1, -1, 1], atol=1e-4)
        assert vol.data[tuple(ijk)] == pytest.approx(img.GetPixel(*[int(v) for v in ijk]))


def test_nrrd_mha_and_nifti_of_the_same_data_agree(tmp_path):
    img = _sitk_image()
    vols = {}
    for suffix in (".nrrd", ".mha", ".nii.gz"):
        sitk.WriteImage(img, str(tmp_path / f"scan{suffix}"))
        vols[suffix], _ = load_volume(tmp_path / f"scan{suffix}")
    for suffix in (".nrrd", ".mha"):
        np.testing.assert_array_equal(vols[suffix].data, vols[".nii.gz"].data)
        np.testing.assert_allclose(vols[suffix].affine, vols[".nii.gz"].affine, atol=1e-4)


def test_our_nifti_is_read_by_simpleitk_at_the_same_place(tmp_path):
    aff = _oblique_reflected()
    data = np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32)
    vol = Volume(data, aff)
    save_volume(vol, tmp_path / "ours.nii.gz")
    img = sitk.ReadImage(str(tmp_path / "ours.nii.gz"))
    for ijk in _indices(vol.shape, seed=3):
        lps = np.array(img.TransformIndexToPhysicalPoint([int(v) for v in ijk]))
        np.testing.assert_allclose(lps * [-1, -1, 1], vol.world(ijk), atol=1e-3)
        assert img.GetPixel(*[int(v) for v in ijk]) == pytest.approx(float(data[tuple(ijk)]))


# ---------------------------------------------------------------------------------------------
# bad input: one clear line naming the file


def _nifti(path: Path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([1, 1, 3, 1.0]) if affine is None else affine), path)
    return path


def _truncated(d: Path) -> Path:
    full = _nifti(d / "full.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    raw = full.read_bytes()
    bad = d / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    full.unlink()
    return bad


def _random_bytes(d: Path) -> Path:
    p = d / "noise.nii"
    p.write_bytes(np.random.default_rng(0).bytes(4000))
    return p


def _truncated_plain(d: Path) -> Path:
    full = _nifti(d / "full.nii", np.zeros((20, 20, 20), np.float32))
    raw = full.read_bytes()
    bad = d / "short.nii"
    bad.write_bytes(raw[:1000])
    full.unlink()
    return bad


def _with_value(value):
    def make(d: Path) -> Path:
        data = np.ones((6, 6, 6), np.float32)
        data[2, 3, 4] = value
        return _nifti(d / f"bad_{value}.nii.gz", data)
    return make


def _noise_nrrd(d: Path) -> Path:
    p = d / "noise.nrrd"
    p.write_bytes(np.random.default_rng(1).bytes(3000))
    return p


def _truncated_mha(d: Path) -> Path:
    p = d / "short.mha"
    header = (b"ObjectType = Image\nNDims = 3\nDimSize = 10 10 10\nElementType = MET_FLOAT\n"
              b"ElementSpacing = 1 1 3\nElementDataFile = LOCAL\n")
    p.write_bytes(header + bytes(100))
    return p


def _vector_nrrd(d: Path) -> Path:
    p = d / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 5, 5, 3), np.float32), isVector=True), str(p))
    return p


def _flat_nrrd(d: Path) -> Path:
    p = d / "plane.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 5), np.float32)), str(p))
    return p


BAD_INPUTS = {
    "noise_nrrd": (_noise_nrrd, "cannot be read (sitk::ERROR"),
    "truncated_mha": (_truncated_mha, "cannot be read (ITK ERROR"),
    "vector_nrrd": (_vector_nrrd, "components per voxel"),
    "2d_nrrd": (_flat_nrrd, "2D image"),
    "missing": (lambda d: d / "does_not_exist.nii.gz", "no such file"),
    "truncated_gz": (_truncated, "cannot be read"),
    "truncated_nii": (_truncated_plain, "cannot be read"),
    "random_bytes": (_random_bytes, "cannot be read"),
    "2d": (lambda d: _nifti(d / "slice.nii.gz", np.ones((10, 10, 1), np.float32)), "2D"),
    "4d": (lambda d: _nifti(d / "series.nii.gz", np.ones((4, 4, 4, 3), np.float32)), "4D"),
    "nan": (_with_value(np.nan), "NaN"),
    "inf": (_with_value(np.inf), "Inf"),
    "unknown_suffix": (lambda d: (d / "scan.txt").write_text("1 2 3") and d / "scan.txt", "unknown format"),
    "empty_gz": (lambda d: (d / "empty.nii.gz").write_bytes(gzip.compress(b"")) and d / "empty.nii.gz",
                 "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line_naming_the_file(tmp_path, case):
    make, words = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(ThinsliceError) as err:
        load_volume(path)
    msg = str(err.value)
    assert str(path) in msg
    assert words in msg
    assert "\n" not in msg


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_prepare_bad_input_is_an_input_error_and_leaves_nothing(tmp_path, capsys, case):
    make, words = BAD_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = make(inputs)
    out = tmp_path / "out"
    out.mkdir()
    targets = [out / "img.nii.gz", out / "geom.json", out / "mask.nii.gz"]
    rc = main(["prepare", "--input", str(path), "--factor", "2", "--out-image", str(targets[0]),
               "--out-geometry", str(targets[1]), "--out-mask", str(targets[2])])
    assert rc == INPUT_ERROR
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("thinslice: error: ")
    assert str(path) in lines[0] and words in lines[0]
    assert not any(t.exists() for t in targets)
    assert list(out.iterdir()) == []  # no stray temporary files either


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "x.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert [p.name for p in target.parent.iterdir()] == ["x.nii.gz"]


def test_degenerate_affine_is_refused(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.diag([1, 1, 0, 1.0]), code=1)
    path = tmp_path / "flat.nii.gz"
    nib.save(img, path)
    with pytest.raises(ThinsliceError, match="flat.nii.gz: degenerate affine"):
        load_volume(path)


def test_a_nifti_without_voxel_size_is_refused(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.float32), None)
    img.header.set_zooms((0.0, 0.0, 0.0))
    img.header["qform_code"] = img.header["sform_code"] = 0
    nib.save(img, tmp_path / "nozoom.nii.gz")
    with pytest.raises(ThinsliceError, match="no voxel size"):
        load_volume(tmp_path / "nozoom.nii.gz")
    img.header.set_zooms((0.5, 0.5, 3.0))   # the same file with its voxel size is read
    nib.save(img, tmp_path / "zoom.nii.gz")
    assert load_volume(tmp_path / "zoom.nii.gz")[0].spacing[2] == pytest.approx(3.0)


def test_integer_outputs_are_rounded_and_clipped_to_the_type_the_input_fits(tmp_path):
    from thinslice.io import integer_type

    assert integer_type(np.array([0.0, 255.0])) == "int16"          # 8-bit scans keep room to overshoot
    assert integer_type(np.array([0.0, 40000.0])) == "uint16"
    assert integer_type(np.array([-1.0, 40000.0])) == "int32"
    assert integer_type(np.array([0.0, 1.5])) == "float32"          # not whole numbers: a float scan
    vol = Volume(np.array([-40000.4, -2.6, 0.4, 7.5, 40000.0] * 2, np.float32).reshape(1, 2, 5), np.eye(4))
    save_volume(vol, tmp_path / "i.nii.gz", "cubic", "int16")
    img = nib.load(tmp_path / "i.nii.gz")
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj)[0, 0], [-32768, -3, 0, 8, 32767])
    assert img.header["descrip"].tobytes().rstrip(b"\0").decode().endswith(" cubic")
