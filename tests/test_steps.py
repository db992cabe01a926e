"""File-level steps of the learned methods: train an SR model from prepared scans, then
`thinslice infer` it on a new scan without Snakemake."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from thinslice.cli import main
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
    rc = main(["train-sr", "--source", "self", "--images", str(d / "in.nii.gz"), "--geometries", str(d / "in.json"),
               "--options", json.dumps(TINY_SR), "--checkpoint", str(d / "sr.ckpt"), "--loss-csv", str(d / "loss.csv"),
               "--out", str(d / "sr.pt"), "--threads", "1"])
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
    assert main(["infer", "--model", str(trained / "sr.pt"), str(anatomical_path), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit model" in err[0] and "4 mm" in err[0]
    assert not out.exists()


def test_infer_refuses_a_file_that_is_no_model(trained, tmp_path, capsys):
    assert main(["infer", "--model", str(trained / "loss.csv"), str(trained / "lr.nii.gz"), str(tmp_path / "o.nii.gz")]) == 2
    assert "not a thinslice SR model" in capsys.readouterr().err
