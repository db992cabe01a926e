"""BIDS input (scans, inherited SliceThickness, sample sheet) and derivatives output."""

from __future__ import annotations

import csv
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

import thinslice
from thinslice import bids
from thinslice.errors import ThinsliceError
from thinslice.geometry import Geometry


def _scan(path, sidecar=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 3), np.float32), np.diag([1.0, 1.0, 4.0, 1.0])), str(path))
    if sidecar is not None:
        (path.parent / (path.name.split(".")[0] + ".json")).write_text(json.dumps(sidecar))


@pytest.fixture
def dataset(tmp_path):
    """sub-01 (no session, own sidecar), sub-02 with two sessions (inheriting), a derivative to skip."""
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    (root / "T2w.json").write_text(json.dumps({"SliceThickness": 4.0, "RepetitionTime": 3.0}))
    _scan(root / "sub-01/anat/sub-01_T2w.nii.gz", {"SliceThickness": 3.5})
    _scan(root / "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz")
    _scan(root / "sub-02/ses-2/anat/sub-02_ses-2_acq-ax_T2w.nii", {"EchoTime": 0.1})
    _scan(root / "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz")
    _scan(root / "derivatives/x/sub-01/anat/sub-01_T2w.nii.gz")
    return root


def test_find_scans_finds_sessions_skips_derivatives_and_inherits_thickness(dataset):
    _scan(dataset / "sub-03/anat/sub-03_T2w.nii.gz")
    rows = bids.find_scans(dataset)
    assert [r["subject"] for r in rows] == ["sub-01", "sub-02_ses-1", "sub-02_ses-2_acq-ax", "sub-03"]
    assert rows[2]["path"] == str(dataset / "sub-02/ses-2/anat/sub-02_ses-2_acq-ax_T2w.nii")
    assert [r["slice_thickness"] for r in rows] == [3.5, 4.0, 4.0, 4.0]   # own sidecar beats the root's


def test_nearer_inherited_sidecar_wins_and_entities_must_match(dataset):
    (dataset / "sub-02/ses-2/sub-02_ses-2_T2w.json").write_text(json.dumps({"SliceThickness": 5.0}))
    (dataset / "sub-02/sub-02_acq-cor_T2w.json").write_text(json.dumps({"SliceThickness": 9.0}))
    rows = {r["subject"]: r["slice_thickness"] for r in bids.find_scans(dataset)}
    assert rows == {"sub-01": 3.5, "sub-02_ses-1": 4.0, "sub-02_ses-2_acq-ax": 5.0}


def test_no_thickness_anywhere_gives_none(dataset):
    (dataset / "T2w.json").unlink()
    rows = {r["subject"]: r["slice_thickness"] for r in bids.find_scans(dataset)}
    assert rows == {"sub-01": 3.5, "sub-02_ses-1": None, "sub-02_ses-2_acq-ax": None}


def test_other_suffix(dataset):
    assert [r["subject"] for r in bids.find_scans(dataset, suffix="T1w")] == ["sub-02_ses-2"]


def test_missing_dataset_description_names_root(dataset):
    (dataset / "dataset_description.json").unlink()
    with pytest.raises(ThinsliceError, match="dataset_description.json") as info:
        bids.find_scans(dataset)
    assert str(dataset) in str(info.value) and "\n" not in str(info.value)


def test_no_matching_file_names_root(dataset):
    with pytest.raises(ThinsliceError, match="FLAIR") as info:
        bids.find_scans(dataset, suffix="FLAIR")
    assert str(dataset) in str(info.value)


def test_root_not_a_folder(tmp_path):
    with pytest.raises(ThinsliceError, match="not a folder"):
        bids.find_scans(tmp_path / "nothing")


def test_bad_thickness_names_the_sidecar(dataset):
    (dataset / "T2w.json").write_text(json.dumps({"SliceThickness": "thick"}))
    with pytest.raises(ThinsliceError, match="T2w.json: SliceThickness"):
        bids.find_scans(dataset)


def test_sample_sheet_round_trips(dataset, tmp_path):
    (dataset / "T2w.json").unlink()
    rows = bids.find_scans(dataset)
    sheet = tmp_path / "out" / "samples.tsv"
    bids.write_sample_sheet(rows, sheet)
    with open(sheet, newline="") as f:
        back = list(csv.DictReader(f, delimiter="\t"))
    assert list(back[0]) == ["subject", "path", "slice_thickness"]
    assert [(r["subject"], r["path"]) for r in back] == [(r["subject"], r["path"]) for r in rows]
    assert [r["slice_thickness"] for r in back] == ["3.5", "", ""]


def test_dataset_description(tmp_path):
    path = bids.write_dataset_description(tmp_path / "results", source=tmp_path / "ds")
    desc = json.loads(path.read_text())
    assert path == tmp_path / "results" / "dataset_description.json"
    assert desc["Name"] and desc["BIDSVersion"] == "1.9.0" and desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "thinslice"
    assert desc["GeneratedBy"][0]["Version"] == thinslice.__version__
    assert isinstance(desc["GeneratedBy"][0]["Description"], str) and desc["GeneratedBy"][0]["Description"]
    assert desc["SourceDatasets"] == [{"URL": (tmp_path / "ds").as_uri()}]
    assert "SourceDatasets" not in json.loads(bids.write_dataset_description(tmp_path / "r2").read_text())


@pytest.mark.parametrize("subject, method, expected", [
    ("sub-01", "linear", "sub-01/anat/sub-01_desc-linear_T2w.nii.gz"),
    ("sub-01_ses-2_acq-ax", "sr_vae", "sub-01/ses-2/anat/sub-01_ses-2_acq-ax_desc-srvae_T2w.nii.gz"),
    ("knee_echo1", "cubic", "sub-kneeecho1/anat/knee_echo1_desc-cubic_T2w.nii.gz"),
])
def test_derivative_name(subject, method, expected):
    assert bids.derivative_name(subject, method) == expected


def test_derivative_name_suffix():
    assert bids.derivative_name("sub-03", "vae", suffix="T1w") == "sub-03/anat/sub-03_desc-vae_T1w.nii.gz"


def _geometry():
    return Geometry(slice_axis=2, spacing_mm=4.0, thickness_mm=3.5, gap_mm=0.5, factor=4,
                    in_plane_mm=(1.0, 1.0), shape=(8, 8, 5), orientation="RAS", norm_low=0.0, norm_high=1.0)


def test_provenance_with_model_and_sidecar(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(bytes(range(256)) * 5000)   # over one read chunk
    rec = bids.provenance("sr_vae", _geometry(), model=model, source="in/sub-01_T2w.nii.gz",
                          slice_model="gaussian")
    assert rec["ModelSHA256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert rec == {"Method": "sr_vae", "SliceAxis": 2, "SliceSpacing": 4.0, "SliceThickness": 3.5,
                   "UpsamplingRatio": 4.0, "WorkingFactor": 4, "OutputSliceSpacing": 1.0, "SliceModel": "gaussian",
                   "Sources": ["in/sub-01_T2w.nii.gz"], "ModelFile": str(model),
                   "ModelSHA256": rec["ModelSHA256"], "ThinsliceVersion": thinslice.__version__}
    out = tmp_path / "sub-01/anat/sub-01_desc-srvae_T2w.nii.gz"
    sidecar = bids.write_sidecar(out, rec)
    assert sidecar == out.with_name("sub-01_desc-srvae_T2w.json")
    assert sidecar.read_text() == json.dumps(rec, indent=2, sort_keys=True) + "\n"


def test_provenance_without_model_uses_output_spacing():
    geo = _geometry()
    geo.output_spacing_mm = 1.25
    rec = bids.provenance("linear", geo)
    assert rec["OutputSliceSpacing"] == 1.25
    assert not {"ModelFile", "ModelSHA256", "SliceModel"} & set(rec)


def test_export_links_each_output_under_its_bids_name_with_its_sidecar(tmp_path):
    from thinslice.bids import export
    from thinslice.geometry import describe

    g = describe(np.diag([1.0, 1.0, 5.0, 1.0]), (4, 4, 6), None, 4.5, None, 2.0, (0.0, 1.0), "scan")
    g.save(tmp_path / "g.json")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 13), np.float32), np.eye(4)), tmp_path / "out.nii.gz")
    (tmp_path / "sr_self.pt").write_bytes(b"weights")
    entries = [{"subject": "sub-07_ses-b", "method": "sr_self", "output": str(tmp_path / "out.nii.gz"),
                "geometry": str(tmp_path / "g.json"), "model": str(tmp_path / "sr_self.pt"), "source": "scan.nii.gz"}]
    written = export(tmp_path / "deriv", entries, "T1w", "gaussian")
    nifti = tmp_path / "deriv" / "sub-07" / "ses-b" / "anat" / "sub-07_ses-b_desc-srself_T1w.nii.gz"
    assert set(written) == {tmp_path / "deriv" / "dataset_description.json", nifti, nifti.with_name(nifti.name[:-7] + ".json")}
    assert nifti.read_bytes() == (tmp_path / "out.nii.gz").read_bytes()
    side = json.loads(nifti.with_name(nifti.name[:-7] + ".json").read_text())
    assert (side["UpsamplingRatio"], side["WorkingFactor"], side["OutputSliceSpacing"]) == (2.5, 3, 2.0)
    assert side["ModelSHA256"] == hashlib.sha256(b"weights").hexdigest() and side["Sources"] == ["scan.nii.gz"]
    export(tmp_path / "deriv", entries, "T1w", "gaussian")   # a rerun replaces, never fails on existing files
