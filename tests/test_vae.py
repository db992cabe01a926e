"""Stage-1 VAE: synthesis geometry, real-slice preservation, training, interpolation, resume."""

from __future__ import annotations

import csv
import os
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch

from thinslice.errors import ThinsliceError
from thinslice.interpolate import interpolation_matrix, upsample
from thinslice.settings import VAEConfig
from thinslice.vae import SliceVAE, interpolate_latents, latent_path, load_vae, save_vae, synthesize
from thinslice.vae_training import SliceSampler, train_vae

ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")

# Tiny but real: a few hundred steps on 32-pixel crops of a real T1; reconstruction only
# (the interpolation objective has tests of its own below).
TINY = VAEConfig(levels=2, base_channels=8, latent_channels=4, beta=1e-4, kl_warmup_steps=50,
                 interpolation_weight=0.0, steps=300, batch_size=8, crop_size=32, learning_rate=2e-3,
                 checkpoint_every=100, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convolutions run fastest on one thread (and do not fight a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    """The nibabel T1 (33x41x25 at 2 mm), in [0, ~1], slice axis (2) first: (25, 33, 41)."""
    data = np.asarray(nib.load(ANATOMICAL).dataobj, dtype=np.float32)
    data = data / np.percentile(data, 99.5)
    return np.ascontiguousarray(np.moveaxis(data, 2, 0))


@pytest.fixture(scope="module")
def trained(t1, tmp_path_factory):
    d = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    model = train_vae([t1], TINY, d / "vae.pt", d / "loss.csv", device="cpu", progress=False)
    return model, d


def l1(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def reconstruct(model, slices) -> np.ndarray:
    """The model's reconstructions of `slices`: at r = 1 the latent path is the slices' own latent means."""
    return synthesize(model, slices, 1, interpolation="linear", synthesis="decoded", device="cpu")


def decoded_between(model, a, b, r, interpolation="linear") -> np.ndarray:
    """The slices decoded from the latent path between slices `a` and `b` alone: (r + 1, H, W),
    the reconstructions of `a` and `b` at its ends."""
    return synthesize(model, np.stack([a, b]), r, interpolation=interpolation, synthesis="decoded", device="cpu")


@pytest.mark.parametrize("r", [2, 3])
def test_synthesis_shape_and_real_slices(trained, t1, r):
    model, _ = trained
    n, h, w = t1.shape
    kept = synthesize(model, t1, r, synthesis="kept", device="cpu", batch_size=5)
    assert kept.shape == ((n - 1) * r + 1, h, w) and kept.dtype == np.float32
    assert np.array_equal(kept[::r], t1)  # real slices kept exactly
    assert np.isfinite(kept).all()

    recon = reconstruct(model, t1)
    decoded = synthesize(model, t1, r, synthesis="decoded", device="cpu", batch_size=5)
    np.testing.assert_allclose(decoded[::r], recon, atol=1e-5)
    between = np.ones(len(kept), bool)
    between[::r] = False
    np.testing.assert_allclose(decoded[between], kept[between], atol=1e-5)

    # residual (the default): the decoded path plus the cubic interpolation of the real
    # slices' reconstruction errors; the real slices come out exactly
    residual = synthesize(model, t1, r, device="cpu", batch_size=5)
    assert np.array_equal(residual[::r], t1)
    weights = interpolation_matrix(n, r, "cubic").astype(np.float32)
    expected = decoded + np.einsum("on,nhw->ohw", weights, t1 - recon)
    np.testing.assert_allclose(residual[between], expected[between], atol=1e-4)


def test_synthesis_factor_one_and_bad_input(trained, t1):
    model, _ = trained
    assert np.array_equal(synthesize(model, t1, 1, device="cpu"), t1)
    with pytest.raises(ThinsliceError):
        synthesize(model, t1, 0, device="cpu")
    with pytest.raises(ThinsliceError):
        synthesize(model, t1[0], 2, device="cpu")
    bad = t1.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(ThinsliceError):
        synthesize(model, bad, 2, device="cpu")
    with pytest.raises(ThinsliceError):
        synthesize(model, t1, 2, interpolation="quadratic", device="cpu")
    with pytest.raises(ThinsliceError, match="synthesis"):
        synthesize(model, t1, 2, synthesis="blend", device="cpu")


def test_training_improves_reconstruction(trained, t1):
    model, d = trained
    untrained = load_vae_like(model)
    before = l1(reconstruct(untrained, t1), t1)
    after = l1(reconstruct(model, t1), t1)
    assert after < 0.5 * before, (before, after)
    # and it beats the best constant image (each slice's median) by a wide margin
    flat = l1(np.broadcast_to(np.median(t1, axis=(1, 2), keepdims=True), t1.shape), t1)
    assert after < 0.5 * flat, (flat, after)
    rows = list(csv.DictReader(open(d / "loss.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10, TINY.steps + 1, 10))
    assert float(rows[-1]["recon"]) < float(rows[0]["recon"])


def load_vae_like(model):
    """A freshly initialized VAE of the same config (the state before training)."""
    torch.manual_seed(TINY.seed)
    return SliceVAE(model.config).eval()


def test_interpolation_endpoints_are_reconstructions(trained, t1):
    model, _ = trained
    a, b = t1[10], t1[11]
    out = decoded_between(model, a, b, 2)
    recon = reconstruct(model, np.stack([a, b]))
    assert out.shape == (3, *a.shape)
    np.testing.assert_allclose(out[0], recon[0], atol=1e-5)
    np.testing.assert_allclose(out[2], recon[1], atol=1e-5)
    # the midpoint lies between the two reconstructions: closer to each than they are to each other
    gap = l1(recon[0], recon[1])
    assert l1(out[1], recon[0]) < gap and l1(out[1], recon[1]) < gap
    for method in ("cubic", "linear", "slerp"):
        out = decoded_between(model, a, b, 3, interpolation=method)
        np.testing.assert_allclose(out[[0, 3]], recon, atol=1e-5)


def test_synthetic_slices_beat_nearest_neighbour(trained, t1):
    """Held-out real slices: drop the odd ones, synthesize them back at r = 2."""
    model, _ = trained
    kept = t1[0::2]
    out = synthesize(model, kept, 2, device="cpu")
    truth = t1[1:len(out):2]
    synthetic = out[1::2]
    nearest = kept[:-1]
    assert l1(synthetic, truth) < l1(nearest, truth), (l1(synthetic, truth), l1(nearest, truth))


def test_slerp_endpoints_and_midpoint():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 5, 6, generator=g)
    b = torch.randn(4, 5, 6, generator=g)
    z = interpolate_latents(a, b, [0.0, 0.5, 1.0], "slerp")
    assert z.shape == (3, 4, 5, 6)
    torch.testing.assert_close(z[0], a, rtol=0, atol=1e-6)
    torch.testing.assert_close(z[2], b, rtol=0, atol=1e-6)
    # slerp keeps the norm of equal-norm endpoints; linear shrinks it
    b = b * a.norm() / b.norm()
    zs = interpolate_latents(a, b, [0.5], "slerp")[0]
    zl = interpolate_latents(a, b, [0.5], "linear")[0]
    assert abs(float(zs.norm() - a.norm())) < 1e-4 * float(a.norm())
    assert float(zl.norm()) < float(a.norm())
    torch.testing.assert_close(zl, (a + b) / 2)
    # parallel latents: falls back to linear instead of dividing by sin(0)
    zp = interpolate_latents(a, 2 * a, [0.5], "slerp")[0]
    assert torch.isfinite(zp).all()
    torch.testing.assert_close(zp, 1.5 * a)


def test_resume_reproduces_uninterrupted_run(t1, tmp_path):
    cfg = replace(TINY, steps=20, checkpoint_every=5, adversarial_weight=0.1, interpolation_weight=1.0)
    full = train_vae([t1], cfg, tmp_path / "full.pt", tmp_path / "full.csv", device="cpu", progress=False)
    half_cfg = replace(cfg, steps=10)
    train_vae([t1], half_cfg, tmp_path / "split.pt", tmp_path / "split.csv", device="cpu", progress=False)
    assert torch.load(tmp_path / "split.pt", weights_only=True)["step"] == 10
    torch.manual_seed(123)  # the global RNG state at resume time must not matter
    np.random.seed(123)
    resumed = train_vae([t1], cfg, tmp_path / "split.pt", tmp_path / "split.csv", device="cpu",
                        progress=False)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ck_full = torch.load(tmp_path / "full.pt", weights_only=True)
    ck_split = torch.load(tmp_path / "split.pt", weights_only=True)
    assert ck_split["step"] == 20 and ck_split["kind"] == "thinslice-vae"
    for k in ck_full["discriminator"]:
        assert torch.equal(ck_full["discriminator"][k], ck_split["discriminator"][k]), k
    assert open(tmp_path / "full.csv").read() == open(tmp_path / "split.csv").read()

    # already at `steps`: returns the checkpoint's model without training
    again = train_vae([t1], cfg, tmp_path / "split.pt", tmp_path / "split.csv", device="cpu", progress=False)
    for k in a:
        assert torch.equal(a[k], again.state_dict()[k]), k
    # another config (what a workflow rerun after a config change sees): training starts over
    other = replace(cfg, beta=0.5, steps=4)
    rerun = train_vae([t1], other, tmp_path / "split.pt", tmp_path / "x.csv", device="cpu", progress=False)
    fresh = train_vae([t1], other, tmp_path / "fresh.pt", tmp_path / "y.csv", device="cpu", progress=False)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, rerun.state_dict()[k]), k
    # a file that is no VAE checkpoint: an error, not an overwrite
    torch.save({"kind": "other"}, tmp_path / "other.pt")
    with pytest.raises(ThinsliceError, match="not a thinslice-vae checkpoint"):
        train_vae([t1], cfg, tmp_path / "other.pt", tmp_path / "z.csv", device="cpu", progress=False)


def test_a_checkpoint_of_other_volumes_is_not_resumed(t1, tmp_path, capfd):
    cfg = replace(TINY, steps=4, checkpoint_every=2)
    train_vae([t1], cfg, tmp_path / "c.pt", tmp_path / "a.csv", device="cpu", progress=False)
    fresh = train_vae([t1[::-1].copy()], cfg, tmp_path / "f.pt", tmp_path / "f.csv", device="cpu", progress=False)
    capfd.readouterr()
    rerun = train_vae([t1[::-1].copy()], cfg, tmp_path / "c.pt", tmp_path / "b.csv", device="cpu", progress=False)
    assert "other training data; training starts over" in capfd.readouterr().err
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, rerun.state_dict()[k]), k


def test_same_config_same_weights(t1, tmp_path):
    cfg = replace(TINY, steps=6)
    m1 = train_vae([t1], cfg, tmp_path / "a.pt", tmp_path / "a.csv", device="cpu", progress=False)
    m2 = train_vae([t1], cfg, tmp_path / "b.pt", tmp_path / "b.csv", device="cpu", progress=False)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_model_file_round_trip(trained, t1, tmp_path):
    model, d = trained
    from_checkpoint = load_vae(d / "vae.pt")
    save_vae(model, tmp_path / "model.pt")
    from_file = load_vae(tmp_path / "model.pt")
    ref = synthesize(model, t1[:4], 2, device="cpu")
    for m in (from_checkpoint, from_file):
        assert m.config == model.config
        np.testing.assert_array_equal(synthesize(m, t1[:4], 2, device="cpu"), ref)
    with pytest.raises(ThinsliceError):
        load_vae(tmp_path / "missing.pt")


def test_small_slices_and_several_subjects(tmp_path, t1):
    """Slices smaller than the crop are padded; subjects of different in-plane sizes mix."""
    cfg = replace(TINY, steps=4, crop_size=48)
    vols = [t1, t1[:5, :20, :17].copy()]
    model = train_vae(vols, cfg, tmp_path / "v.pt", tmp_path / "v.csv", device="cpu", progress=False)
    out = synthesize(model, vols[1], 4, device="cpu")
    assert out.shape == (17, 20, 17)


def test_bad_config_names_key():
    with pytest.raises(ThinsliceError, match="recon_loss"):
        VAEConfig(recon_loss="l3").validate()
    with pytest.raises(ThinsliceError, match="crop_size"):
        VAEConfig(levels=3, crop_size=60).validate()
    with pytest.raises(ThinsliceError, match="nope"):
        VAEConfig.from_dict({"nope": 1})


def test_interpolation_objective_lowers_the_error_on_held_out_slices(t1, tmp_path):
    """Train on the first 60% of the slices of a real T1, with and without the objective;
    on the unseen slices, decode the latent midpoint of slices i-1 and i+1 (synthesis at
    r = 2 from every other slice, without the real slices' residuals) and compare it with
    the real slice i."""
    cut = int(0.6 * len(t1))
    seen, unseen = t1[:cut], t1[cut:]
    cfg = replace(TINY, levels=1, steps=600, checkpoint_every=600)
    errors = {}
    for weight in (0.0, 1.0):
        model = train_vae([seen], replace(cfg, interpolation_weight=weight), tmp_path / f"{weight}.pt",
                          tmp_path / f"{weight}.csv", device="cpu", progress=False)
        between, truth = [], []
        for first in (0, 1):   # every other slice, from the first and from the second
            kept = unseen[first::2]
            out = synthesize(model, kept, 2, interpolation="linear", synthesis="decoded", device="cpu")
            between.append(out[1::2])
            truth.append(unseen[first + 1::2][:len(kept) - 1])
        errors[weight] = l1(np.concatenate(between), np.concatenate(truth))
    assert errors[1.0] < 0.95 * errors[0.0], errors
    rows = list(csv.DictReader(open(tmp_path / "1.0.csv")))
    assert float(rows[-1]["interp"]) < float(rows[0]["interp"])      # the loss is logged and falls


def test_triples_share_crop_and_flips(t1):
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], (12, 40, 40)).copy()
    ramp += np.random.default_rng(0).normal(0, 1e-3, ramp.shape).astype(np.float32)
    sampler = SliceSampler([ramp], 16, seed=0, max_gap=4)
    triples, t = sampler.sample_triples(200)
    first, between, last = (x.mean(axis=(1, 2, 3)) for x in triples)
    gaps = np.rint(last - first)
    assert set(gaps) <= {2, 3, 4} and {2, 3, 4} <= set(gaps)
    np.testing.assert_allclose(between, first + t * (last - first), atol=1e-2)   # t = k / gap
    assert np.all((t > 0) & (t < 1))
    # a volume too thin for a triple gives none
    assert not SliceSampler([ramp[:2]], 16, seed=0, max_gap=3).has_triples


@pytest.mark.parametrize("r", [2, 4])
def test_latent_paths_pass_through_the_real_latents(r):
    z = torch.randn(6, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    for method in ("cubic", "linear", "slerp"):
        path = latent_path(z, r, method)
        assert path.shape == ((6 - 1) * r + 1, 3, 4, 5)
        torch.testing.assert_close(path[::r], z, atol=1e-5, rtol=0)
    # linear: the pairwise mix; cubic: the cubic B-spline of the baseline, latent by latent
    torch.testing.assert_close(latent_path(z, r, "linear")[1], z[0] + (z[1] - z[0]) / r, atol=1e-6, rtol=0)
    expected = upsample(z.numpy().reshape(6, -1, 5), 0, r, "cubic").reshape(-1, 3, 4, 5)
    np.testing.assert_allclose(latent_path(z, r, "cubic").numpy(), expected, atol=1e-5)


def test_synthesis_decodes_the_latent_path(trained, t1):
    model, _ = trained
    for method in ("cubic", "linear"):
        out = synthesize(model, t1[:5], 3, interpolation=method, synthesis="decoded", device="cpu")
        pairwise = decoded_between(model, t1[1], t1[2], 3)[1:3]
        if method == "linear":   # slices 4 and 5 lie between real slices 1 and 2, and depend on them alone
            np.testing.assert_allclose(out[4:6], pairwise, atol=1e-5)
        else:                    # cubic uses the neighbours beyond them too
            assert l1(out[4:6], pairwise) > 0
        np.testing.assert_allclose(out[::3], reconstruct(model, t1[:5]), atol=1e-5)
