"""The slice profile estimated from a scan itself, against the profile it was simulated with."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from thinslice.degrade import degrade
from thinslice.errors import ThinsliceError
from thinslice.geometry import describe
from thinslice.normalize import foreground_mask
from thinslice.slice_profile import estimate_fwhm, profile_mismatch

REPO_CH2 = Path(__file__).resolve().parents[1] / "resources" / "ch2.nii.gz"


@pytest.fixture(scope="module")
def ch2(tmp_path_factory):
    """Colin27 (real T1, 1 mm): the workflow's copy, else fetched."""
    from thinslice.fetch import fetch_ch2

    path = REPO_CH2
    if not path.exists():
        try:
            path = fetch_ch2(tmp_path_factory.mktemp("ch2") / "ch2.nii.gz")
        except ThinsliceError as exc:
            pytest.skip(f"ch2.nii.gz not available here: {exc}")
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def test_the_estimate_finds_the_simulated_fwhm_erring_thin(ch2):
    axis, spacings = 2, [1.0, 1.0, 4.0]   # the other axes give the same (README)
    for fwhm in (2.0, 4.0, 6.0):
        lr = degrade(ch2, axis, 4, "gaussian", fwhm, 1.0)    # 4 mm slice spacing
        estimate = estimate_fwhm(lr, foreground_mask(lr), axis, spacings)
        assert 0.75 * fwhm <= estimate <= 1.1 * fwhm, (axis, fwhm, estimate)


def test_too_few_slices_give_no_estimate(anatomical):
    data = anatomical[0][:, :, ::4]                        # 7 slices: no window of 8
    assert estimate_fwhm(data, foreground_mask(data), 2, [2.0, 2.0, 4.0]) is None


def test_a_header_that_disagrees_with_the_scan_is_a_warning():
    g = describe(np.diag([1.0, 1.0, 4.0, 1.0]), (8, 8, 20), None, 3.0, 4, None, (0.0, 1.0), "scan")
    g.header_thickness_mm, g.fwhm_estimate_mm = 3.0, 3.6          # within 25%
    assert profile_mismatch(g) is None
    g.fwhm_estimate_mm = 4.5
    assert "4.5 mm wide" in profile_mismatch(g) and "3 mm thick" in profile_mismatch(g)
    g.fwhm_estimate_mm, g.fwhm_wide_reading_mm = 2.0, 3.4       # the header within the two readings' span
    assert profile_mismatch(g) is None
    g.fwhm_estimate_mm, g.fwhm_wide_reading_mm = 1.2, 2.0       # both thinner by more than 25%
    assert "1.2 to 2 mm wide" in profile_mismatch(g)
    g.fwhm_estimate_mm = None
    assert profile_mismatch(g) is None


def test_prepare_warns_on_a_lying_header_and_auto_uses_the_estimate(ch2, tmp_path, capsys):
    from thinslice.cli import main
    from thinslice.geometry import Geometry, lr_affine

    lr = degrade(ch2, 2, 4, "gaussian", 6.0, 1.0)             # 6 mm profile at 4 mm spacing
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(lr, lr_affine(np.eye(4), 2, 4)), scan)
    outs = lambda name: ["--out-image", str(tmp_path / f"{name}.nii.gz"), "--out-geometry",   # noqa: E731
                         str(tmp_path / f"{name}.json"), "--out-mask", str(tmp_path / f"{name}_mask.nii.gz")]
    assert main(["prepare", "--input", str(scan), "--factor", "4", "--thickness", "3", *outs("header")]) == 0
    said = capsys.readouterr().out
    assert "warning:" in said and "header says 3 mm thick" in said
    header = Geometry.load(tmp_path / "header.json")
    assert header.thickness_mm == 3.0 and header.fwhm_estimate_mm == pytest.approx(6.0, rel=0.2)
    assert main(["prepare", "--input", str(scan), "--factor", "4", "--thickness", "auto", *outs("auto")]) == 0
    auto = Geometry.load(tmp_path / "auto.json")
    assert auto.thickness_mm == auto.fwhm_estimate_mm == header.fwhm_estimate_mm and auto.gap_mm == 0.0


def test_a_nifti_without_thickness_takes_the_estimate_only_well_below_the_spacing(ch2, tmp_path):
    """Every other slice of a scan keeps its thickness: half the new spacing, not all of it."""
    from thinslice.geometry import lr_affine
    from thinslice.prepare import prepare

    for fwhm, expected in ((8.0, 8.0), (12.0, 8.0), (4.0, 4.0)):   # contiguous, overlapping; a 4 mm gap
        lr = degrade(ch2, 2, 8, "gaussian", fwhm, 1.0)         # 8 mm spacing: 23 slices
        scan = tmp_path / f"fwhm{fwhm:g}.nii.gz"
        nib.save(nib.Nifti1Image(lr, lr_affine(np.eye(4), 2, 8)), scan)
        g = prepare(scan, tmp_path / "img.nii.gz", tmp_path / "g.json", tmp_path / "m.nii.gz", factor=2)
        assert g.header_thickness_mm is None and g.fwhm_estimate_mm is not None
        if fwhm >= 8.0:     # the estimate is close, or above: the spacing
            assert g.thickness_mm == 8.0 and g.gap_mm == 0.0
        else:
            assert g.thickness_mm == g.fwhm_estimate_mm == pytest.approx(expected, rel=0.2)
            assert g.gap_mm == pytest.approx(8.0 - g.thickness_mm)
