"""The noise level estimated from a scan, and simulated thick slices topped up to it."""

import numpy as np
import pytest

from thinslice import noise
from thinslice.degrade import blur, degrade
from thinslice.errors import ThinsliceError
from thinslice.pairs import sample_axis, self_pairs, synthetic_pairs


def _phantom(shape=(64, 64, 16)) -> np.ndarray:
    """A smooth ellipsoid on a dark background (no texture of its own)."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum((g / 0.8) ** 2 for g in grid) < 1
    return np.where(inside, 1.0 + 0.3 * grid[0], 0.05).astype(np.float32)


@pytest.mark.parametrize("sd", [0.01, 0.05])
def test_estimate_sd_finds_the_noise_of_a_scan(sd):
    data = _phantom() + np.random.default_rng(1).normal(0, sd, (64, 64, 16)).astype(np.float32)
    assert noise.estimate_sd(data, slice_axis=2) == pytest.approx(sd, rel=0.1)


def test_estimate_sd_of_a_smooth_scan_is_near_zero():
    assert noise.estimate_sd(_phantom(), slice_axis=2) < 1e-3


@pytest.mark.parametrize("fwhm", [2.0, 4.0])
def test_gain_of_a_gaussian_profile_is_that_of_its_kernel(fwhm):
    # white noise through a normalised Gaussian of sd s samples keeps sqrt(sum k^2) ~ (2 sqrt(pi) s)^-1/2 of its sd
    s = fwhm / 2.3548
    measured = noise.gain(lambda x: degrade(x, 0, 4, "gaussian", fwhm, 1.0), 128)
    assert measured == pytest.approx((2 * np.sqrt(np.pi) * s) ** -0.5, rel=0.02)


def test_gain_of_blurring_then_sampling_between_samples_is_measured_on_white_noise():
    # knee-like: 3 mm slices 8 mm apart simulated on a 0.625 mm in-plane axis (the slices fall between samples)
    def transform(x):
        return sample_axis(blur(x, 0, "gaussian", 3.0, 0.625), 0, np.arange(0, x.shape[0] - 1, 8 / 0.625))
    white = np.random.default_rng(2).normal(0, 1, (400, 64, 64)).astype(np.float32)
    measured = float(np.std(transform(white)[2:-2]))
    assert noise.gain(transform, 128) == pytest.approx(measured, rel=0.03)


def _real_slice_sd(pair, r):
    """The standard deviation of a pair's input at the simulated real slices (every r-th sample along
    its axis, where the cubic upsampling passes through them), away from the edges of that axis."""
    index = [slice(None)] * 3
    index[pair.axis] = slice(r, -r, r)
    return float(np.std(pair.input[tuple(index)]))


@pytest.mark.parametrize("in_plane_mm, spacing_mm, r", [(1.0, 4.0, 4), (0.625, 8.0, 2)])
def test_self_pairs_topped_up_are_as_noisy_as_the_real_scan(in_plane_mm, spacing_mm, r):
    # a flat scan holding only noise: a real thick slice of it has the full noise level, a simulated
    # one (blurred along an in-plane axis) has less, and topping up gives it back
    sd = 0.05
    lr = 1.0 + np.random.default_rng(3).normal(0, sd, (192, 192, 12)).astype(np.float32)
    plain = self_pairs(lr, 2, r, "gaussian", 4.0, spacing_mm, in_plane_mm)
    topped = self_pairs(lr, 2, r, "gaussian", 4.0, spacing_mm, in_plane_mm, noise_sd=sd, rng=np.random.default_rng(4))
    for p, q in zip(plain, topped):
        assert _real_slice_sd(p, r) < 0.5 * sd
        assert _real_slice_sd(q, r) == pytest.approx(sd, rel=0.1)
        np.testing.assert_array_equal(p.target, q.target)      # the targets are untouched


def test_synthetic_pairs_topped_up_are_as_noisy_as_the_real_scan():
    sd, r = 0.05, 2
    hr = 1.0 + np.random.default_rng(5).normal(0, sd, (64, 64, 65)).astype(np.float32)
    (topped,) = synthetic_pairs(hr, 2, r, "gaussian", 2.0, 1.0, noise_sd=sd, rng=np.random.default_rng(6))
    assert _real_slice_sd(topped, r) == pytest.approx(sd, rel=0.1)


def test_noise_matched_self_pairs_beat_plain_ones_on_a_noisy_real_scan(anatomical, tmp_path):
    """Real T1 at 2 mm, thick slices along axis 2 (r = 2, Gaussian FWHM 4 mm) with noise of 5% of the
    bright tissue, scored against the noise-free T1. Pairs without the top-up teach the network
    that the slices' noise is detail to sharpen; pairs topped up to the scan's noise level teach it
    to leave the noise out."""
    from thinslice import metrics
    from thinslice.interpolate import upsample

    truth = anatomical[0]
    scale = float(np.percentile(truth, 99.5))
    clean = degrade(truth / scale, 2, 2, "gaussian", 4.0, 2.0)
    lr = clean + np.random.default_rng(7).normal(0, 0.05, clean.shape).astype(np.float32)
    sd = noise.estimate_sd(lr, slice_axis=2)
    # the scan's own noise and fine texture add to the noise put in (independent: in quadrature)
    assert sd == pytest.approx(np.hypot(0.05, noise.estimate_sd(clean, slice_axis=2)), rel=0.15)
    scores = {}
    for name, pair_sd in (("plain", 0.0), ("matched", sd)):
        pairs = self_pairs(lr, 2, 2, "gaussian", 4.0, 4.0, (2.0, 2.0), noise_sd=pair_sd,
                           rng=np.random.default_rng(8))
        scores[name] = _trained_sr_psnr(pairs, lr, truth, scale, 200, tmp_path / name)
    cubic = metrics.psnr(upsample(lr, 2, 2) * scale, truth, truth > 0.1 * scale)
    assert scores["matched"] > scores["plain"] + 0.5 and scores["matched"] > cubic + 0.3, (scores, cubic)


def _trained_sr_psnr(pairs, lr, truth, scale, steps, work) -> float:
    """PSNR against `truth` (over voxels above 10% of `scale`) of a small SR network trained on
    `pairs` for `steps` steps, one thread, then applied to `lr` (intensities / `scale`, x2 along axis 2)."""
    import torch

    from thinslice import metrics, sr_inference, sr_training
    from thinslice.settings import SRConfig

    torch.set_num_threads(1)
    config = SRConfig(channels=16, depth=2, patch_size=24, batch_size=8, steps=steps, learning_rate=2e-3)
    model = sr_training.train_sr(pairs, config, work, f"{work}.csv", device="cpu", progress=False)
    out = sr_inference.super_resolve(model, lr, 2, device="cpu")[0]
    n = min(out.shape[2], truth.shape[2])
    return metrics.psnr(out[..., :n] * scale, truth[..., :n], truth[..., :n] > 0.1 * scale)


def _t1_at_1mm_in_plane(anatomical):
    """The real T1 cubic-upsampled to 1 mm in-plane (truth), its 99.5th percentile (scale), and its
    noise-free thick slices along axis 2 (r = 2, Gaussian FWHM 4 mm; intensities / scale)."""
    from scipy import ndimage

    truth = ndimage.zoom(anatomical[0], (2, 2, 1), order=3)
    scale = float(np.percentile(truth, 99.5))
    return truth, scale, degrade(truth / scale, 2, 2, "gaussian", 4.0, 2.0)


def test_denoised_takes_the_noise_out_of_a_real_scan_and_leaves_a_clean_one(anatomical):
    """Non-local means within the slices of nibabel's real T1 (cubic-upsampled to 1 mm in-plane, a
    scan's usual in-plane spacing: at 2 mm a structure is too few pixels for patches to repeat): with
    noise of 5% of the bright tissue it comes several dB closer to the noise-free scan; on the
    noise-free scan, at the level estimated from it (its fine texture), it changes next to nothing."""
    t1, scale, _ = _t1_at_1mm_in_plane(anatomical)
    truth = t1 / scale
    noisy = truth + np.random.default_rng(9).normal(0, 0.05, truth.shape).astype(np.float32)
    mask = truth > 0.1

    def rms(a):
        return float(np.sqrt(np.mean((a - truth)[mask] ** 2)))

    cleaned = noise.denoised(noisy, 2, noise.estimate_sd(noisy, slice_axis=2))
    assert 20 * np.log10(rms(noisy) / rms(cleaned)) > 3.0
    assert cleaned.shape == truth.shape and cleaned.dtype == np.float32
    assert rms(noise.denoised(truth, 2, noise.estimate_sd(truth, slice_axis=2))) < 0.01 * rms(noisy)
    np.testing.assert_array_equal(noise.denoised(truth, 2, 0.0), truth)


def test_self_pairs_take_their_targets_from_the_denoised_scan_and_their_inputs_from_the_scan():
    lr = _phantom((48, 40, 8)) + np.random.default_rng(10).normal(0, 0.05, (48, 40, 8)).astype(np.float32)
    clean = _phantom((48, 40, 8))
    kwargs = dict(noise_sd=0.05, rotations=1, scale=0.8)
    both = self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, (1.0, 1.0), rng=np.random.default_rng(11), clean=clean, **kwargs)
    noisy = self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, (1.0, 1.0), rng=np.random.default_rng(11), **kwargs)
    smooth = self_pairs(clean, 2, 2, "gaussian", 3.0, 4.0, (1.0, 1.0), rng=np.random.default_rng(11), **kwargs)
    assert len(both) == len(noisy) == len(smooth) == 8       # 2 axes x (scan, turned) x (1, 0.8)
    for p, q, s in zip(both, noisy, smooth):
        np.testing.assert_array_equal(np.asarray(p.input), np.asarray(q.input))
        np.testing.assert_array_equal(p.target, s.target)
    with pytest.raises(ThinsliceError, match="denoised scan has shape"):
        self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, 1.0, clean=clean[:, :, :4])


def test_denoised_targets_beat_noisy_ones_on_a_noisy_real_scan(anatomical, tmp_path):
    """Real T1 at 1 mm in-plane (cubic-upsampled from 2 mm), thick slices along axis 2 (r = 2,
    Gaussian FWHM 4 mm) with noise of 5% of the bright tissue, scored against the noise-free T1.
    Noise-matched pairs whose targets are the noisy scan teach the network to keep the part of the
    slices' noise its input shows; targets from the denoised scan teach it to leave all of it out."""
    truth, scale, clean = _t1_at_1mm_in_plane(anatomical)
    lr = clean + np.random.default_rng(7).normal(0, 0.05, clean.shape).astype(np.float32)
    sd = noise.estimate_sd(lr, slice_axis=2)
    scores = {}
    for name, targets in (("noisy", None), ("denoised", noise.denoised(lr, 2, sd))):
        pairs = self_pairs(lr, 2, 2, "gaussian", 4.0, 4.0, (1.0, 1.0), noise_sd=sd, rng=np.random.default_rng(8),
                           clean=targets)
        scores[name] = _trained_sr_psnr(pairs, lr, truth, scale, 400, tmp_path / name)
    assert scores["denoised"] > scores["noisy"] + 0.07, scores


def _filtered_noise(shape, sd, seed) -> np.ndarray:
    """Gaussian noise of standard deviation `sd` smoothed within the slices (axes 0, 1) by a
    (1, 2, 1) / 4 kernel along each: noise as a scanner's reconstruction filter leaves it, not white."""
    from scipy import ndimage

    kernel = np.array([1.0, 2.0, 1.0]) / 4
    n = np.random.default_rng(seed).normal(0, 1, shape)
    n = ndimage.correlate1d(ndimage.correlate1d(n, kernel, axis=0), kernel, axis=1)
    return (sd * n / n.std()).astype(np.float32)


def test_topped_up_to_a_multiple_of_a_filtered_noise_estimate_beats_the_estimate(anatomical, tmp_path):
    """Real T1 at 1 mm in-plane, thick slices along axis 2 (r = 2, Gaussian FWHM 4 mm), noise of 5%
    filtered within the slices. The estimate, made for white noise, reads it about ten times low;
    self pairs topped up to three times it (sr.train.noise_scale: 3) beat those topped up to it."""
    truth, scale, clean = _t1_at_1mm_in_plane(anatomical)
    lr = clean + _filtered_noise(clean.shape, 0.05, seed=7)
    sd = noise.estimate_sd(lr, slice_axis=2)
    assert sd < 0.2 * 0.05
    targets = noise.denoised(lr, 2, sd)
    scores = {}
    for times in (1, 3):
        pairs = self_pairs(lr, 2, 2, "gaussian", 4.0, 4.0, (1.0, 1.0), noise_sd=times * sd,
                           rng=np.random.default_rng(8), clean=targets)
        scores[times] = _trained_sr_psnr(pairs, lr, truth, scale, 400, tmp_path / f"x{times}")
    assert scores[3] > scores[1] + 0.12, scores    # measured: +0.25 dB (+0.25 with noise seed 9)


def test_noise_scale_multiplies_the_top_up_of_the_training_pairs(anatomical_path, tmp_path):
    from thinslice.prepare import prepare, simulate
    from thinslice.settings import SRConfig
    from thinslice.steps import training_pairs

    simulate(anatomical_path, tmp_path / "lr.nii.gz", tmp_path / "truth.nii.gz", axis=2, factor=2,
             profile="gaussian", fwhm_mm=4.0, noise_percent=3.0)
    prepare(tmp_path / "lr.nii.gz", tmp_path / "in.nii.gz", tmp_path / "in.json", tmp_path / "mask.nii.gz",
            thickness_mm=4.0, factor=2)

    def inputs(match_noise, noise_scale=1.0):
        config = SRConfig(match_noise=match_noise, noise_scale=noise_scale, denoise_targets=False,
                          all_offsets=False, rotations=0, scale=1.0)
        pairs = training_pairs("self", [str(tmp_path / "in.nii.gz")], [str(tmp_path / "in.json")], [], "gaussian",
                               config)
        return [np.asarray(p.input, np.float64) for p in pairs]

    plain, once, thrice = inputs(False), inputs(True), inputs(True, 3.0)
    for p, x1, x3 in zip(plain, once, thrice):
        assert np.abs(x1 - p).max() > 0
        np.testing.assert_allclose(x3 - p, 3 * (x1 - p), atol=1e-4)
