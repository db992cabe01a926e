"""Per-scan QC: the uncertainty map's scores, the QC entry and the run's QC table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from thinslice.evaluate import collect_qc, evaluate, qc_record, uncertainty_scores, write_row
from thinslice.geometry import output_affine
from thinslice.interpolate import upsample
from thinslice.io import read_nifti, save_volume
from thinslice.prepare import prepare, simulate
from thinslice.volume import Volume


def _case(tmp_path, anatomical_path):
    """The real T1 simulated at x3 (6 mm Gaussian slices), prepared; its cubic output."""
    d = tmp_path
    simulate(anatomical_path, d / "lr.nii.gz", d / "truth.nii.gz", axis=2, factor=3, profile="gaussian", fwhm_mm=6.0)
    g = prepare(d / "lr.nii.gz", d / "in.nii.gz", d / "g.json", d / "m.nii.gz", thickness_mm=6.0, factor=3)
    lr, truth = read_nifti(d / "in.nii.gz"), read_nifti(d / "truth.nii.gz")
    out = upsample(lr.data, 2, 3, "cubic")
    save_volume(Volume(out, output_affine(lr.affine, 2, 3)), d / "cubic.nii.gz")
    return d, g, out, truth.data


def test_a_map_that_follows_the_error_ranks_it_and_noise_does_not(tmp_path, anatomical_path):
    d, g, out, truth = _case(tmp_path, anatomical_path)
    affine = read_nifti(d / "cubic.nii.gz").affine
    error = np.abs(out - truth)
    save_volume(Volume(error + 1.0, affine), d / "follows.nii.gz")
    save_volume(Volume(np.random.default_rng(0).random(out.shape), affine), d / "noise.nii.gz")
    fg = np.ones(out.shape, bool)
    follows = uncertainty_scores(d / "follows.nii.gz", d / "cubic.nii.gz", 2, fg, d / "truth.nii.gz")
    noise = uncertainty_scores(d / "noise.nii.gz", d / "cubic.nii.gz", 2, fg, d / "truth.nii.gz")
    assert follows["uncertainty_error_spearman"] > 0.95
    assert abs(noise["uncertainty_error_spearman"]) < 0.5
    assert follows["uncertainty_mean"] > 1.0
    assert np.isnan(uncertainty_scores(d / "noise.nii.gz", d / "cubic.nii.gz", 2, fg)["uncertainty_error_spearman"])


def test_the_qc_entry_and_table(tmp_path, anatomical_path):
    d, g, out, truth = _case(tmp_path, anatomical_path)
    row = evaluate(d / "cubic.nii.gz", d / "in.nii.gz", d / "g.json", d / "m.nii.gz", "t1", "cubic",
                   d / "truth.nii.gz")
    entry = qc_record(row, d / "cubic.nii.gz", d / "g.json", d / "m.nii.gz")
    assert entry["consistency_psnr"] == row["consistency_psnr"] and entry["fwhm_header_mm"] == 6.0
    assert entry["uncertainty_mean"] is None and entry["warnings"] == []
    assert entry["fwhm_wide_reading_mm"] == g.fwhm_wide_reading_mm >= entry["fwhm_estimate_mm"] > 0
    periodic = dict(row, periodic_artifact=2.5)
    warned = qc_record(periodic, d / "cubic.nii.gz", d / "g.json", d / "m.nii.gz")
    assert len(warned["warnings"]) == 1 and "every 3 output slices" in warned["warnings"][0]
    assert "noise_scale" not in warned["warnings"][0]      # interpolation has no noise level to raise
    learned = qc_record(dict(periodic, method="sr_self"), d / "cubic.nii.gz", d / "g.json", d / "m.nii.gz")
    assert "sr.train.noise_scale" in learned["warnings"][0]
    json.dumps(entry)   # plain JSON: no NaN
    write_row(entry, d / "a.json")
    write_row(dict(warned, subject="s0"), d / "b.json")
    collect_qc([d / "a.json", d / "b.json"], d / "qc.csv")
    with open(d / "qc.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["subject"] for r in rows] == ["s0", "t1"]
    assert "every 3 output slices" in rows[0]["warnings"] and rows[1]["warnings"] == ""
    assert float(rows[1]["fwhm_wide_reading_mm"]) == pytest.approx(g.fwhm_wide_reading_mm, rel=1e-5)
