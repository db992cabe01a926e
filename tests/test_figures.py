"""Figures: every figure writes a real PNG on real data (nibabel's T1 as the truth, a simulated
thick-slice scan, cubic upsampling, stand-ins for the learned outputs), with and without a
ground truth; the anatomical orientation of the views; the figure rules and the HTML report."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import job_stats, oblique_affine, snakemake
from thinslice import figures, plots
from thinslice.cli import main
from thinslice.errors import INPUT_ERROR
from thinslice.degrade import degrade
from thinslice.errors import ThinsliceError
from thinslice.geometry import Geometry, lr_affine, output_affine
from thinslice.interpolate import upsample
from thinslice.scene import (EDGE_LETTERS, PLANE_NAMES, Orientation, Scene, display_position, plane_axes,
                             plane_section, profile_line, zoom_box)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
R = 3  # 25 slices of the T1 = (9 - 1) * 3 + 1: the output grid coincides with the truth


def assert_png(path: Path, min_side: int = 200) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = matplotlib.image.imread(path)
    assert min(pixels.shape[:2]) >= min_side and pixels[..., :3].std() > 0.05, (path, pixels.shape)


@pytest.fixture(scope="module")
def subject(tmp_path_factory, anatomical):
    """Files of one subject as a run holds them: LR, geometry, outputs on the output grid,
    the truth, the degraded synthetic LR, loss logs and metric tables."""
    d = tmp_path_factory.mktemp("fig")
    hr, aff = anatomical
    lr = degrade(hr, 2, R, "gaussian", 2.0 * R, 2.0)
    laff = lr_affine(aff, 2, R)
    nib.save(nib.Nifti1Image(lr, laff), d / "lr.nii.gz")
    Geometry(slice_axis=2, spacing_mm=2.0 * R, thickness_mm=2.0 * R, gap_mm=0.0, factor=R, in_plane_mm=(2.0, 2.0),
             shape=lr.shape, orientation="LAS", norm_low=0.0, norm_high=float(hr.max())).save(d / "lr.json")
    oaff = output_affine(laff, 2, R)
    cubic = upsample(lr, 2, R, "cubic")
    # stand-ins for the learned outputs: real-looking volumes on the output grid
    vae = np.roll(cubic, 1, axis=0)
    sharp = cubic + 0.5 * (cubic - upsample(lr, 2, R, "linear"))
    outputs = {"linear": upsample(lr, 2, R, "linear"), "cubic": cubic, "vae": vae, "sr_vae": sharp}
    paths = {}
    for m, data in outputs.items():
        paths[m] = d / f"{m}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), oaff), paths[m])
    nib.save(nib.Nifti1Image(hr, aff), d / "truth.nii.gz")
    # uncertainty maps on the output grid: largest between the real slices, where outputs disagree
    for m, other in (("sr_vae", cubic), ("vae", sharp)):
        spread = ndimage.gaussian_filter(np.abs(outputs[m] - other), 1.0).astype(np.float32)
        nib.save(nib.Nifti1Image(spread, oaff), d / f"{m}_uncertainty.nii.gz")
    nib.save(nib.Nifti1Image(degrade(vae, 2, R, "gaussian", 2.0 * R, 2.0), laff), d / "degraded.nii.gz")
    with open(d / "vae_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "recon", "kl", "kl_weight", "adv", "disc"])
        for s in range(10, 510, 10):
            w.writerow([s, 0.2 / s**0.3, 0.19 / s**0.3, 1 + s / 100, min(1.0, s / 200), -0.1, 0.0])
        w.writerow([250, 0.05, 0.04, 3.0, 1.0, -0.1, 0.0])  # a resumed run repeats a step
    with open(d / "sr_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "pixel", "gradient", "lr"])
        for s in range(50, 1050, 50):
            w.writerow([s, 0.05 / s**0.2, 0.05 / s**0.2, 0.0, 1e-3])
    header = ["subject", "method", "psnr", "ssim", "ssim_fg", "sharpness", "periodic_artifact", "consistency_psnr"]
    with open(d / "metrics.csv", "w", newline="") as f, open(d / "metrics_notruth.csv", "w", newline="") as g:
        w, v = csv.writer(f), csv.writer(g)
        w.writerow(header)
        v.writerow(header)
        for i, s in enumerate(("s1", "s2", "s3")):
            for j, m in enumerate(outputs):
                w.writerow([s, m, 28 + j + i * 0.3, 0.92 + 0.01 * j, 0.9, 0.03 + 0.002 * j, 1.2 + j, 0])
                v.writerow([s, m, "", "", "", 0.03 + 0.002 * j - 0.001 * i, 1.2 + j, 0])
    return d, paths


def scene(subject, truth=True, methods=("linear", "cubic", "vae", "sr_vae"), extra=None):
    d, paths = subject
    return Scene.load(d / "lr.nii.gz", d / "lr.json", {m: paths[m] for m in methods},
                      truth_path=d / "truth.nii.gz" if truth else None, extra=extra)


@pytest.mark.parametrize("truth", [True, False])
def test_volume_figures_write_pngs(subject, tmp_path, truth):
    sc = scene(subject, truth=truth)
    figures.reformats_figure(sc, tmp_path / "reformats.png", title="t1")
    figures.profile_figure(sc, tmp_path / "profile.png", title="t1")
    assert_png(tmp_path / "reformats.png")
    assert_png(tmp_path / "profile.png")
    if truth:
        figures.errors_figure(sc, tmp_path / "errors.png", title="t1")
        assert_png(tmp_path / "errors.png")
    else:
        with pytest.raises(ThinsliceError, match="ground truth"):
            figures.errors_figure(sc, tmp_path / "errors.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["reformats.png", "profile.png"] + (["errors.png"] if truth else []))  # no temporary files left


@pytest.mark.parametrize("truth", [True, False])
def test_uncertainty_figure(subject, tmp_path, monkeypatch, truth):
    """One row per map, in the scene's method order: the output, its map and (with a truth) its
    |error| on both through-plane planes, the map and error on the map's colour scale."""
    d, paths = subject
    sc = scene(subject, truth=truth)
    maps = {"sr_vae": d / "sr_vae_uncertainty.nii.gz", "vae": d / "vae_uncertainty.nii.gz"}
    figures.uncertainty_figure(sc, tmp_path / "uncertainty.png", maps, title="t1")
    assert_png(tmp_path / "uncertainty.png")
    assert [p.name for p in tmp_path.iterdir()] == ["uncertainty.png"]

    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out: drawn.append(fig))
    figures.uncertainty_figure(sc, tmp_path / "again.png", maps)
    fig = drawn[0]
    images = [ax for ax in fig.axes if ax.images]
    columns = 2 * (3 if truth else 2)  # two planes x (output, map[, error])
    assert len(images) == 2 * columns
    assert [ax.get_ylabel().splitlines()[0] for ax in images[::columns]] == ["VAE synthesis", "SR (VAE pairs)"]
    sd = sc.on_grid(maps["sr_vae"])
    vmax = np.percentile(sd[sc.fg], 99)
    colour = [ax.images[0] for ax in images[columns:] if ax.images[0].get_cmap().name != "gray"]
    assert len(colour) == columns - 2
    for im in colour:
        assert im.get_clim() == pytest.approx((0.0, vmax))
    assert len(fig.axes) == len(images) + 2  # one colour bar per row
    plt.close(fig)

    # the maps are read on the output grid, ordered and cropped like the panels
    np.testing.assert_array_equal(sc.on_grid(paths["sr_vae"]), {p.key: p for p in sc.methods}["sr_vae"].ras)
    with pytest.raises(ThinsliceError, match="no output of eclare"):
        figures.uncertainty_figure(sc, tmp_path / "x.png", {"eclare": maps["sr_vae"]})
    with pytest.raises(ThinsliceError, match="no uncertainty map"):
        figures.uncertainty_figure(sc, tmp_path / "x.png", {})


def test_uncertainty_map_on_another_grid_is_refused(subject, tmp_path):
    d, _ = subject
    sc = scene(subject, truth=False, methods=("sr_vae",))
    img = nib.load(d / "sr_vae_uncertainty.nii.gz")
    data = np.asarray(img.dataobj)
    shifted = img.affine.copy()
    shifted[:3, 3] += 2.0
    others = {"lr_grid": nib.Nifti1Image(data[:, :, ::R], nib.load(d / "lr.nii.gz").affine),
              "shifted": nib.Nifti1Image(data, shifted)}
    for name, other in others.items():
        nib.save(other, tmp_path / f"{name}.nii.gz")
        with pytest.raises(ThinsliceError, match="not on the output grid"):
            figures.uncertainty_figure(sc, tmp_path / "x.png", {"sr_vae": tmp_path / f"{name}.nii.gz"})
    assert not (tmp_path / "x.png").exists()


def test_pipeline_figure(subject, tmp_path):
    d, _ = subject
    sc = scene(subject, truth=False, methods=("sr_vae",),
               extra={"vae": ("VAE", d / "vae.nii.gz", False), "degraded": ("deg", d / "degraded.nii.gz", True)})
    # the degraded synthetic LR is drawn on the output grid, each real slice repeated
    deg = sc.extra["degraded"].ras
    assert deg.shape == sc.lr.ras.shape
    figures.pipeline_figure(sc, tmp_path / "pipeline.png", title="t1")
    assert_png(tmp_path / "pipeline.png")
    with pytest.raises(ThinsliceError, match="pipeline"):
        figures.pipeline_figure(scene(subject, truth=False, methods=("cubic",)), tmp_path / "none.png")


@pytest.mark.parametrize("table", ["metrics.csv", "metrics_notruth.csv"])
def test_metrics_figure(subject, tmp_path, table):
    d, _ = subject
    plots.metrics_figure(d / table, tmp_path / "metrics.png", methods=["cubic", "linear", "sr_vae", "vae"])
    assert_png(tmp_path / "metrics.png")


def test_training_figure_and_loss_logs(subject, tmp_path):
    d, _ = subject
    log = plots.read_losses(d / "vae_loss.csv")
    assert np.all(np.diff(log["step"]) > 0) and len(log) == 50
    assert log.set_index("step").loc[250, "loss"] == pytest.approx(0.05)  # the resumed row wins
    plots.training_figure({"vae": d / "vae_loss.csv", "sr_vae": d / "sr_loss.csv"}, tmp_path / "training.png")
    assert_png(tmp_path / "training.png")


def test_metrics_table_names_stay_text_and_unlisted_methods_follow_the_registry(tmp_path, monkeypatch):
    table = tmp_path / "metrics.csv"
    table.write_text("subject,method,psnr,ssim,sharpness,periodic_artifact\n"
                     "001,my_method,,,0.03,1.1\n001,cubic,,,0.02,x\n001,linear,,,0.01,1.0\n")
    scores = plots.read_metrics(table)
    assert list(scores["subject"]) == ["001"] * 3
    assert scores["psnr"].isna().all() and np.isnan(scores["periodic_artifact"][1])
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, out: drawn.append(fig))
    plots.metrics_figure(table, tmp_path / "metrics.png")
    ticks = [t.get_text() for t in drawn[0].axes[0].get_xticklabels()]
    assert ticks == ["linear", "cubic B-spline", "my_method"]  # no truth: sharpness, in the registry's order
    plt.close(drawn[0])
    header_only = tmp_path / "empty.csv"
    header_only.write_text("subject,method,psnr\n")
    with pytest.raises(ThinsliceError, match="no rows"):
        plots.read_metrics(header_only)


def test_scene_needs_no_matplotlib():
    """The scene (what the figures show) is computed and tested without a plotting library."""
    code = "import sys, thinslice.scene; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_draws_every_kind(subject, tmp_path):
    d, paths = subject
    common = ["--image", str(d / "lr.nii.gz"), "--geometry", str(d / "lr.json"), "--methods", "linear", "cubic",
              "sr_vae", "--outputs", str(paths["linear"]), str(paths["cubic"]), str(paths["sr_vae"])]
    runs = {
        "reformats": common + ["--truth", str(d / "truth.nii.gz")],
        "errors": common + ["--truth", str(d / "truth.nii.gz")],
        "uncertainty": common + ["--truth", str(d / "truth.nii.gz"),
                                 "--uncertainty", f"sr_vae={d / 'sr_vae_uncertainty.nii.gz'}"],
        "profile": common,
        "pipeline": common + ["--synthetic", str(paths["vae"]), "--degraded", str(d / "degraded.nii.gz")],
        "metrics": ["--metrics", str(d / "metrics.csv"), "--methods", "linear", "cubic"],
        "training": ["--losses", f"vae={d / 'vae_loss.csv'}", f"sr_vae={d / 'sr_loss.csv'}"],
    }
    for kind, args in runs.items():
        out = tmp_path / f"{kind}.png"
        assert main(["figure", "--kind", kind, *args, "--title", "run: s", "--out", str(out)]) == 0, kind
        assert out.read_bytes()[:8] == PNG_MAGIC
    assert main(["figure", "--kind", "errors", *common, "--out", str(tmp_path / "x.png")]) == INPUT_ERROR  # no truth
    assert main(["figure", "--kind", "uncertainty", *common, "--out", str(tmp_path / "x.png")]) == INPUT_ERROR
    assert main(["figure", "--kind", "uncertainty", *common, "--uncertainty", "vae=map.nii.gz",  # not in --methods
                 "--out", str(tmp_path / "x.png")]) == INPUT_ERROR
    for args in (["--kind", "training", "--losses", "vae"], ["--kind", "uncertainty", *common, "--uncertainty", "sr_vae"],
                 ["--kind", "uncertainty", *common, "--uncertainty", "sr_vae="]):  # not NAME=PATH: a usage error
        with pytest.raises(SystemExit) as exit:
            main(["figure", *args, "--out", str(tmp_path / "x.png")])
        assert exit.value.code == 2, args
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# orientation


def pir_affine(spacing=(0.625, 0.625, 4.0)) -> np.ndarray:
    """Voxel axes towards posterior, inferior, right (a sagittal knee scan's DICOM order)."""
    aff = np.zeros((4, 4))
    aff[1, 0], aff[2, 1], aff[0, 2] = -spacing[0], -spacing[1], spacing[2]
    aff[:3, 3] = (10.0, 80.0, 60.0)
    aff[3, 3] = 1.0
    return aff


def world(affine, shape) -> np.ndarray:
    """World (RAS mm) coordinates of every voxel: shape + (3,)."""
    idx = np.indices(shape, dtype=float).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).T.reshape(*shape, 3)


@pytest.mark.parametrize("affine", [pir_affine(), np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.diag([0.9, 0.9, 3.0, 1.0]),
                                    oblique_affine()], ids=["PIR", "LPS", "oblique"])
def test_views_are_in_anatomical_orientation(affine):
    shape = (12, 14, 10)
    xyz = world(affine, shape)
    ori = Orientation.from_affine(affine)
    assert ori.codes == "".join(nib.aff2axcodes(affine))
    # the reorientation is nibabel's as_closest_canonical
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_array_equal(ori.to_ras(data), np.asarray(canonical.dataobj))
    np.testing.assert_allclose(ori.ras_zooms(), canonical.header.get_zooms()[:3], rtol=1e-5)
    x, y, z = (ori.to_ras(xyz[..., k]) for k in range(3))
    for plane in range(3):
        c = x.shape[plane] // 2
        up = {0: z, 1: z, 2: y}[plane]          # sagittal, coronal: superior up; axial: anterior up
        left = {0: y, 1: x, 2: x}[plane]        # sagittal: anterior left; coronal, axial: patient's right left
        u, l = plane_section(up, plane, c), plane_section(left, plane, c)
        assert (np.diff(u, axis=0) < 0).all(), PLANE_NAMES[plane]  # decreases downwards
        assert (np.diff(l, axis=1) < 0).all(), PLANE_NAMES[plane]  # decreases rightwards


def test_pir_coronal_shows_superior_up_and_right_left():
    """A sagittal PIR scan: its slice axis is left-right; the coronal view has S at the top."""
    ori = Orientation.from_affine(pir_affine())
    assert ori.axes == (1, 2, 0) and ori.flips == (True, True, False)
    assert ori.ras_axis(2) == 0  # the slice axis runs left-right
    shape = (20, 30, 6)
    data = np.zeros(shape, np.float32)
    data[:, 0, :] = 1.0    # the most superior row of voxels (axis 1 runs towards inferior)
    data[:, :, 5] = 2.0    # the rightmost slice (axis 2 runs towards right)
    ras = ori.to_ras(data)
    section = plane_section(ras, 1, ras.shape[1] // 2)  # coronal
    assert (section[0, 1:] == 1.0).all()   # top row: superior
    assert (section[:, 0] == 2.0).all()    # left column: the patient's right (radiological)
    assert EDGE_LETTERS[1] == ("S", "I", "R", "L")


def test_display_position_finds_the_voxel(subject):
    sc = scene(subject, truth=False, methods=("cubic",))
    point = profile_line(sc)
    assert sc.fg[tuple(slice(None) if k == sc.slice_ras else point[k] for k in range(3))].mean() >= 0.5
    plane = sc.planes()[0]
    marked = np.zeros(sc.shape)
    marked[point] = 1.0
    section = plane_section(marked, plane, point[plane])
    x, y = display_position(point, plane, sc.shape, sc.zooms)
    rows, cols = plane_axes(plane)
    row, col = np.argwhere(section == 1.0)[0]
    assert x == pytest.approx((col + 0.5) * sc.zooms[cols]) and y == pytest.approx((row + 0.5) * sc.zooms[rows])
    x0, y0, w, h = zoom_box(sc, plane)
    extent = sc.extent(plane)
    assert 0 <= x0 and x0 + w <= extent[1] + 1e-6 and 0 <= y0 and y0 + h <= extent[2] + 1e-6


def test_scene_planes_contain_the_slice_axis(subject):
    sc = scene(subject, truth=True, methods=("cubic",))
    assert sc.orientation.codes == "LAS" and sc.slice_ras == 2  # axial slices of a brain
    assert sc.planes() == [0, 1]                                  # sagittal and coronal
    assert sc.truth.ras.shape == sc.lr.ras.shape == sc.methods[0].ras.shape
    # real slices keep their values in the LR-sample volume, NaN between them
    samples = sc.lr_samples
    line = samples[sc.shape[0] // 2, sc.shape[1] // 2]
    assert np.isfinite(line).sum() == 9 and np.isnan(line).sum() == 16


# ---------------------------------------------------------------------------------------------
# the workflow: figure rules and the report on a tiny simulated project


def simulated_project(folder: Path, anatomical_path: Path, methods: str, extra: str = "") -> None:
    img = nib.load(anatomical_path)
    (folder / "data").mkdir()
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), folder / "data" / "gt.nii.gz")
    (folder / "samples.tsv").write_text("subject\tpath\nt1\tdata/gt.nii.gz\n")
    (folder / "bench.yaml").write_text(
        f"run: tiny\nsamples: samples.tsv\nqc_figures: false\nmethods: [{methods}]\n"
        f"simulate:\n  enabled: true\n  axis: 2\n  factor: {R}\n  fwhm_mm: {2.0 * R}\n{extra}")


@pytest.mark.workflow
def test_learned_methods_add_the_pipeline_and_training_figures(tmp_path, anatomical_path):
    """Dry run: with the VAE and SR methods, `figures` asks for the synthetic and degraded
    volumes and the loss logs, and so for the training rules."""
    simulated_project(tmp_path, anatomical_path, "linear, cubic, vae, sr_vae, sr_self")
    done = snakemake(tmp_path, "-n", "figures", "--configfile", "bench.yaml")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    jobs = job_stats(done.stdout + done.stderr)
    for rule in ("figure_pipeline", "figure_training", "figure_reformats", "figure_errors", "figure_uncertainty",
                 "figure_profile", "figure_metrics", "train_vae", "synthesize", "degrade"):
        assert jobs.get(rule) == 1, (rule, jobs)
    assert jobs.get("train_sr") == jobs.get("infer") == 2  # sources vae and self


@pytest.mark.workflow
def test_figures_target_and_report(tmp_path, anatomical_path):
    # eclare is asked for but not installed: skipped, with a line in the log and the report
    simulated_project(tmp_path, anatomical_path, "linear, cubic, eclare", "eclare:\n  command: no-such-run-eclare\n")
    done = snakemake(tmp_path, "--cores", "2", "figures", "--configfile", "bench.yaml")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "method eclare skipped: 'no-such-run-eclare' not found" in done.stdout + done.stderr
    out = tmp_path / "results" / "tiny"
    names = ["reformats", "errors", "profile", "metrics"]
    for name in names:
        assert_png(out / "figures" / f"{name}.png")
        assert (tmp_path / "logs" / "tiny" / "figures" / f"{name}.log").exists()
    for name in ("pipeline", "training", "uncertainty"):  # no VAE, no SR method
        assert not (out / "figures" / f"{name}.png").exists(), name
    again = snakemake(tmp_path, "-n", "figures", "--configfile", "bench.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    report = out / "report.html"
    done = snakemake(tmp_path, "--report", str(report), "--configfile", "bench.yaml")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    html = report.read_text()
    for name in names:
        assert f"filename={name}.png;base64," in html, name  # embedded: the report is one file
    assert "filename=metrics.csv;base64," in html
    assert "Skipped methods" in html and "no-such-run-eclare" in html
    assert not (out / "eclare").exists()
    for caption in ("Through-plane reformats", "Absolute error against the ground truth",
                    "Intensity profile along the slice axis", "Scores per method"):
        assert caption in html


def test_qc_summary_names_the_profile_each_consistency_and_the_warnings():
    entries = [{"method": "cubic", "consistency_psnr": 42.37, "fwhm_header_mm": 3.0, "fwhm_estimate_mm": 4.2,
                "slice_thickness_used_mm": 3.0, "warnings": ["the slice profile looks 4.2 mm wide"]},
               {"method": "sr_self", "consistency_psnr": 60.71, "fwhm_header_mm": 3.0, "fwhm_estimate_mm": 4.2,
                "warnings": ["the slice profile looks 4.2 mm wide", "periodic_artifact 1.80 > 1.5"]}]
    text = figures.qc_summary(entries).splitlines()
    assert text[0] == "slice profile: header 3 mm, estimated from the scan 4.2 mm, used 3 mm"
    assert text[1] == "consistency (dB): cubic 42.4, sr_self 60.7"
    assert text[2:] == ["warning: periodic_artifact 1.80 > 1.5", "warning: the slice profile looks 4.2 mm wide"]
    assert figures.qc_summary([]) == ""
    nifti = [{"method": "cubic", "consistency_psnr": 40.0, "fwhm_header_mm": None, "fwhm_estimate_mm": 2.9,
              "slice_thickness_used_mm": 2.9}]
    assert figures.qc_summary(nifti).splitlines()[0] == ("slice profile: header - (no thickness), "
                                                          "estimated from the scan 2.9 mm, used 2.9 mm")
