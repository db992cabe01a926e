"""Consistency with the acquisition: re-acquisition of an output, its PSNR against the real
slices, and the least-squares correction (real T1, simulated thick slices)."""

from __future__ import annotations

import numpy as np
import pytest

from thinslice.consistency import CONSISTENCY_CAP_DB, acquisition_matrix, consistency_psnr, make_consistent
from thinslice.degrade import degrade
from thinslice.interpolate import upsample
from thinslice.metrics import psnr

CASES = [(2, "gaussian"), (3, "gaussian"), (3, "box"), (4, "gaussian")]


def _simulated(anatomical, r, model):
    """(truth on the output grid, thick slices): thickness = spacing, 2 mm voxels."""
    data = anatomical[0]
    n = (data.shape[2] - 1) // r * r + 1
    truth = data[:, :, :n]
    return truth, degrade(truth, 2, r, model, 2.0 * r, 2.0)


@pytest.mark.parametrize("r,model", CASES)
def test_the_matrix_is_the_slice_model(anatomical, r, model):
    truth, lr = _simulated(anatomical, r, model)
    d = acquisition_matrix(lr.shape[2], truth.shape[2], r, model, 2.0 * r, 2.0)
    np.testing.assert_allclose(truth @ d.T, lr, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("r,model", CASES)
def test_the_truth_is_far_more_consistent_than_interpolation(anatomical, r, model):
    truth, lr = _simulated(anatomical, r, model)
    mask = lr > 20
    scores = {name: consistency_psnr(out, lr, 2, r, model, 2.0 * r, 2.0, mask) for name, out in
              [("truth", truth), ("cubic", upsample(lr, 2, r, "cubic")), ("linear", upsample(lr, 2, r, "linear"))]}
    assert scores["truth"] > 80 and scores["truth"] <= CONSISTENCY_CAP_DB
    assert scores["truth"] > scores["cubic"] + 30, scores
    assert scores["cubic"] > scores["linear"], scores   # linear blurs more


@pytest.mark.parametrize("r,model", CASES)
def test_the_correction_re_acquires_exactly_and_never_moves_away_from_the_truth(anatomical, r, model):
    truth, lr = _simulated(anatomical, r, model)
    mask = truth > 20
    for method in ("linear", "cubic"):
        out = upsample(lr, 2, r, method)
        fixed = make_consistent(out, lr, 2, r, model, 2.0 * r, 2.0)
        assert consistency_psnr(fixed, lr, 2, r, model, 2.0 * r, 2.0) > 70
        # the correction is an orthogonal projection of the error: it can only shrink it
        assert np.linalg.norm(fixed - truth) <= np.linalg.norm(out - truth)
        assert psnr(fixed, truth, mask) > psnr(out, truth, mask) + 0.1


def test_the_correction_leaves_what_the_acquisition_cannot_see(anatomical):
    r, model = 3, "gaussian"
    truth, lr = _simulated(anatomical, r, model)
    out = upsample(lr, 2, r, "cubic")
    change = make_consistent(out, lr, 2, r, model, 2.0 * r, 2.0) - out
    d = acquisition_matrix(lr.shape[2], truth.shape[2], r, model, 2.0 * r, 2.0)
    row_space = d.T @ np.linalg.pinv(d.T)       # projector onto the row space of D
    np.testing.assert_allclose(change @ row_space.T, change, atol=1e-3)
    # an output that already re-acquires exactly is left as it is
    np.testing.assert_allclose(make_consistent(truth, lr, 2, r, model, 2.0 * r, 2.0), truth, atol=1e-2)


@pytest.mark.parametrize("model", ["gaussian", "box", "skip"])
def test_the_matrix_of_any_ratio_is_the_profile_around_each_real_slice(model):
    # a ratio a hair off 3 takes the general path: it must agree with the integer slice model
    # away from the edges, and each row of an odd ratio (2.5) is centred on i * ratio
    exact = acquisition_matrix(9, 25, 3, model, 6.0, 2.0)
    general = acquisition_matrix(9, 25, 3 + 1e-9, model, 6.0, 2.0)
    np.testing.assert_allclose(general[2:-2], exact[2:-2], atol=2e-5)   # the Gaussian reaches a tap further
    d = acquisition_matrix(7, 16, 2.5, model, 5.0, 2.0)
    np.testing.assert_allclose(d.sum(axis=1), 1.0)
    np.testing.assert_allclose(d[2:-2] @ np.arange(16), np.arange(2, 5) * 2.5, atol=1e-6)   # rows clear of the edges


def test_at_a_non_integer_ratio_the_truth_is_consistent_and_the_correction_exact(anatomical):
    # 1 mm truth, Gaussian 5 mm slices every 5 mm, output grid at 2 mm (ratio 2.5)
    data = anatomical[0]
    hr = upsample(data, 2, 2, "cubic")[:, :, :41]     # a 1 mm volume of 41 slices
    lr = degrade(hr, 2, 5, "gaussian", 5.0, 1.0)      # 9 slices at 0, 5, ..., 40 mm
    truth = hr[:, :, ::2]                             # the output grid: 0, 2, ..., 40 mm
    mask = lr > 20
    ratio = 2.5
    scores = {name: consistency_psnr(out, lr, 2, ratio, "gaussian", 5.0, 2.0, mask)
              for name, out in [("truth", truth), ("cubic", upsample(lr, 2, ratio, "cubic"))]}
    assert scores["truth"] > scores["cubic"] + 10, scores
    fixed = make_consistent(upsample(lr, 2, ratio, "cubic"), lr, 2, ratio, "gaussian", 5.0, 2.0)
    assert consistency_psnr(fixed, lr, 2, ratio, "gaussian", 5.0, 2.0) > 70
