"""The ECLARE peer step against a stand-in `run-eclare` (tests/tools/fake_run_eclare.py) that has
ECLARE's command line and output grid: thinslice's output must land on its own grid at the
right world positions, with the arguments ECLARE expects, and failures must read as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import oblique_affine, write_fake_eclare
from thinslice.errors import ThinsliceError
from thinslice.evaluate import collect
from thinslice.geometry import Geometry, output_affine
from thinslice.io import read_nifti, save_volume
from thinslice.peer import run_eclare
from thinslice.volume import Volume


@pytest.fixture
def fake_eclare(tmp_path) -> str:
    """An executable run-eclare stand-in that runs with this interpreter."""
    return str(write_fake_eclare(tmp_path))


def prepared(tmp_path, affine, shape=(12, 10, 7), axis=2, factor=4, in_plane=(1.0, 1.0), thickness=4.0):
    """A prepared LR scan whose intensity is a linear function of the voxel index plus a constant."""
    i, j, k = np.indices(shape, dtype=np.float32)
    data = 100 + 3 * i - 2 * j + 11 * (i, j, k)[axis]
    image, geometry = tmp_path / "lr.nii.gz", tmp_path / "lr.json"
    save_volume(Volume(data, affine), image)
    Geometry(slice_axis=axis, spacing_mm=4.0, thickness_mm=thickness, gap_mm=0.0, factor=factor,
             in_plane_mm=in_plane, shape=shape, orientation="RAS", norm_low=0.0, norm_high=1.0).save(geometry)
    return image, geometry, data


@pytest.mark.parametrize("factor", [4, 3])
def test_output_lands_on_the_thinslice_grid(tmp_path, fake_eclare, factor, monkeypatch):
    affine = oblique_affine(spacing=(1.0, 1.0, 4.0))
    image, geometry, lr = prepared(tmp_path, affine, factor=factor)
    record = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_ECLARE_ARGV", str(record))
    out = tmp_path / "out" / "lr.nii.gz"
    out.parent.mkdir()
    run_eclare(str(image), str(geometry), str(out), command=fake_eclare, n_patches=640, batch_size=32, device="cpu")
    vol = read_nifti(out)
    assert vol.shape == (12, 10, (7 - 1) * factor + 1)
    assert np.allclose(vol.affine, output_affine(affine, 2, factor))
    # The stand-in upsamples x4 (4 mm / 1 mm) whatever the factor; the values along the slice
    # axis are linear, so ours must be that line at our slice positions k / factor.
    i, j, k = np.indices(vol.shape, dtype=np.float64)
    expected = 100 + 3 * i - 2 * j + 11 * k / factor
    inner = slice(factor, -factor)  # away from the spline's boundary handling
    assert np.abs(vol.data[:, :, inner] - expected[:, :, inner]).max() < 0.05
    assert np.abs(vol.data[:, :, ::factor] - lr).max() < 0.5  # real slice positions everywhere
    argv = json.loads(record.read_text())
    assert argv[argv.index("--relative-slice-thickness") + 1] == "4"
    assert argv[argv.index("--relative-slice-profile-type") + 1] == "boxcar"   # the default slice model, box
    assert argv[argv.index("--n-patches") + 1] == "640" and argv[argv.index("--gpu-id") + 1] == "-1"
    assert list(out.parent.iterdir()) == [out]  # ECLARE's own files are gone


def test_gaussian_slices_get_eclares_gaussian_profile(tmp_path, fake_eclare, monkeypatch):
    image, geometry, _ = prepared(tmp_path, np.diag([1.0, 1.0, 4.0, 1.0]))
    record = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_ECLARE_ARGV", str(record))
    run_eclare(str(image), str(geometry), str(tmp_path / "o.nii.gz"), command=fake_eclare, slice_model="gaussian",
               device="cpu")
    argv = json.loads(record.read_text())
    assert argv[argv.index("--relative-slice-profile-type") + 1] == "gaussian"


def test_failures_are_one_line_errors(tmp_path, fake_eclare, monkeypatch):
    image, geometry, _ = prepared(tmp_path, np.diag([1.0, 1.0, 4.0, 1.0]))
    out = str(tmp_path / "out.nii.gz")
    with pytest.raises(ThinsliceError, match="not found"):
        run_eclare(str(image), str(geometry), out, command=str(tmp_path / "no-such-run-eclare"), device="cpu")
    with pytest.raises(ThinsliceError, match="no ECLARE slice profile"):
        run_eclare(str(image), str(geometry), out, command=fake_eclare, slice_model="skip", device="cpu")
    monkeypatch.setenv("FAKE_ECLARE_FAIL", "1")
    with pytest.raises(ThinsliceError, match="exited with status 3") as failed:
        run_eclare(str(image), str(geometry), out, command=fake_eclare, device="cpu")
    assert "\n" not in str(failed.value)
    assert not Path(out).exists()


def test_slice_axis_must_be_the_coarsest(tmp_path, fake_eclare):
    # 4 mm slices but 5 mm in-plane voxels: ECLARE would upsample the wrong axis
    image, geometry, _ = prepared(tmp_path, np.diag([5.0, 1.0, 4.0, 1.0]))
    with pytest.raises(ThinsliceError, match="largest voxel size"):
        run_eclare(str(image), str(geometry), str(tmp_path / "o.nii.gz"), command=fake_eclare, device="cpu")


def test_collect_notes_skipped_methods(tmp_path):
    row = tmp_path / "row.json"
    row.write_text(json.dumps({"subject": "s", "method": "linear", "psnr": 30.0, "ssim": 0.9}))
    md = tmp_path / "summary.md"
    collect([row], tmp_path / "m.csv", tmp_path / "s.csv", md, skipped=["eclare: 'run-eclare' not found"])
    text = md.read_text()
    assert "| linear | 1 |" in text
    assert text.rstrip().endswith("- eclare: 'run-eclare' not found") and "Skipped methods:" in text
