"""Stage 2: training pairs, the SR network, its model files, resuming and inference."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch

from thinslice import metrics, sr, sr_inference, sr_training
from thinslice.degrade import blur, degrade
from thinslice.errors import ThinsliceError
from thinslice.interpolate import upsample
from thinslice.pairs import Pair, resample_axis, rotated_in_plane, self_pairs, synthetic_pairs
from thinslice.settings import SRConfig
from thinslice.training import data_fingerprint

ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")

torch.set_num_threads(1)  # small tensors: threads only add overhead (and stall on a busy machine)


def _phantom(shape=(24, 28, 21), seed=0) -> np.ndarray:
    """Smooth random blobs in [0, 1]: structure at several scales along every axis."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


@pytest.fixture(scope="module")
def anatomical():
    img = nib.load(ANATOMICAL)
    return np.asarray(img.dataobj, dtype=np.float32)  # real T1, 33x41x25 at 2 mm


def _random_tail(model: sr.SRNet, seed=0) -> sr.SRNet:
    """A net whose output is not just its input (the last layer starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.tail.weight.copy_(torch.randn(model.tail.weight.shape, generator=g) * 0.05)
    return model.eval()


# --------------------------------------------------------------------------- pairs

def test_synthetic_pairs_lie_on_the_real_grid():
    r, axis = 4, 2
    hr = _phantom((20, 22, 4 * 5 + 1))                       # (n-1)*r+1 slices
    real_lr = degrade(hr, axis, r, "gaussian", 4.0, 1.0)       # the "real" acquisition
    (pair,) = synthetic_pairs(hr, axis, r, "gaussian", 4.0, 1.0)
    assert isinstance(pair, Pair) and pair.axis == axis and pair.factor == r and pair.context is None
    assert pair.input.shape == pair.target.shape == hr.shape
    assert pair.input.dtype == pair.target.dtype == np.float32
    np.testing.assert_array_equal(pair.target, hr)
    # the degraded grid is the real LR grid: the input passes through its slices
    np.testing.assert_allclose(pair.input[:, :, ::r], real_lr, atol=1e-5)
    np.testing.assert_allclose(pair.input, upsample(real_lr, axis, r), atol=1e-6)


def test_synthetic_pairs_drop_trailing_slices_past_the_last_lr_slice():
    (pair,) = synthetic_pairs(_phantom((10, 23, 12)), 1, 4, "box", 4.0, 1.0)
    assert pair.input.shape == pair.target.shape == (10, 21, 12)


def test_self_pairs_degrade_each_in_plane_axis():
    r = 4
    lr = _phantom((26, 29, 9))       # slice axis 2; in-plane already at the target spacing
    pairs = self_pairs(lr, 2, r, "gaussian", 4.0, 4.0, (1.0, 1.0))
    assert [(p.axis, p.context, p.factor) for p in pairs] == [(0, (1,), r), (1, (0,), r)]
    assert pairs[0].input.shape == pairs[0].target.shape == (25, 29, 9)   # (7-1)*4+1 along axis 0
    assert pairs[1].input.shape == pairs[1].target.shape == (26, 29, 9)   # (8-1)*4+1 along axis 1
    np.testing.assert_array_equal(pairs[1].target, lr)
    expected = blur(lr, 1, "gaussian", 4.0, 1.0)[:, ::r]
    np.testing.assert_allclose(pairs[1].input[:, ::r], expected, atol=1e-5)


def test_self_pairs_share_one_target_array_for_both_in_plane_axes():
    # a scan loaded from NIfTI is Fortran-ordered; where the targets are the scan itself (in-plane
    # spacing = output spacing), both axes' targets are views of one C-ordered copy, not one copy each
    lr = np.asfortranarray(_phantom((26, 29, 9)))
    pairs = self_pairs(lr, 2, 4, "gaussian", 4.0, 4.0, (1.0, 1.0))
    assert np.shares_memory(pairs[0].target, pairs[1].target)
    np.testing.assert_array_equal(pairs[1].target, lr)


def test_self_pairs_resample_in_plane_axes_to_the_target_spacing():
    # knee-like: 0.625 mm in-plane, 4 mm slices, r = 4 -> target 1 mm
    lr = _phantom((33, 40, 6))
    pairs = self_pairs(lr, 2, 4, "gaussian", 3.0, 4.0, (0.625, 0.625))
    n0 = int(np.floor(32 * 0.625)) + 1     # 21 samples at 1 mm along axis 0
    n1 = int(np.floor(39 * 0.625)) + 1     # 25 along axis 1
    assert pairs[0].target.shape == ((n0 - 1) // 4 * 4 + 1, 40, 6)
    assert pairs[1].target.shape == (33, (n1 - 1) // 4 * 4 + 1, 6)


@pytest.mark.parametrize("spacing_mm, r", [(8.0, 2), (4.0, 4)])
def test_self_pairs_simulate_the_slices_on_the_in_plane_grid(spacing_mm, r):
    # 3 mm slices from a 0.5 mm in-plane axis: the simulated slices are the in-plane lines blurred
    # with the slice profile alone (as the real ones are), not after an anti-alias filter for the
    # output grid. The target is the output grid's resampling when the output spacing is finer than
    # the slices are thick (1 mm), the lines blurred with the slice profile when it is not (4 mm).
    lr = _phantom((97, 40, 6))
    pairs = self_pairs(lr, 2, r, "gaussian", 3.0, spacing_mm, (0.5, 0.5))
    out_mm = spacing_mm / r
    step = int(spacing_mm / 0.5)
    profile = blur(lr, 0, "gaussian", 3.0, 0.5)
    n = (96 // step) * r + 1                                          # the output grid up to the last slice
    assert pairs[0].target.shape == (n, 40, 6)
    np.testing.assert_allclose(pairs[0].input[::r], profile[::step], atol=1e-5)
    expected = profile[::int(out_mm / 0.5)] if out_mm >= 3.0 else resample_axis(lr, 0, 0.5, out_mm)
    np.testing.assert_allclose(pairs[0].target, expected[:n], atol=1e-5)


def test_self_pairs_at_every_offset_of_the_output_grid():
    # 3 mm slices 8 mm apart from a 0.5 mm axis, output at 4 mm (r = 2): offset 1 simulates the
    # slices at 4, 12, 20, ... mm, the output samples that offset 0 leaves between its slices
    lr = _phantom((97, 40, 6))
    pairs = self_pairs(lr, 2, 2, "gaussian", 3.0, 8.0, (0.5, 0.5), all_offsets=True)
    assert [(p.axis, p.context) for p in pairs] == [(0, (1,)), (0, (1,)), (1, (0,)), (1, (0,))]
    first = self_pairs(lr, 2, 2, "gaussian", 3.0, 8.0, (0.5, 0.5))
    np.testing.assert_array_equal(pairs[0].input, first[0].input)
    profile = blur(lr, 0, "gaussian", 3.0, 0.5)
    shifted = pairs[1]
    assert shifted.target.shape == (11, 40, 6)                        # 4 .. 44 mm
    np.testing.assert_allclose(shifted.target, profile[8:96:8], atol=1e-5)
    np.testing.assert_allclose(shifted.input[::2], profile[8::16], atol=1e-5)


def test_rotated_copies_turn_the_scan_in_millimetres():
    # a quarter turn is a transpose of the in-plane axes; a disc 16 mm across on 0.5 x 1 mm voxels
    # turned by 30 degrees is that disc on 0.5 mm voxels (the coarser axis upsampled first)
    lr = _phantom((30, 30, 5))
    turned, spacing = rotated_in_plane(lr, 2, 1.0, 90.0)
    assert spacing == 1.0
    quarter = [np.rot90(lr, k, axes=(0, 1)) for k in (1, -1)]
    assert min(np.abs(turned - q)[3:-3, 3:-3].max() for q in quarter) < 1e-4
    x, y = np.meshgrid(np.arange(64) * 0.5 - 15.75, np.arange(32) * 1.0 - 15.5, indexing="ij")   # centred
    disc = np.repeat(((x ** 2 + y ** 2) < 64).astype(np.float32)[:, :, None], 3, axis=2)
    turned, spacing = rotated_in_plane(disc, 2, (0.5, 1.0), 30.0)
    assert spacing == 0.5 and turned.shape == (64, 63, 3)             # 31 mm of y at 0.5 mm
    x, y = np.meshgrid(np.arange(64) * 0.5 - 15.75, np.arange(63) * 0.5 - 15.5, indexing="ij")
    assert np.mean((turned > 0.5) == ((x ** 2 + y ** 2) < 64)[:, :, None]) > 0.99


def test_self_pairs_of_rotated_copies():
    # n rotations: the scan's pairs, then those of each copy turned by 90 k / (n + 1) degrees
    lr = _phantom((40, 36, 6))
    plain = self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, (1.0, 1.0))
    pairs = self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, (1.0, 1.0), rotations=2)
    assert len(pairs) == 3 * len(plain) and [p.axis for p in pairs] == [0, 1] * 3
    for k in (0, 1):
        np.testing.assert_array_equal(pairs[k].input, plain[k].input)
    for k, degrees in ((2, 30.0), (4, 60.0)):
        turned = self_pairs(rotated_in_plane(lr, 2, 1.0, degrees)[0], 2, 2, "gaussian", 3.0, 4.0, 1.0)
        for got, expected in zip(pairs[k:k + 2], turned):
            np.testing.assert_array_equal(got.target, expected.target)
            np.testing.assert_array_equal(got.input, expected.input)


def test_self_pairs_of_scaled_copies():
    # scale s: the pairs of the scan and its rotated copy, then those of both read at s times the spacing
    lr = _phantom((40, 36, 6))
    plain = self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, (1.0, 1.0), rotations=1)
    pairs = self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, (1.0, 1.0), rotations=1, scale=0.8)
    assert len(pairs) == 2 * len(plain)
    turned = rotated_in_plane(lr, 2, 1.0, 45.0)[0]
    smaller = [*self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, 0.8), *self_pairs(turned, 2, 2, "gaussian", 3.0, 4.0, 0.8)]
    for got, expected in zip(pairs, plain + smaller):
        np.testing.assert_array_equal(got.target, expected.target)
        np.testing.assert_array_equal(got.input, expected.input)
    assert (plain[0].target.shape[0], pairs[4].target.shape[0]) == (19, 15)   # 39 or 31.2 mm on a 2 mm grid
    with pytest.raises(ThinsliceError, match="scale"):
        self_pairs(lr, 2, 2, "gaussian", 3.0, 4.0, 1.0, scale=1.25)


def test_resample_axis_keeps_the_first_sample_and_reproduces_a_ramp():
    ramp = np.broadcast_to(np.arange(41, dtype=np.float32)[:, None, None] * 0.5, (41, 3, 2)).copy()
    out = resample_axis(ramp, 0, 0.5, 0.25)                    # upsampling: no prefilter
    assert out.shape == (81, 3, 2)
    np.testing.assert_allclose(out[20:-20, 0, 0], np.arange(20, 61) * 0.25, atol=1e-4)
    assert resample_axis(ramp, 0, 1.0, 1.0) is not None and resample_axis(ramp, 0, 1.0, 1.0).shape == ramp.shape


def test_pairs_reject_bad_input():
    with pytest.raises(ThinsliceError, match="too short"):
        self_pairs(_phantom((3, 20, 5)), 2, 4, "gaussian", 4.0, 4.0, 1.0)
    with pytest.raises(ThinsliceError, match="NaN"):
        synthetic_pairs(np.full((9, 9, 9), np.nan), 2, 2, "skip", 2.0, 1.0)
    with pytest.raises(ThinsliceError, match="slice model"):
        synthetic_pairs(_phantom((9, 9, 9)), 2, 2, "sinc", 2.0, 1.0)


def test_patches_start_on_real_samples_even_when_flipped():
    r = 4
    hr = _phantom((30, 31, 29))
    (pair,) = synthetic_pairs(hr, 1, r, "skip", 4.0, 1.0)
    phase = np.broadcast_to((np.arange(pair.input.shape[1]) % r)[None, :, None], pair.input.shape)
    for arch in ("2d", "3d"):
        config = SRConfig(architecture=arch, patch_size=12, foreground_fraction=0.5)
        sampler = sr_training.PatchSampler([Pair(phase, pair.target, 1, r)], config)
        x, _ = sampler.batch(64)
        assert x.shape == ((64, 1, 12, 12) if arch == "2d" else (64, 1, 12, 12, 12))
        np.testing.assert_array_equal(x[..., ::r], 0)          # degraded axis is the last one
        after = x[..., 1::r]                                     # flipped: the sample before a real one
        assert set(np.unique(after)) == {1, r - 1}
        assert np.all(x[..., 2::r] == 2)



def test_pairs_cropped_from_one_volume_share_it_and_its_foreground():
    # a scan's self pairs at several offsets are boxes of one target volume: it is listed once,
    # and patches centred on its foreground land on that foreground in each box
    volume = np.zeros((49, 30, 12), np.float32)
    volume[30:32] = 1.0                                           # the foreground: two planes
    boxes = [volume[k:k + 33] for k in (0, 16)]
    sampler = sr_training.PatchSampler([Pair(box, box, 0, 4, (1,), "self") for box in boxes],
                                       SRConfig(patch_size=12, foreground_fraction=1.0))
    first, second = sampler.data
    assert second.foreground is first.foreground and second.origin == (16, 0, 0)
    _, y = sampler.batch(64)
    assert np.all(y.max(axis=(1, 2, 3)) == 1.0)


def test_foreground_bit_mask_gives_the_voxels_a_list_would():
    # the k-th foreground voxel in C order, across blocks of bits with and without foreground and a
    # volume whose size is no multiple of 8
    rng = np.random.default_rng(0)
    mask = rng.random((23, 37, 29)) < 0.3
    mask[5:15] = False                                            # empty blocks in between
    listed = np.flatnonzero(mask)
    fg = sr_training._Foreground(mask, lambda bits: bits)
    assert fg.size == listed.size and fg.bits.nbytes == -(-mask.size // 8)
    assert [fg[k] for k in range(fg.size)] == listed.tolist()
    with pytest.raises(IndexError):
        fg[fg.size]
    assert sr_training._Foreground(np.zeros((4, 4, 4), bool), lambda bits: bits).size == 0


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_synthetic_share_sets_the_mix_of_pair_sources(share):
    r = 2
    (synthetic,) = synthetic_pairs(_phantom((40, 40, 41)), 2, r, "gaussian", 2.0, 1.0)
    own = self_pairs(_phantom((20, 22, 9)), 2, r, "gaussian", 2.0, 2.0, 1.0)
    sampler = sr_training.PatchSampler([synthetic, *own], SRConfig(patch_size=8, synthetic_share=share))
    assert sampler.weights[0] == pytest.approx(share)
    # within a source, pairs are drawn in proportion to their voxels
    sizes = np.array([p.target.size for p in own], float)
    if share < 1:
        np.testing.assert_allclose(sampler.weights[1:], (1 - share) * sizes / sizes.sum())
    # one source alone: the share does not apply
    alone = sr_training.PatchSampler(own, SRConfig(patch_size=8, synthetic_share=share))
    np.testing.assert_allclose(alone.weights, sizes / sizes.sum())

def test_spilled_pairs_sample_as_in_memory_ones(tmp_path):
    # pairs read from a generator and moved to memory-mapped files draw the same batches, with
    # the same data fingerprint, as pairs held in memory (so a checkpoint resumes either way)
    def pairs():
        yield from synthetic_pairs(_phantom((30, 32, 21)), 2, 2, "gaussian", 2.0, 1.0)
        yield from self_pairs(_phantom((20, 22, 9), seed=1), 2, 2, "gaussian", 2.0, 2.0, 1.0)

    config = SRConfig(patch_size=8, synthetic_share=0.3)
    held = sr_training.PatchSampler(list(pairs()), config)
    spilled = sr_training.PatchSampler(pairs(), config, spill=tmp_path)
    assert spilled.fingerprint == held.fingerprint == data_fingerprint(*[item for pair in pairs() for item in pair])
    assert all(isinstance(d.input.slices, np.memmap) and isinstance(d.foreground.bits, np.memmap)
               and isinstance(d.target.base, np.memmap) for d in spilled.data)
    # an input's slices per pair; a target volume and its foreground mask for the synthetic pair, and
    # one for the two self pairs, whose targets are both the scan itself (1 mm in-plane, 1 mm output)
    assert len(list(tmp_path.glob("pair*_*.npy"))) == len(held.data) + 2 * 2 == 7
    for _ in range(3):
        for a, b in zip(held.batch(16), spilled.batch(16)):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- network and inference

def test_untrained_net_returns_its_input():
    vol = _phantom((17, 19, 25))
    for arch in ("2d", "3d"):
        model = sr.build_model(SRConfig(architecture=arch, channels=8, depth=1), 4).eval()
        out, spread = sr_inference.apply_sr_with_spread(model, vol, 2, device="cpu")   # flipped ones too
        np.testing.assert_allclose(out, vol, atol=1e-6)
        np.testing.assert_allclose(spread, 0, atol=1e-6)


def _unflipped_mean(model, vol, axis, **options) -> np.ndarray:
    """The mean of the net's predictions of the volume itself (the first half: the flipped ones follow)."""
    ys = list(sr_inference.predictions(model, vol, axis, **options))
    return sum(ys[:len(ys) // 2]) / (len(ys) // 2)


@pytest.mark.parametrize("arch", ["2d", "3d"])
@pytest.mark.parametrize("unshuffle", [True, False])
def test_sliding_window_equals_whole_volume(arch, unshuffle):
    r, axis = 2, 1
    vol = _phantom((30, 45, 27), seed=1)
    model = _random_tail(sr.build_model(SRConfig(architecture=arch, channels=8, depth=1,
                                                    unshuffle=unshuffle), r))
    windows = _unflipped_mean(model, vol, axis, patch=20, device="cpu", batch_size=3)
    whole = _unflipped_mean(model, vol, axis, patch=1000, device="cpu")
    assert windows.shape == vol.shape and windows.dtype == np.float32
    assert np.abs(whole - vol).max() > 1e-3                    # the net does something
    np.testing.assert_allclose(windows, whole, atol=1e-5)
    # "whole" is the net applied directly to whole images / the whole volume
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(vol, axis, -1)))
        if arch == "2d":   # (C, W, H) for W = each other axis, averaged
            a = model(t[:, None])[:, 0]
            b = model(t.transpose(0, 1)[:, None])[:, 0].transpose(0, 1)
            direct = ((a + b) / 2).numpy()
        else:
            direct = model(t[None, None])[0, 0].numpy()
    np.testing.assert_allclose(whole, np.moveaxis(direct, -1, axis), atol=1e-5)


@pytest.mark.parametrize("arch,axis", [("2d", 1), ("2d", 0), ("2d", 2), ("3d", 1)])
def test_super_resolve_by_regions_equals_the_whole_volume_path(arch, axis, monkeypatch):
    """Region by region from the LR scan: the output and the spread of the whole-volume path."""
    r = 2
    shape = [30, 22, 27]
    shape[axis] = 9
    lr = _phantom(tuple(shape), seed=2)
    model = _random_tail(sr.build_model(SRConfig(architecture=arch, channels=8, depth=1), r))
    up = upsample(lr, axis, r, "cubic")
    whole, whole_sd = sr_inference.apply_sr_with_spread(model, up, axis, patch=20, device="cpu", batch_size=2)
    monkeypatch.setattr(sr_inference, "SLAB_VOXELS", 17 * 17 * up.shape[axis])   # regions of 9 x 9
    out, sd = sr_inference.super_resolve(model, lr, axis, spread=True, spread_scale=3.0, patch=20, device="cpu",
                                         batch_size=2)
    plain, none = sr_inference.super_resolve(model, lr, axis, patch=20, device="cpu", batch_size=2)
    assert out.shape == sd.shape == up.shape and none is None
    assert np.abs(out - up).max() > 1e-3 and sd.max() > 1e-4   # the net does something, and the passes differ
    np.testing.assert_allclose(out, whole, atol=1e-6)
    np.testing.assert_array_equal(plain, out)
    # variances (float32): about 1e-7 apart; near zero a square root would magnify that
    np.testing.assert_allclose(sd.astype(np.float64) ** 2, 9 * whole_sd.astype(np.float64) ** 2, rtol=1e-4,
                               atol=2e-6)


# --------------------------------------------------------------------------- model files

def test_model_file_round_trip(tmp_path):
    config = SRConfig(channels=8, depth=2)
    model = _random_tail(sr.build_model(config, 3))
    meta = {"factor": 3, "slice_model": "gaussian", "thickness_mm": np.float64(3.0), "norm": (0.0, 250.0)}
    path = tmp_path / "sr.pt"
    sr.save_model(path, model, config, meta)
    loaded, got = sr.load_model(path)
    assert got["factor"] == 3 and got["slice_model"] == "gaussian" and got["thickness_mm"] == 3.0
    assert got["config"]["channels"] == 8 and got["config"]["depth"] == 2
    vol = _phantom((12, 14, 16))
    np.testing.assert_array_equal(sr_inference.apply_sr_with_spread(loaded, vol, 2, device="cpu")[0],
                                  sr_inference.apply_sr_with_spread(model, vol, 2, device="cpu")[0])


def test_load_model_rejects_other_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    with pytest.raises(ThinsliceError, match="not a thinslice SR model"):
        sr.load_model(text)
    other = tmp_path / "other.pt"
    torch.save({"kind": "thinslice-vae", "state_dict": {}}, other)
    with pytest.raises(ThinsliceError, match="not a thinslice SR model"):
        sr.load_model(other)
    with pytest.raises(ThinsliceError, match="no such model file"):
        sr.load_model(tmp_path / "missing.pt")


def test_apply_sr_refuses_a_volume_off_the_output_grid():
    model = sr.build_model(SRConfig(channels=8, depth=1), 4)
    with pytest.raises(ThinsliceError, match="factor 4"):
        sr_inference.apply_sr_with_spread(model, _phantom((10, 10, 24)), 2, device="cpu")


def test_config_errors_name_the_key():
    with pytest.raises(ThinsliceError, match="sr.train.architecture"):
        SRConfig(architecture="4d")
    with pytest.raises(ThinsliceError, match="sr.train.foreground_fraction"):
        SRConfig(foreground_fraction=1.5)
    with pytest.raises(ThinsliceError, match="unknown setting"):
        SRConfig.from_dict({"chanels": 3})


def test_3d_architecture_refuses_self_pairs(tmp_path):
    pairs = self_pairs(_phantom((26, 29, 9)), 2, 4, "gaussian", 4.0, 4.0, 1.0)
    with pytest.raises(ThinsliceError, match="architecture '2d'"):
        sr_training.train_sr(pairs, SRConfig(architecture="3d", steps=1), tmp_path / "c", tmp_path / "l.csv",
                    device="cpu", progress=False)


# --------------------------------------------------------------------------- training

def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    hr = _phantom((24, 26, 25))
    pairs = synthetic_pairs(hr, 2, 4, "gaussian", 4.0, 1.0) + self_pairs(hr[:, :, ::4], 2, 4, "gaussian", 4.0, 4.0, 1.0)
    config = SRConfig(channels=8, depth=1, patch_size=12, batch_size=4, steps=8, checkpoint_every=3,
                         log_every=2, gradient_loss_weight=0.1)
    whole = sr_training.train_sr(pairs, config, tmp_path / "a.ckpt", tmp_path / "a.csv", device="cpu", progress=False)

    calls = {"n": 0}
    batch = sr_training.PatchSampler.batch

    def crash_on_fifth(self, n):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return batch(self, n)

    monkeypatch.setattr(sr_training.PatchSampler, "batch", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        sr_training.train_sr(pairs, config, tmp_path / "b.ckpt", tmp_path / "b.csv", device="cpu", progress=False)
    monkeypatch.setattr(sr_training.PatchSampler, "batch", batch)
    assert torch.load(tmp_path / "b.ckpt", weights_only=True)["step"] == 3
    resumed = sr_training.train_sr(pairs, config, tmp_path / "b.ckpt", tmp_path / "b.csv", device="cpu", progress=False)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


@pytest.mark.parametrize("loss", ["l1", "l2", "l1_then_l2"])
def test_the_pixel_loss_is_the_configured_one(tmp_path, loss):
    """The first logged pixel loss is the untrained network's mean absolute (l1) or squared (l2)
    error on the first batch, recomputed here from the same seed; with one step, l1_then_l2 is in its
    L2 third from the start: mean squared / (2 x mean absolute)."""
    pairs = synthetic_pairs(_phantom((20, 20, 21)), 2, 4, "gaussian", 4.0, 1.0)
    config = SRConfig(channels=8, depth=1, patch_size=12, batch_size=4, steps=1, log_every=1, loss=loss)
    sr_training.train_sr(pairs, config, tmp_path / "c", tmp_path / "l.csv", device="cpu", progress=False)
    logged = float(np.genfromtxt(tmp_path / "l.csv", delimiter=",", names=True)["pixel"])

    sr_training.seed_everything(config.seed)
    sampler = sr_training.PatchSampler(pairs, config)
    model = sr.build_model(config, sampler.factor)
    x, y = (torch.from_numpy(a) for a in sampler.batch(config.batch_size))
    with torch.no_grad():
        error = model(x) - y
    expected = {"l1": error.abs().mean(), "l2": error.square().mean(),
                "l1_then_l2": error.square().mean() / (2 * error.abs().mean())}[loss]
    assert logged == pytest.approx(float(expected), rel=1e-4)


def test_l1_then_l2_switches_at_two_thirds_and_keeps_l1s_gradient_scale():
    """L1 up to step 3999 of 6000, then L2 whose gradient has L1's mean magnitude (1 / n per
    element), so that Adam's steps do not change scale at the switch."""
    error = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    assert sr_training.pixel_loss(error, "l1_then_l2", 3999, 6000) == error.abs().mean()
    late = error.clone().requires_grad_()
    sr_training.pixel_loss(late, "l1_then_l2", 4000, 6000).backward()
    assert torch.allclose(late.grad, error / (error.numel() * error.abs().mean()))
    assert float(late.grad.abs().mean()) == pytest.approx(1 / error.numel(), rel=1e-5)


def test_a_checkpoint_of_other_settings_starts_over(tmp_path, capfd):
    """A config change reruns train_sr in the workflow: it trains anew instead of failing."""
    pairs = synthetic_pairs(_phantom((20, 20, 21)), 2, 4, "gaussian", 4.0, 1.0)
    config = SRConfig(channels=8, depth=1, patch_size=12, batch_size=2, steps=1)
    sr_training.train_sr(pairs, config, tmp_path / "c", tmp_path / "l.csv", device="cpu", progress=False)
    other = SRConfig(channels=4, depth=1, patch_size=12, batch_size=2, steps=2)
    capfd.readouterr()
    rerun = sr_training.train_sr(pairs, other, tmp_path / "c", tmp_path / "l.csv", device="cpu", progress=False)
    assert "other settings (channels, steps); training starts over" in capfd.readouterr().err
    fresh = sr_training.train_sr(pairs, other, tmp_path / "f", tmp_path / "f.csv", device="cpu", progress=False)
    for (name, a), (_, b) in zip(fresh.state_dict().items(), rerun.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ThinsliceError, match="not a thinslice-sr-checkpoint"):
        torch.save({"kind": "something-else"}, tmp_path / "x")
        sr_training.train_sr(pairs, other, tmp_path / "x", tmp_path / "x.csv", device="cpu", progress=False)


def test_self_supervised_sr_beats_interpolation_on_a_real_volume(anatomical, tmp_path):
    """Real T1 at 2 mm, LR along axis 2 (r = 2, Gaussian FWHM 4 mm): train on the LR alone."""
    gt = anatomical
    lr = degrade(gt, 2, 2, "gaussian", 4.0, 2.0)
    assert lr.shape == (33, 41, 13)
    scale = float(np.percentile(lr, 99.5))
    pairs = self_pairs(lr / scale, 2, 2, "gaussian", 4.0, 4.0, (2.0, 2.0))
    config = SRConfig(channels=16, depth=2, patch_size=24, batch_size=8, steps=200, learning_rate=2e-3)
    model = sr_training.train_sr(pairs, config, tmp_path / "c", tmp_path / "l.csv", device="cpu", progress=False)
    out = sr_inference.super_resolve(model, lr / scale, 2, device="cpu")[0] * scale
    mask = gt > 0.1 * scale
    linear = metrics.psnr(upsample(lr, 2, 2, "linear"), gt, mask)
    cubic = metrics.psnr(upsample(lr, 2, 2, "cubic"), gt, mask)
    got = metrics.psnr(out, gt, mask)
    assert got > linear + 0.5 and got > cubic + 0.3, (got, linear, cubic)
    rows = (tmp_path / "l.csv").read_text().splitlines()
    assert rows[0] == "step,loss,pixel,gradient,lr" and len(rows) == 1 + 200 // config.log_every


def test_a_checkpoint_of_other_training_data_is_not_resumed(tmp_path, capfd):
    """The workflow reruns train_sr when its inputs change (e.g. a new VAE): the finished
    checkpoint of the old pairs must not be returned as the new model."""
    config = SRConfig(channels=8, depth=1, patch_size=12, batch_size=2, steps=4, checkpoint_every=2)
    old = synthetic_pairs(_phantom((20, 20, 21)), 2, 4, "gaussian", 4.0, 1.0)
    new = synthetic_pairs(_phantom((20, 20, 21)) ** 2, 2, 4, "gaussian", 4.0, 1.0)
    sr_training.train_sr(old, config, tmp_path / "c", tmp_path / "a.csv", device="cpu", progress=False)
    fresh = sr_training.train_sr(new, config, tmp_path / "fresh", tmp_path / "f.csv", device="cpu", progress=False)
    capfd.readouterr()
    rerun = sr_training.train_sr(new, config, tmp_path / "c", tmp_path / "b.csv", device="cpu", progress=False)
    assert "other training data; training starts over" in capfd.readouterr().err
    for (name, a), (_, b) in zip(fresh.state_dict().items(), rerun.state_dict().items()):
        assert torch.equal(a, b), name  # trained from scratch on the new pairs, like a fresh run
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "f.csv").read_text()
