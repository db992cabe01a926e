"""The Snakemake workflow end to end on tiny projects built from nibabel's real T1.

Each project lives in a temporary folder and is run with
`snakemake --snakefile <repo>/Snakefile --directory <tmp> --configfile <cfg>`, so rule paths
are relative to the project and `python -m thinslice` must find the package through the
PYTHONPATH prefix the Snakefile sets (the package is not installed for these runs).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import REPO, output_tail, snakemake, write_fake_eclare
from thinslice.geometry import output_affine
from thinslice.io import load_volume

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.workflow


def _write_sheet(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(str(v) for v in r) + "\n" for r in rows))
    return path


def _write_config(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def _read_metrics(path: Path) -> dict:
    with open(path, newline="") as f:
        return {(r["subject"], r["method"]): r for r in csv.DictReader(f)}


def _world(affine, index):
    return np.asarray(index, float) @ affine[:3, :3].T + affine[:3, 3]


def _hidden_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


# ---------------------------------------------------------------------------------------------
# benchmark mode: simulate the LR scan from a ground truth

R_SIM = 3  # 25 slices = (9 - 1) * 3 + 1


def _truth_project(d: Path, anatomical_path: Path) -> Path:
    """A project folder whose one subject t1 is nibabel's real T1, as a ground truth."""
    (d / "data").mkdir()
    img = nib.load(anatomical_path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), d / "data" / "gt.nii.gz")
    _write_sheet(d / "samples.tsv", ["subject", "path"], [["t1", "data/gt.nii.gz"]])
    return d


@pytest.fixture(scope="module")
def simulated_project(tmp_path_factory, anatomical_path):
    d = _truth_project(tmp_path_factory.mktemp("sim"), anatomical_path)
    fake_eclare = write_fake_eclare(d)  # ECLARE's command line and output grid; linear interpolation inside
    _write_config(d / "bench.yaml", f"""
run: tiny
samples: samples.tsv
qc_figures: false
methods: [linear, cubic, eclare]
eclare:
  command: {fake_eclare}
  n_patches: 64
simulate:
  enabled: true
  axis: 2
  factor: {R_SIM}
  profile: gaussian
  fwhm_mm: {2.0 * R_SIM}
""")
    done = snakemake(d, "--cores", "2", "--configfile", "bench.yaml")
    assert done.returncode == 0, output_tail(done)
    return d


def test_simulated_metrics_cubic_beats_linear(simulated_project):
    out = simulated_project / "results" / "tiny"
    rows = _read_metrics(out / "metrics.csv")
    assert set(rows) == {("t1", "linear"), ("t1", "cubic"), ("t1", "eclare")}
    lin, cub = rows[("t1", "linear")], rows[("t1", "cubic")]
    for row in (lin, cub):
        assert 15 < float(row["psnr"]) < 60
        assert 0 < float(row["ssim"]) <= 1 and 0 < float(row["ssim_fg"]) <= 1
        assert 20 < float(row["consistency_psnr"]) < 99   # interpolation re-acquires blurred
    assert float(cub["psnr"]) > float(lin["psnr"])
    assert float(cub["ssim"]) > float(lin["ssim"])
    md = (out / "metrics_summary.md").read_text()
    assert "| linear | 1 |" in md and "| cubic | 1 |" in md


def test_eclare_peer_joins_the_table(simulated_project):
    """The stand-in ECLARE interpolates linearly on sub-slices that include ours (r = 3 is odd),
    so brought onto our grid it must score as linear does: a wrong grid would cost decibels."""
    out = simulated_project / "results" / "tiny"
    rows = _read_metrics(out / "metrics.csv")
    assert abs(float(rows[("t1", "eclare")]["psnr"]) - float(rows[("t1", "linear")]["psnr"])) < 0.05
    assert nib.load(out / "eclare" / "t1.nii.gz").shape == nib.load(out / "linear" / "t1.nii.gz").shape
    log = (simulated_project / "logs" / "tiny" / "eclare" / "t1.log").read_text()
    assert "--relative-slice-thickness 3" in log and "--n-patches 64" in log  # 6 mm FWHM / 2 mm in-plane
    assert "--relative-slice-profile-type gaussian" in log      # the slice model of a simulated run: its profile
    assert (out / "benchmarks" / "eclare" / "t1.tsv").exists()


def test_simulated_output_grid_follows_the_convention(simulated_project):
    out = simulated_project / "results" / "tiny"
    lr = nib.load(out / "simulated" / "t1.nii.gz")
    truth = nib.load(out / "truth" / "t1.nii.gz")
    gt = nib.load(simulated_project / "data" / "gt.nii.gz")
    assert lr.shape == (33, 41, 9)
    np.testing.assert_array_equal(np.asarray(truth.dataobj), np.asarray(gt.dataobj))
    for method in ("linear", "cubic"):
        img = nib.load(out / method / "t1.nii.gz")
        assert img.shape == (33, 41, (9 - 1) * R_SIM + 1)
        np.testing.assert_allclose(img.affine, output_affine(lr.affine, 2, R_SIM), atol=1e-5)
        # LR voxel (i, j, k) and output voxel (i, j, k*r) are the same point in the world
        idx = np.array([[0, 0, 0], [32, 40, 8], [5, 17, 3], [20, 3, 6]])
        hr_idx = idx * [1, 1, R_SIM]
        np.testing.assert_allclose(_world(img.affine, hr_idx), _world(lr.affine, idx), atol=1e-4)
        # the output overlays the ground truth voxel for voxel, and keeps the real slices
        np.testing.assert_allclose(img.affine, truth.affine, atol=1e-5)
        data = np.asarray(img.dataobj)
        np.testing.assert_allclose(data[:, :, ::R_SIM], np.asarray(lr.dataobj), rtol=1e-4, atol=0.5)


def test_simulated_figure_logs_and_no_leftovers(simulated_project):
    d = simulated_project
    png = d / "results" / "tiny" / "figures" / "reformats.png"
    head = png.read_bytes()
    assert head.startswith(PNG_MAGIC) and len(head) > 5000
    log = (d / "logs" / "tiny" / "prepare" / "t1.log").read_text()
    assert "slice axis 2" in log and "factor 3" in log and "thickness 6 mm" in log
    for rule in ("simulate/t1", "interpolate/cubic/t1", "evaluate/linear/t1", "collect_metrics", "figures/reformats"):
        assert (d / "logs" / "tiny" / f"{rule}.log").exists(), rule
    assert _hidden_files(d / "results") == []  # no temporary files left by atomic writes


# ---------------------------------------------------------------------------------------------
# scans given as files, with a ground truth column


# ---------------------------------------------------------------------------------------------
# any target spacing: 6 mm slices to a 4 mm grid (ratio 1.5), every method on the truth's samples

@pytest.fixture(scope="module")
def fractional_project(tmp_path_factory, anatomical_path):
    d = _truth_project(tmp_path_factory.mktemp("frac"), anatomical_path)
    _write_config(d / "bench.yaml", """
run: frac
samples: samples.tsv
methods: [linear, cubic, vae, sr_self]
target_spacing_mm: 4.0
simulate: {enabled: true, axis: 2, factor: 3, profile: gaussian, fwhm_mm: 6.0}
vae:
  train: {steps: 4, batch_size: 2, crop_size: 16, base_channels: 4, levels: 1, checkpoint_every: 2,
          kl_warmup_steps: 1}
sr:
  train: {steps: 4, batch_size: 2, patch_size: 16, channels: 4, depth: 1, checkpoint_every: 2}
""")
    done = snakemake(d, "--cores", "2", "--configfile", "bench.yaml")
    assert done.returncode == 0, output_tail(done)
    return d


def test_a_non_integer_ratio_lands_every_method_on_the_output_grid(fractional_project):
    out = fractional_project / "results" / "frac"
    lr, truth = nib.load(out / "simulated" / "t1.nii.gz"), nib.load(out / "truth" / "t1.nii.gz")
    assert lr.shape == (33, 41, 9)                     # 2 mm slices 0, 3, ..., 24: 6 mm apart
    gt = np.asarray(nib.load(fractional_project / "data" / "gt.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(truth.dataobj), gt[:, :, ::2])   # the truth's 4 mm samples
    rows = _read_metrics(out / "metrics.csv")
    for method in ("linear", "cubic", "vae", "sr_self"):
        img = nib.load(out / method / "t1.nii.gz")
        assert img.shape == (33, 41, 13), method        # 0, 4, ..., 48 mm: the first to the last real slice
        np.testing.assert_allclose(img.affine, truth.affine, atol=1e-5)
        # output slice 3 (12 mm) is real slice 2 (12 mm) in the world; slice 1 (4 mm) lies 2/3 of the way to it
        np.testing.assert_allclose(_world(img.affine, [[7, 9, 3]]), _world(lr.affine, [[7, 9, 2]]), atol=1e-4)
        np.testing.assert_allclose(_world(img.affine, [[7, 9, 1]]), _world(lr.affine, [[7, 9, 2 / 3]]), atol=1e-4)
        row = rows[("t1", method)]
        # scored on the truth's grid (4 training steps: the learned methods' scores are low, not NaN)
        assert 5 < float(row["psnr"]) < 60 and 5 < float(row["consistency_psnr"]) <= 99, (method, row)
        assert 1 <= float(row["periodic_artifact"]) < 10, (method, row)
    assert nib.load(out / "synthetic" / "t1.nii.gz").shape == (33, 41, 17)  # the VAE works at x2 (3 mm)
    assert float(rows[("t1", "cubic")]["psnr"]) > float(rows[("t1", "linear")]["psnr"])
    assert (out / "sr_self" / "t1_uncertainty.nii.gz").exists() and (out / "figures" / "reformats.png").exists()
    for view in ("reformats", "uncertainty"):   # the per-scan QC figures of the report
        assert (out / "qc" / f"t1_{view}.png").read_bytes().startswith(PNG_MAGIC)


# ---------------------------------------------------------------------------------------------
# BIDS in and out: a sample sheet from a BIDS dataset, the outputs as a derivatives dataset


def test_a_bids_dataset_in_and_a_derivatives_dataset_out(tmp_path, anatomical_path):
    import json

    img = nib.load(anatomical_path)
    thick = np.asanyarray(img.dataobj)[:, :, ::2]                    # 4 mm slices
    aff = img.affine.copy()
    aff[:3, 2] *= 2
    bids = tmp_path / "bids"
    (bids / "dataset_description.json").parent.mkdir()
    (bids / "dataset_description.json").write_text('{"Name": "tiny", "BIDSVersion": "1.9.0"}')
    (bids / "T2w.json").write_text('{"SliceThickness": 3.5}')      # inherited by every scan
    for folder, name in [("sub-01/anat", "sub-01_T2w"), ("sub-02/ses-a/anat", "sub-02_ses-a_T2w")]:
        (bids / folder).mkdir(parents=True)
        nib.save(nib.Nifti1Image(thick, aff), bids / folder / f"{name}.nii.gz")
    made = subprocess.run([sys.executable, "-m", "thinslice", "bids-samples", "bids",
                           "--out", "samples.tsv"], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "samples.tsv").read_text().splitlines()[1:] == [
        "sub-01\tbids/sub-01/anat/sub-01_T2w.nii.gz\t3.5", "sub-02_ses-a\tbids/sub-02/ses-a/anat/sub-02_ses-a_T2w.nii.gz\t3.5"]
    _write_config(tmp_path / "cfg.yaml", "run: b\nsamples: samples.tsv\nfactor: 2\nmethods: [cubic]\n"
                                          "qc_figures: false\nbids: {source_dataset: bids}")
    done = snakemake(tmp_path, "--cores", "2", "--configfile", "cfg.yaml")
    assert done.returncode == 0, output_tail(done)
    out = tmp_path / "results" / "b" / "bids"
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"] and desc["Name"]
    assert desc["GeneratedBy"][0]["Name"] == "thinslice" and desc["GeneratedBy"][0]["Version"]
    assert desc["SourceDatasets"][0]["URL"] == (tmp_path / "bids").as_uri()
    for name in ("sub-01/anat/sub-01_desc-cubic_T2w", "sub-02/ses-a/anat/sub-02_ses-a_desc-cubic_T2w"):
        nifti, sidecar = out / f"{name}.nii.gz", json.loads((out / f"{name}.json").read_text())
        assert nib.load(nifti).shape == (33, 41, 25)
        assert sidecar["SliceThickness"] == 3.5 and sidecar["SliceSpacing"] == pytest.approx(4.0)
        assert sidecar["OutputSliceSpacing"] == pytest.approx(2.0) and sidecar["UpsamplingRatio"] == 2
        assert sidecar["Sources"][0].startswith("bids/sub-0") and sidecar["ThinsliceVersion"]
        assert sidecar["Method"] in name and sidecar["SliceModel"] == "box"    # a real scan's default
        assert nib.load(nifti).header["descrip"].tobytes().startswith(b"thinslice ")
        assert nib.load(nifti).get_data_dtype() == np.int16     # output_dtype: input (a 16-bit scan)


@pytest.fixture(scope="module")
def scan_project(tmp_path_factory, anatomical_path):
    """Subject `a`: LR NIfTI + aligned truth. Subject `b`: the same LR as NRRD (slice axis
    auto-detected) + the same truth stored flipped along axis 0 with its affine adjusted.
    Subject `c`: the same LR + a cropped truth on its own grid, with spaces in both paths;
    the figure shows `c`."""
    d = tmp_path_factory.mktemp("scans")
    data_dir = d / "data"
    data_dir.mkdir()
    img = nib.load(anatomical_path)
    hr = np.asarray(img.dataobj, dtype=np.float32)
    r = 2
    # an independent slice model: Gaussian FWHM 4 mm on the 2 mm grid, slices 0, 2, 4, ...
    lr = ndimage.gaussian_filter1d(hr, (2.0 * r / 2.0) / 2.3548200450309493, axis=2, mode="nearest")[:, :, ::r]
    lr_aff = img.affine.copy()
    lr_aff[:3, 2] *= r
    nib.save(nib.Nifti1Image(lr, lr_aff), data_dir / "a_lr.nii.gz")
    nib.save(nib.Nifti1Image(hr, img.affine), data_dir / "a_truth.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(data_dir / "a_lr.nii.gz")), str(data_dir / "b_lr.nrrd"))
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, hr.shape[0] - 1
    nib.save(nib.Nifti1Image(hr[::-1].copy(), img.affine @ flip), data_dir / "b_truth.nii.gz")
    # subject c: the truth covers part of the field of view only, on its own grid
    crop_aff = img.affine.copy()
    crop_aff[:3, 3] = img.affine[:3, :3] @ [4, 3, 1] + img.affine[:3, 3]
    nib.save(nib.Nifti1Image(hr[4:, 3:, 1:], crop_aff), data_dir / "c truth.nii.gz")  # spaces in the names
    nib.save(nib.Nifti1Image(lr, lr_aff), data_dir / "c lr.nii.gz")
    _write_sheet(d / "samples.tsv", ["subject", "path", "slice_axis", "slice_thickness", "truth"], [
        ["a", "data/a_lr.nii.gz", 2, 4.0, "data/a_truth.nii.gz"],
        ["b", "data/b_lr.nrrd", "", 4.0, "data/b_truth.nii.gz"],
        ["c", "data/c lr.nii.gz", 2, 4.0, "data/c truth.nii.gz"],
    ])
    _write_config(d / "scans.yaml", f"""
run: scans
samples: samples.tsv
factor: {r}
qc_figures: false
methods: [linear, cubic]
figure:
  subject: c
""")
    done = snakemake(d, "--cores", "2", "--configfile", "scans.yaml")
    assert done.returncode == 0, output_tail(done)
    return d


def test_scans_with_truth_are_scored_in_world_coordinates(scan_project):
    rows = _read_metrics(scan_project / "results" / "scans" / "metrics.csv")
    assert set(rows) == {(s, m) for s in "abc" for m in ("linear", "cubic")}
    for s in "abc":
        assert float(rows[(s, "cubic")]["psnr"]) > float(rows[(s, "linear")]["psnr"])
    # b is a (NRRD scan, flipped truth) of the same data as a: the same numbers
    for m in ("linear", "cubic"):
        for key in ("psnr", "ssim", "ssim_fg", "sharpness"):
            assert float(rows[("b", m)][key]) == pytest.approx(float(rows[("a", m)][key]), rel=1e-3), (m, key)


def test_scan_figure_with_a_truth_on_another_grid(scan_project):
    png = scan_project / "results" / "scans" / "figures" / "reformats.png"
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000


def test_scan_outputs_overlay_their_inputs(scan_project):
    d = scan_project
    for s, src in (("a", "data/a_lr.nii.gz"), ("b", "data/b_lr.nrrd")):
        lr, _ = load_volume(d / src)
        out = nib.load(d / "results" / "scans" / "cubic" / f"{s}.nii.gz")
        assert out.shape == (33, 41, 25)
        np.testing.assert_allclose(out.affine, output_affine(lr.affine, 2, 2), atol=1e-4)
        np.testing.assert_allclose(np.asarray(out.dataobj)[:, :, ::2], lr.data, rtol=1e-4, atol=0.5)
    geo = (d / "results" / "scans" / "input" / "b.json").read_text()
    assert '"slice_axis": 2' in geo and '"thickness_mm": 4.0' in geo


# ---------------------------------------------------------------------------------------------
# lint


@pytest.mark.parametrize("configfile", [None, "config/ch2-z4.yaml"])
def test_lint_is_clean(configfile):
    args = ["--lint"] + (["--configfile", configfile] if configfile else [])
    done = snakemake(None, *args, timeout=120)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "Lints for" not in text, text[-3000:]
    assert "Congratulations" in text


@pytest.mark.parametrize("configfile, run, vae_steps, sr_steps",
                         [(None, "knee-demo", 700, 1200), ("config/ch2-z4.yaml", "ch2-z4", 2000, 6000)])
def test_a_configfile_does_not_inherit_the_demo_settings(tmp_path, configfile, run, vae_steps, sr_steps):
    """Without --configfile the demo's short training; with one, its keys and the schema's defaults."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    files = [f"results/{run}/settings/{name}.json" for name in ("vae_train", "sr_train")]
    done = snakemake(tmp_path, "--cores", "1", *files, *(["--configfile", configfile] if configfile else []),
                     timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    vae, sr = (json.loads((tmp_path / f).read_text()) for f in files)
    assert vae["steps"] == vae_steps and sr["steps"] == sr_steps


# ---------------------------------------------------------------------------------------------
# bad configuration: fails before any job runs, naming the key


BASE_SHEET = (["subject", "path"], [["t1", "data/gt.nii.gz"]])

BAD_CONFIGS = {
    "factor": ("factor: 1.5", BASE_SHEET, ["factor", "1.5"]),
    "methods": ("methods: [foo]", BASE_SHEET, ["methods", "foo"]),
    "unknown_key": ("upsampling_factor: 4", BASE_SHEET, ["upsampling_factor"]),
    "profile": ("simulate:\n  enabled: true\n  profile: bar", BASE_SHEET, ["profile", "bar"]),
    "missing_sheet": ("samples: nowhere.tsv", BASE_SHEET, ["samples", "nowhere.tsv"]),
    "figure_subject": ("figure:\n  subject: nobody", BASE_SHEET, ["figure.subject", "nobody"]),
    "missing_path": ("", (["subject", "path"], [["t1", "data/gt.nii.gz"], ["t2", "data/absent.nii.gz"]]),
                     ["samples.tsv", "line 3", "data/absent.nii.gz"]),
    "duplicate_subject": ("", (["subject", "path"], [["t1", "data/gt.nii.gz"], ["t1", "data/gt.nii.gz"]]),
                          ["samples.tsv", "line 3", "'t1'", "twice"]),
    "non_numeric_echo": ("", (["subject", "path", "echo"], [["t1", "data/gt.nii.gz", "first"]]),
                         ["samples.tsv", "line 2", "echo", "first"]),
    "echo_zero": ("", (["subject", "path", "echo"], [["t1", "data/gt.nii.gz", 0]]),
                  ["samples.tsv", "line 2", "echo", "minimum"]),
    "unknown_column": ("", (["subject", "path", "thicknes"], [["t1", "data/gt.nii.gz", 3]]),
                       ["samples.tsv", "thicknes"]),
    "missing_truth": ("", (["subject", "path", "truth"], [["t1", "data/gt.nii.gz", "data/no_truth.nii.gz"]]),
                      ["samples.tsv", "truth", "data/no_truth.nii.gz"]),
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, anatomical_path):
    d = tmp_path_factory.mktemp("gt")
    img = nib.load(anatomical_path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), d / "gt.nii.gz")
    return d / "gt.nii.gz"


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fails_before_any_job(tmp_path, tiny_data, case):
    extra, (header, rows), words = BAD_CONFIGS[case]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gt.nii.gz").symlink_to(tiny_data)
    _write_sheet(tmp_path / "samples.tsv", header, rows)
    cfg = "run: bad\nsamples: samples.tsv\n" + (extra + "\n" if extra else "")
    if "samples:" in extra:
        cfg = "run: bad\n" + extra + "\n"
    _write_config(tmp_path / "bad.yaml", cfg)
    # a real run (not -n): nothing may start, so no results/ or logs/ folder appears
    done = snakemake(tmp_path, "--cores", "1", "--configfile", "bad.yaml", timeout=120)
    text = done.stdout + done.stderr
    assert done.returncode != 0, text[-3000:]
    for w in words:
        assert w in text, (w, text[-3000:])
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "logs").exists()
    assert "Finished jobid" not in text and "localrule" not in text


def test_good_config_of_the_same_shape_is_accepted(tmp_path, tiny_data):
    """The negative cases above fail for their bad value, not for the scaffolding."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gt.nii.gz").symlink_to(tiny_data)
    _write_sheet(tmp_path / "samples.tsv", ["subject", "path", "echo", "truth"],
                 [["t1", "data/gt.nii.gz", 1, "data/gt.nii.gz"]])
    _write_config(tmp_path / "ok.yaml", "run: ok\nsamples: samples.tsv\nfactor: 2\nfigure:\n  subject: t1")
    done = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "ok.yaml", timeout=120)
    assert done.returncode == 0, output_tail(done)
    assert "prepare" in done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# a target spacing that cannot be, found at run time


def test_a_target_coarser_than_the_slices_fails_in_prepare_and_leaves_nothing(tmp_path, tiny_data):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gt.nii.gz").symlink_to(tiny_data)
    _write_sheet(tmp_path / "samples.tsv", ["subject", "path", "slice_axis"], [["t1", "data/gt.nii.gz", 2]])
    _write_config(tmp_path / "cfg.yaml", "run: frac\nsamples: samples.tsv\ntarget_spacing_mm: 2.5")
    done = snakemake(tmp_path, "--cores", "1", "--configfile", "cfg.yaml")
    assert done.returncode != 0, output_tail(done)
    log = (tmp_path / "logs" / "frac" / "prepare" / "t1.log").read_text().strip().splitlines()
    assert len(log) == 1, log
    assert log[0].startswith("thinslice prepare: error: data/gt.nii.gz:")
    assert "not finer" in log[0] and "2.5" in log[0]
    assert log[0] in done.stderr.splitlines(), output_tail(done)   # on the console too, not only in the log
    inputs = tmp_path / "results" / "frac" / "input"
    assert not inputs.exists() or list(inputs.iterdir()) == []
    assert not (tmp_path / "results" / "frac" / "cubic").exists()


# ---------------------------------------------------------------------------------------------
# the results folder cannot be written: one line before any job


@pytest.mark.parametrize("blocker", ["file", "read_only"])
def test_an_unwritable_results_folder_fails_before_any_job(tmp_path, tiny_data, blocker):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gt.nii.gz").symlink_to(tiny_data)
    _write_sheet(tmp_path / "samples.tsv", ["subject", "path"], [["t1", "data/gt.nii.gz"]])
    _write_config(tmp_path / "cfg.yaml", "run: blocked\nsamples: samples.tsv\nmethods: [cubic]")
    results = tmp_path / "results"
    if blocker == "file":
        results.mkdir()
        (results / "blocked").write_text("a stray file")
        words = ["results/blocked is a file", "move or rename"]
    else:
        results.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(results)],
                                 capture_output=True).returncode == 0
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root writes any folder, and no read-only tmpfs can be mounted here")
            results.chmod(0o555)
        words = ["results is not writable", "read-only"]
    try:
        done = snakemake(tmp_path, "--cores", "1", "--configfile", "cfg.yaml", timeout=120)
    finally:
        if blocker == "read_only":
            subprocess.run(["umount", str(results)], capture_output=True)
            results.chmod(0o755)
    text = done.stdout + done.stderr
    assert done.returncode != 0
    for w in words:
        assert w in text, (w, text[-3000:])
    assert "localrule" not in text and not (tmp_path / "logs").exists()
