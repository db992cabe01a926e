"""File-level steps of the learned methods: train an SR model from prepared scans, then
`thinslice infer` it on a new scan without Snakemake."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from thinslice.cli import main
from thinslice.errors import INPUT_ERROR
from thinslice.geometry import output_affine
from thinslice.prepare import prepare, simulate

TINY_SR = {"steps": 6, "batch_size": 2, "patch_size": 16, "channels": 4, "depth": 1, "checkpoint_every": 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, anatomical_path):
    """A tiny SR model trained on self pairs of a simulated x2 scan of the real T1."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("steps")
    simulate(anatomical_path, d / "lr.nii.gz", d / "truth.nii.gz", axis=2, factor=2, profile="gaussian", fwhm_mm=4.0)
    prepare(d / "lr.nii.gz", d / "in.nii.gz", d / "in.json", d / "mask.nii.gz", thickness_mm=4.0, factor=2)
    (d / "sr_train.json").write_text(json.dumps(TINY_SR))
    rc = main(["train-sr", "--source", "self", "--images", str(d / "in.nii.gz"), "--geometries", str(d / "in.json"),
               "--settings", str(d / "sr_train.json"), "--checkpoint", str(d / "sr.ckpt"), "--loss-csv", str(d / "loss.csv"),
               "--out", str(d / "sr.pt"), "--threads", "1", "--slice-model", "gaussian"])   # as simulated
    assert rc == 0
    return d


def test_training_writes_model_and_loss_curve(trained):
    rows = (trained / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step") and len(rows) >= 2
    assert (trained / "sr.pt").stat().st_size > 0


def test_infer_without_workflow_lands_on_the_output_grid(trained, tmp_path):
    out = tmp_path / "x2.nii.gz"
    assert main(["infer", "--model", str(trained / "sr.pt"), str(trained / "lr.nii.gz"), str(out),
                 "--keep-real-slices", "--threads", "1"]) == 0
    lr, hr = nib.load(str(trained / "lr.nii.gz")), nib.load(str(out))
    assert hr.shape == (lr.shape[0], lr.shape[1], (lr.shape[2] - 1) * 2 + 1)
    np.testing.assert_allclose(hr.affine, output_affine(lr.affine, 2, 2), atol=1e-6)
    # real slices put back exactly (float32 round trip through the normalisation)
    np.testing.assert_allclose(np.asarray(hr.dataobj)[:, :, ::2], np.asarray(lr.dataobj), rtol=1e-4, atol=1e-2)


def test_infer_refuses_a_scan_of_another_spacing(trained, anatomical_path, tmp_path, capsys):
    out = tmp_path / "no.nii.gz"
    assert main(["infer", "--model", str(trained / "sr.pt"), str(anatomical_path), str(out), "--slice-axis", "2"]) == INPUT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit model" in err[0] and "4 mm" in err[0]
    assert not out.exists()


def test_infer_refuses_a_file_that_is_no_model(trained, tmp_path, capsys):
    assert main(["infer", "--model", str(trained / "loss.csv"), str(trained / "lr.nii.gz"), str(tmp_path / "o.nii.gz")]) == INPUT_ERROR
    assert "not a thinslice SR model" in capsys.readouterr().err


def test_a_second_round_trains_on_the_restored_slices_and_resumes_exactly(trained, tmp_path, capsys):
    """rounds 2: the steps shared, a round-1 checkpoint beside the rule's, one loss curve counting
    steps on across the rounds, and a rerun (every checkpoint finished) writes the same network."""
    settings = tmp_path / "rounds.json"
    settings.write_text(json.dumps({**TINY_SR, "rounds": 2, "log_every": 1}))

    def run(name):
        assert main(["train-sr", "--source", "self", "--images", str(trained / "in.nii.gz"), "--geometries",
                     str(trained / "in.json"), "--settings", str(settings), "--checkpoint", str(tmp_path / "sr.ckpt"),
                     "--loss-csv", str(tmp_path / f"{name}.csv"), "--out", str(tmp_path / f"{name}.pt"),
                     "--threads", "1", "--slice-model", "gaussian"]) == 0
        return torch.load(tmp_path / f"{name}.pt", weights_only=False)

    first = run("first")
    assert "round 2 of 2, 3 steps: round 1's network goes on training" in capsys.readouterr().out
    assert (tmp_path / "sr.round1.ckpt").exists() and (tmp_path / "sr.ckpt").exists()
    steps = [int(row.split(",")[0]) for row in (tmp_path / "first.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 7))     # TINY_SR's 6 steps, 3 per round
    checkpoints = [tmp_path / "sr.round1.ckpt", tmp_path / "sr.ckpt"]
    written = [p.stat().st_mtime_ns for p in checkpoints]
    again = run("again")
    assert [p.stat().st_mtime_ns for p in checkpoints] == written    # both rounds resumed, none retrained
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "first.csv").read_text()
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, again["state_dict"][name]), name


def test_restored_slices_are_the_output_at_the_slice_positions(trained):
    """An untrained network gives the cubic B-spline through the slices, which passes through
    them: its restored slices are the scan itself, so they sit at samples 0, r, 2r, ..."""
    from thinslice.settings import SRConfig
    from thinslice.sr import build_model
    from thinslice.steps import restored_slices

    data = np.asarray(nib.load(str(trained / "in.nii.gz")).dataobj, dtype=np.float32)
    data = (data - data.min()) / (data.max() - data.min())
    model = build_model(SRConfig.from_dict(TINY_SR), 2).eval()
    restored = restored_slices(model, data, 2, 2, device="cpu")
    assert restored.shape == data.shape
    np.testing.assert_allclose(restored, data, atol=1e-4)


def test_a_later_round_keeps_the_scans_own_pairs_beside_the_restored_slices(trained):
    """Rounds after the first train on the self pairs of round 1, unchanged, and on as many again
    made from the slices as the network restores them."""
    from thinslice.settings import SRConfig
    from thinslice.sr import load_model
    from thinslice.steps import training_pairs

    config = SRConfig.from_dict(TINY_SR)
    model, _ = load_model(trained / "sr.pt")

    def pairs(restore):
        return list(training_pairs("self", [str(trained / "in.nii.gz")], [str(trained / "in.json")], [], "gaussian",
                                   config, restore, device="cpu"))

    first, later = pairs(None), pairs(model)
    assert len(later) == 2 * len(first)
    for a, b in zip(first, later[:len(first)]):
        np.testing.assert_array_equal(np.asarray(a.input), np.asarray(b.input))
        np.testing.assert_array_equal(a.target, b.target)
    restored = later[len(first):]
    assert [(p.axis, p.factor) for p in restored] == [(p.axis, p.factor) for p in first]
    assert not all(np.array_equal(a.target, b.target) for a, b in zip(first, restored))


# --------------------------------------------------------------------------- the Python API

def test_python_api_gives_what_infer_writes(trained, tmp_path):
    import thinslice

    out = tmp_path / "cli.nii.gz"
    assert main(["infer", "--model", str(trained / "sr.pt"), str(trained / "lr.nii.gz"), str(out), "--threads", "1"]) == 0
    written = nib.load(str(out))
    in_memory = thinslice.upsample(nib.load(str(trained / "lr.nii.gz")), model=trained / "sr.pt")
    from_path = thinslice.upsample(str(trained / "lr.nii.gz"), model=str(trained / "sr.pt"))
    for img in (in_memory, from_path):
        assert isinstance(img, nib.Nifti1Image) and img.shape == written.shape
        np.testing.assert_allclose(img.affine, written.affine, atol=1e-9)
        np.testing.assert_allclose(img.get_fdata(), written.get_fdata(), rtol=1e-5, atol=1e-3)


def test_python_api_interpolates_like_the_workflow_step(trained, tmp_path):
    import thinslice

    out = tmp_path / "cubic.nii.gz"
    assert main(["upsample", "--method", "cubic", "--image", str(trained / "in.nii.gz"),
                 "--geometry", str(trained / "in.json"), "--out", str(out)]) == 0
    img = thinslice.upsample(nib.load(str(trained / "lr.nii.gz")), method="cubic", factor=2)
    np.testing.assert_allclose(img.affine, nib.load(str(out)).affine, atol=1e-9)
    np.testing.assert_allclose(img.get_fdata(), nib.load(str(out)).get_fdata(), rtol=1e-5, atol=1e-3)


def test_python_api_errors(trained, anatomical_path):
    import thinslice

    with pytest.raises(thinslice.ThinsliceError, match="does not fit model"):
        thinslice.upsample(nib.load(str(anatomical_path)), model=trained / "sr.pt", slice_axis=2)
    with pytest.raises(thinslice.ThinsliceError, match="brings its own factor"):
        thinslice.upsample(str(trained / "lr.nii.gz"), model=trained / "sr.pt", factor=2)
    with pytest.raises(thinslice.ThinsliceError, match="nibabel image or a path"):
        thinslice.upsample(np.zeros((4, 4, 4)))
    with pytest.raises(thinslice.ThinsliceError, match="'linear' or 'cubic'"):
        thinslice.upsample(str(trained / "lr.nii.gz"), method="sinc", factor=2)


# --------------------------------------------------------------------------- any target spacing, echoes

def test_infer_to_another_target_spacing_samples_the_output_grid(trained, tmp_path):
    """The x2 model (4 mm -> 2 mm) writes a 3 mm grid too: ratio 4/3, sampled from its 2 mm grid."""
    x2, x43 = tmp_path / "x2.nii.gz", tmp_path / "3mm.nii.gz"
    assert main(["infer", "--model", str(trained / "sr.pt"), str(trained / "lr.nii.gz"), str(x2), "--threads", "1"]) == 0
    assert main(["infer", "--model", str(trained / "sr.pt"), str(trained / "lr.nii.gz"), str(x43),
                 "--target-spacing", "3", "--threads", "1"]) == 0
    lr, fine, out = (nib.load(str(p)) for p in (trained / "lr.nii.gz", x2, x43))
    n = lr.shape[2]
    assert out.shape[2] == int(np.floor((n - 1) * 4 / 3)) + 1
    np.testing.assert_allclose(out.affine, output_affine(lr.affine, 2, 4 / 3), atol=1e-6)
    # every 2nd output slice (6 mm) is every 3rd slice of the 2 mm grid: the same values
    np.testing.assert_allclose(np.asarray(out.dataobj)[:, :, ::2], np.asarray(fine.dataobj)[:, :, ::3], atol=1e-2)


def test_infer_refuses_a_target_finer_than_the_model_works_at(trained, tmp_path, capsys):
    out = tmp_path / "no.nii.gz"
    assert main(["infer", "--model", str(trained / "sr.pt"), str(trained / "lr.nii.gz"), str(out),
                 "--target-spacing", "1.5"]) == INPUT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "works at x2" in err[0] and "at least 2 mm" in err[0]
    assert not out.exists()


def test_infer_reads_one_echo_of_a_multi_echo_dicom_series(trained, tmp_path, capsys):
    from test_dicom import write_series

    folder = tmp_path / "dicom"
    write_series(folder, n_slices=6, echo_times=(10.0, 20.0), rows=20, cols=18, pixel_spacing=(2.0, 2.0), spacing=4.0)
    out = tmp_path / "echo2.nii.gz"
    assert main(["infer", "--model", str(trained / "sr.pt"), str(folder), str(tmp_path / "no.nii.gz")]) == INPUT_ERROR
    err = capsys.readouterr().err
    assert "--echo" in err and "sample sheet" not in err.split("--echo")[0]
    assert main(["infer", "--model", str(trained / "sr.pt"), str(folder), str(out), "--echo", "2", "--threads", "1"]) == 0
    assert nib.load(str(out)).shape[2] == (6 - 1) * 2 + 1


def test_infer_takes_an_oblique_series_with_rounded_positions_and_refuses_it_with_a_slice_missing(trained, tmp_path,
                                                                                                  capsys):
    from test_dicom import write_series

    jittered, missing = tmp_path / "jittered", tmp_path / "missing"
    write_series(jittered, n_slices=8, rows=20, cols=18, pixel_spacing=(2.0, 2.0), spacing=4.0, position_decimals=1)
    write_series(missing, n_slices=8, rows=20, cols=18, pixel_spacing=(2.0, 2.0), gaps=[4.0] * 3 + [8.0] + [4.0] * 3,
                 position_decimals=1)
    out = tmp_path / "out.nii.gz"
    assert main(["infer", "--model", str(trained / "sr.pt"), str(jittered), str(out), "--threads", "1"]) == 0
    assert nib.load(str(out)).shape[2] == (8 - 1) * 2 + 1
    assert main(["infer", "--model", str(trained / "sr.pt"), str(missing), str(tmp_path / "no.nii.gz")]) == INPUT_ERROR
    assert "a slice is missing" in capsys.readouterr().err


def test_a_cohort_agrees_on_stated_thicknesses_and_tolerates_estimated_ones():
    from thinslice.errors import ThinsliceError
    from thinslice.geometry import describe
    from thinslice.steps import cohort_protocol

    def scan(thickness, estimate):
        g = describe(np.diag([0.6, 0.6, 8.0, 1.0]), (64, 64, 12), None, thickness, 2, None, (0.0, 1.0), "scan")
        g.fwhm_estimate_mm = estimate
        return g

    estimated = [scan(2.9, 2.9), scan(3.2, 3.2), scan(3.0, 3.0)]      # no thickness in the headers
    assert cohort_protocol(["a", "b", "c"], estimated) == (8.0, 3.0)
    stated = [scan(3.0, 2.9), scan(4.0, 3.2)]                        # the headers disagree: two protocols
    with pytest.raises(ThinsliceError, match="train one model per protocol"):
        cohort_protocol(["a", "b"], stated)
