"""Per-subject steps on nibabel's real T1: simulate, prepare, upsample, evaluate, collect."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

from thinslice.cli import main
from thinslice.degrade import degrade
from thinslice.errors import INPUT_ERROR, ThinsliceError
from thinslice.evaluate import COLUMNS, collect, evaluate, write_row
from thinslice.geometry import Geometry, lr_affine, output_affine
from thinslice.normalize import foreground_mask, robust_range
from thinslice.prepare import prepare, rician, simulate


def _outs(d):
    return d / "img.nii.gz", d / "geom.json", d / "mask.nii.gz"


def test_prepare_records_the_geometry_of_a_real_scan(tmp_path, anatomical_path, anatomical):
    data, aff = anatomical
    img, geo, msk = _outs(tmp_path)
    g = prepare(anatomical_path, img, geo, msk, slice_axis=2, factor=2)
    assert (g.slice_axis, g.factor) == (2, 2)
    assert g.spacing_mm == pytest.approx(2.0)
    assert g.thickness_mm == pytest.approx(2.0)  # defaults to the spacing
    assert g.gap_mm == 0.0
    assert g.in_plane_mm == pytest.approx((2.0, 2.0))
    assert g.shape == (33, 41, 25)
    assert g.orientation == "".join(nib.aff2axcodes(aff))
    assert data.min() <= g.norm_low < g.norm_high <= data.max()
    assert Geometry.load(geo) == g
    # the image is written unchanged, on the input's grid
    out = nib.load(img)
    np.testing.assert_array_equal(np.asarray(out.dataobj), data)
    np.testing.assert_allclose(out.affine, aff, atol=1e-5)
    mask = np.asarray(nib.load(msk).dataobj)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert 0.3 < mask.mean() < 0.98  # a brain crop: bright tissue, not the dark ventricles
    assert data[mask > 0].mean() > data[mask == 0].mean()
    assert mask[:, :, 0].mean() > 0.3 and mask[:, :, -1].mean() > 0.3  # first and last slices are kept
    np.testing.assert_allclose(nib.load(msk).affine, aff, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["geom.json", "img.nii.gz", "mask.nii.gz"]


def test_foreground_mask_of_an_object_touching_the_field_of_view():
    """Thick-slice scans often cut through anatomy: the first and last slices stay in the mask."""
    data = np.zeros((30, 20, 8), np.float32)
    data[:20] = 100.0  # touches five faces of the volume
    data[8:11, 8:11, 3:5] = 0.0  # an inner hole: filled
    data[26:28, 2:4, 2:4] = 100.0  # a small separate blob: dropped (largest part only)
    mask = foreground_mask(data)
    expected = np.zeros(data.shape, bool)
    expected[:20] = True
    np.testing.assert_array_equal(mask, expected)


def test_foreground_mask_separates_object_from_background():
    data = np.zeros((24, 24, 10), np.float32)
    data[6:18, 5:19, 2:8] = 50.0
    mask = foreground_mask(data)
    np.testing.assert_array_equal(mask, data > 0)
    assert not foreground_mask(np.full((5, 5, 5), 3.0)).any()


def test_robust_range_of_a_constant_image_is_an_error():
    with pytest.raises(ThinsliceError, match="scan.nii: image is constant"):
        robust_range(np.full((4, 4, 4), 7.0), source="scan.nii")
    low, high = robust_range(np.arange(1000.0).reshape(10, 10, 10))
    assert low == pytest.approx(4.995) and high == pytest.approx(994.005)


def test_prepare_default_slice_axis_is_largest_spacing(tmp_path, anatomical_path, anatomical):
    data, aff = anatomical
    thick = tmp_path / "thick.nii.gz"
    a = aff.copy()
    a[:3, 1] *= 2  # 4 mm along axis 1
    nib.save(nib.Nifti1Image(data, a), thick)
    g = prepare(thick, *_outs(tmp_path), target_spacing_mm=1.0)
    assert g.slice_axis == 1 and g.spacing_mm == pytest.approx(4.0) and g.factor == 4


def test_prepare_thin_slices_have_a_gap(tmp_path, anatomical_path):
    g = prepare(anatomical_path, *_outs(tmp_path), slice_axis=2, thickness_mm=1.5, factor=2)
    assert g.thickness_mm == 1.5
    assert g.gap_mm == pytest.approx(0.5)
    g = prepare(anatomical_path, *_outs(tmp_path), slice_axis=2, thickness_mm=3.0, factor=2)
    assert g.gap_mm == 0.0


def test_prepare_a_target_coarser_than_the_slices_writes_nothing(tmp_path, anatomical_path):
    out = tmp_path / "out"
    with pytest.raises(ThinsliceError) as err:
        prepare(anatomical_path, *_outs(out), slice_axis=2, target_spacing_mm=2.5)
    assert str(anatomical_path) in str(err.value) and "not finer" in str(err.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_prepare_a_target_coarser_than_the_slices(tmp_path, anatomical_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    img, geo, msk = _outs(out)
    rc = main(["prepare", "--input", str(anatomical_path), "--slice-axis", "2", "--target-spacing", "2.5",
               "--out-image", str(img), "--out-geometry", str(geo), "--out-mask", str(msk)])
    assert rc == INPUT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("thinslice: error: ") and "not finer" in err[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("r", [2, 3, 4])
def test_simulate_lr_and_truth_grids(tmp_path, anatomical_path, anatomical, r):
    data, aff = anatomical
    src = tmp_path / "gt.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, :24], aff), src)  # 24 slices: not (n-1)*r+1 for r = 2, 3, 4
    lr_p, truth_p = tmp_path / "lr.nii.gz", tmp_path / "truth.nii.gz"
    simulate(src, lr_p, truth_p, axis=2, factor=r, profile="gaussian", fwhm_mm=2.0 * r)
    lr, truth = nib.load(lr_p), nib.load(truth_p)
    n_lr = (24 - 1) // r + 1
    assert lr.shape == (33, 41, n_lr)
    assert truth.shape == (33, 41, (n_lr - 1) * r + 1)
    np.testing.assert_allclose(lr.affine, lr_affine(aff, 2, r), atol=1e-5)
    np.testing.assert_allclose(truth.affine, aff, atol=1e-5)
    # the xr output grid of the LR scan is the truth's grid
    np.testing.assert_allclose(output_affine(lr.affine, 2, r), truth.affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lr.dataobj), degrade(data[:, :, :24], 2, r, "gaussian", 2.0 * r, 2.0),
                               rtol=1e-5, atol=1e-2)
    np.testing.assert_array_equal(np.asarray(truth.dataobj), data[:, :, :(n_lr - 1) * r + 1])


def test_rician_noise_statistics():
    # Rayleigh in the air (mean sigma * sqrt(pi / 2)); about Gaussian on bright tissue
    sigma = 3.0
    air = rician(np.zeros((64, 64, 16)), sigma, seed=1)
    assert air.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.02)
    tissue = rician(np.full((64, 64, 16), 100.0), sigma, seed=1)
    assert tissue.std() == pytest.approx(sigma, rel=0.03)
    assert tissue.mean() == pytest.approx(100.0, abs=0.2)
    assert np.array_equal(rician(np.ones((2, 2, 2)), 0.0), np.ones((2, 2, 2), np.float32))


def test_simulate_noise_on_the_thick_slices_only(tmp_path, anatomical):
    data, aff = anatomical
    src = tmp_path / "gt.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, :24], aff), src)
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    for out, noise in ((clean, 0.0), (noisy, 5.0)):
        out.mkdir()
        simulate(src, out / "lr.nii.gz", out / "truth.nii.gz", 2, 3, "gaussian", 6.0, noise_percent=noise)
    difference = nib.load(noisy / "lr.nii.gz").get_fdata() - nib.load(clean / "lr.nii.gz").get_fdata()
    bright = nib.load(clean / "lr.nii.gz").get_fdata() > np.percentile(data, 90)
    expected = 0.05 * np.percentile(data[:, :, :24], 99)
    assert difference[bright].std() == pytest.approx(expected, rel=0.2)
    assert np.array_equal(nib.load(noisy / "truth.nii.gz").get_fdata(), nib.load(clean / "truth.nii.gz").get_fdata())
    with pytest.raises(ThinsliceError, match="noise"):
        simulate(src, tmp_path / "x.nii.gz", tmp_path / "y.nii.gz", 2, 3, "gaussian", 6.0, noise_percent=-1)


def test_simulate_refuses_too_few_slices(tmp_path, anatomical):
    data, aff = anatomical
    src = tmp_path / "gt.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, :5], aff), src)
    with pytest.raises(ThinsliceError, match="too few"):
        simulate(src, tmp_path / "lr.nii.gz", tmp_path / "t.nii.gz", 2, 4, "gaussian", 8.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.nii.gz"]


def test_upsample_and_evaluate_on_a_real_t1(tmp_path, anatomical_path):
    """simulate -> prepare -> upsample -> evaluate through the CLI; cubic beats linear."""
    d = tmp_path
    assert main(["simulate", "--truth", str(anatomical_path), "--out-lr", str(d / "lr.nii.gz"),
                 "--out-truth", str(d / "truth.nii.gz"), "--axis", "2", "--factor", "3", "--fwhm", "6"]) == 0
    assert main(["prepare", "--input", str(d / "lr.nii.gz"), "--slice-axis", "2", "--thickness", "6",
                 "--factor", "3", "--out-image", str(d / "in.nii.gz"), "--out-geometry", str(d / "g.json"),
                 "--out-mask", str(d / "m.nii.gz")]) == 0
    rows = {}
    lr = nib.load(d / "lr.nii.gz")
    for method in ("linear", "cubic"):
        out = d / f"{method}.nii.gz"
        assert main(["upsample", "--method", method, "--image", str(d / "in.nii.gz"),
                     "--geometry", str(d / "g.json"), "--out", str(out)]) == 0
        img = nib.load(out)
        assert img.shape == (33, 41, 25)
        np.testing.assert_allclose(img.affine, output_affine(lr.affine, 2, 3), atol=1e-5)
        np.testing.assert_allclose(np.asarray(img.dataobj)[:, :, ::3], np.asarray(lr.dataobj), rtol=1e-4, atol=0.5)
        assert main(["evaluate", "--output", str(out), "--image", str(d / "in.nii.gz"), "--geometry",
                     str(d / "g.json"), "--mask", str(d / "m.nii.gz"), "--truth", str(d / "truth.nii.gz"),
                     "--subject", "t1", "--method", method, "--out", str(d / f"{method}.json")]) == 0
        rows[method] = json.loads((d / f"{method}.json").read_text())
    for row in rows.values():
        assert set(COLUMNS) <= set(row)
        assert 20 < row["consistency_psnr"] < 99
        assert 15 < row["psnr"] < 60 and 0 < row["ssim"] <= 1 and 0 < row["ssim_fg"] <= 1
    assert rows["cubic"]["psnr"] > rows["linear"]["psnr"]
    assert rows["cubic"]["ssim"] > rows["linear"]["ssim"]


def test_evaluate_without_truth_has_no_psnr(tmp_path, anatomical_path):
    d = tmp_path
    prepare(anatomical_path, d / "in.nii.gz", d / "g.json", d / "m.nii.gz", slice_axis=2, factor=2)
    assert main(["upsample", "--method", "cubic", "--image", str(d / "in.nii.gz"), "--geometry",
                 str(d / "g.json"), "--out", str(d / "cubic.nii.gz")]) == 0
    row = evaluate(d / "cubic.nii.gz", d / "in.nii.gz", d / "g.json", d / "m.nii.gz", "s", "cubic")
    assert math.isnan(row["psnr"]) and math.isnan(row["ssim"])
    assert row["sharpness"] > 0 and 20 < row["consistency_psnr"] < 99
    assert 1.0 <= row["periodic_artifact"] < 2.0   # interpolation is barely periodic


def _fake_rows(d):
    rows = [
        {"subject": "b", "method": "linear", "psnr": 28.0, "ssim": 0.90, "ssim_fg": 0.88, "sharpness": 0.04,
         "consistency_psnr": 40.0},
        {"subject": "a", "method": "linear", "psnr": 30.0, "ssim": 0.92, "ssim_fg": 0.90, "sharpness": 0.05,
         "consistency_psnr": 40.0},
        {"subject": "a", "method": "cubic", "psnr": math.nan, "ssim": math.nan, "ssim_fg": math.nan,
         "sharpness": 0.06, "consistency_psnr": 38.0},
    ]
    paths = []
    for i, r in enumerate(rows):
        p = d / f"row{i}.json"
        write_row(r, p)
        paths.append(p)
    return paths


def test_collect_writes_the_table_and_summary(tmp_path):
    paths = _fake_rows(tmp_path)
    out = tmp_path / "res"
    collect(paths, out / "metrics.csv", out / "summary.csv", out / "summary.md")
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["subject", "method", "psnr", "ssim", "ssim_fg", "sharpness",
                                     "periodic_artifact", "consistency_psnr"]
        table = list(reader)
    # grouped by subject, methods in the order given (the config's order in the workflow)
    assert [(r["subject"], r["method"]) for r in table] == [("a", "linear"), ("a", "cubic"), ("b", "linear")]
    assert float(table[0]["psnr"]) == 30.0 and float(table[2]["ssim"]) == 0.9
    assert table[1]["psnr"] == ""  # NaN (no truth) is an empty cell
    with open(out / "summary.csv", newline="") as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    assert summary["linear"]["n"] == "2"
    assert float(summary["linear"]["psnr_mean"]) == pytest.approx(29.0)
    assert float(summary["linear"]["psnr_sd"]) == pytest.approx(math.sqrt(2.0), rel=1e-5)
    assert summary["cubic"]["psnr_mean"] == "" and summary["cubic"]["n"] == "1"
    md = (out / "summary.md").read_text().splitlines()
    assert md[0] == "| method | n | psnr | ssim | ssim_fg | sharpness | periodic_artifact | consistency_psnr |"
    assert md[1].startswith("|---|---|")
    lines = {line.split("|")[1].strip(): line for line in md[2:]}
    assert list(lines) == ["linear", "cubic"]
    assert "| 2 | 29.00 ± 1.41 | 0.9100 ± 0.0141 |" in lines["linear"]
    assert "| 1 | – |" in lines["cubic"]  # no PSNR without a truth
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.csv", "summary.md"]


def test_nearest_lr_panel_is_centred_on_the_real_slices():
    from thinslice.interpolate import nearest_upsample

    lr = np.arange(4, dtype=np.float32).reshape(1, 1, 4) * 10
    np.testing.assert_array_equal(nearest_upsample(lr, 2, 4)[0, 0],
                                  [0, 0, 10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30])
    np.testing.assert_array_equal(nearest_upsample(lr, 2, 3)[0, 0], [0, 0, 10, 10, 10, 20, 20, 20, 30, 30])
    out = nearest_upsample(np.random.default_rng(0).normal(size=(5, 3, 4)), 0, 3)
    assert out.shape == (13, 3, 4)


def test_cli_figure_writes_a_png(tmp_path, anatomical_path):
    d = tmp_path
    assert main(["simulate", "--truth", str(anatomical_path), "--out-lr", str(d / "lr.nii.gz"),
                 "--out-truth", str(d / "truth.nii.gz"), "--axis", "2", "--factor", "2", "--fwhm", "4"]) == 0
    assert main(["prepare", "--input", str(d / "lr.nii.gz"), "--factor", "2", "--out-image", str(d / "in.nii.gz"),
                 "--out-geometry", str(d / "g.json"), "--out-mask", str(d / "m.nii.gz")]) == 0
    assert main(["upsample", "--method", "linear", "--image", str(d / "in.nii.gz"), "--geometry", str(d / "g.json"),
                 "--out", str(d / "linear.nii.gz")]) == 0
    png = d / "fig" / "methods.png"
    assert main(["figure", "--image", str(d / "in.nii.gz"), "--geometry", str(d / "g.json"), "--methods", "linear",
                 "--outputs", str(d / "linear.nii.gz"), "--truth", str(d / "truth.nii.gz"), "--title", "t",
                 "--out", str(png)]) == 0
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300 and pixels.std() > 0.05
    assert [p.name for p in png.parent.iterdir()] == ["methods.png"]


def test_figure_truth_is_resampled_onto_the_output_grid(tmp_path, anatomical):
    """A truth column may hold any grid: flipped or cropped, the figures show it where it belongs."""
    from thinslice.scene import Scene

    hr, aff = anatomical
    r = 2
    lr_aff = lr_affine(aff, 2, r)
    nib.save(nib.Nifti1Image(hr[:, :, ::r], lr_aff), tmp_path / "lr.nii.gz")
    Geometry(slice_axis=2, spacing_mm=4.0, thickness_mm=4.0, gap_mm=0.0, factor=r, in_plane_mm=(2.0, 2.0),
             shape=(33, 41, 13), orientation="LAS", norm_low=0.0, norm_high=1.0).save(tmp_path / "lr.json")

    def truth_on_output_grid(path):
        """The scene's truth and coverage, back in the output grid's voxel order (LAS: x flipped)."""
        sc = Scene.load(tmp_path / "lr.nii.gz", tmp_path / "lr.json", {}, truth_path=path, crop=False)
        assert sc.orientation.codes == "LAS"
        return sc.truth.ras[::-1], sc.inside[::-1]

    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, hr.shape[0] - 1
    nib.save(nib.Nifti1Image(hr[::-1].copy(), aff @ flip), tmp_path / "flipped.nii.gz")
    got, inside = truth_on_output_grid(tmp_path / "flipped.nii.gz")
    np.testing.assert_allclose(got, hr, atol=1e-2)
    assert inside.all()
    crop_aff = aff.copy()
    crop_aff[:3, 3] = aff[:3, :3] @ [3, 0, 2] + aff[:3, 3]
    nib.save(nib.Nifti1Image(hr[3:, :, 2:], crop_aff), tmp_path / "cropped.nii.gz")
    got, inside = truth_on_output_grid(tmp_path / "cropped.nii.gz")
    assert got.shape == hr.shape
    np.testing.assert_allclose(got[3:, :, 2:], hr[3:, :, 2:], atol=1e-2)
    assert not got[:3].any() and not got[:, :, :2].any()  # outside the truth's field of view
    assert inside[3:, :, 2:].all() and not inside[:3].any() and not inside[:, :, :2].any()
