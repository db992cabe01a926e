"""Training of the stage-1 VAE (vae.SliceVAE): random crops of the real scans' slices, the
reconstruction, interpolation and KL losses, an optional PatchGAN discriminator, a moving
average of the weights for synthesis, and checkpoints that resume exactly on the CPU.

Shapes: a volume is (n_slices, H, W) float32 with the slice axis first, intensities in a
normalized scale (~[0, 1]); slices go through the network as (batch, 1, H, W).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ThinsliceError
from .progress import Progress
from .settings import VAEConfig
from .training import (LossLog, ThreadTuner, autocast_dtype, configure_device, data_fingerprint, load_resumable,
                       rng_state, save_checkpoint, seed_everything, select_device, set_rng_state)
from .vae import KIND, SliceVAE, check_slices, norm_groups

LOSS_COLUMNS = ["loss", "recon", "interp", "kl", "kl_weight", "adv", "disc"]
# Fields that may differ between a checkpoint and the run resuming it: they do not change
# the trajectory of the weights, only how far it goes and how often it is saved.
RESUMABLE_FIELDS = ("steps", "checkpoint_every")


# --------------------------------------------------------------------------- losses

class PatchDiscriminator(nn.Module):
    """PatchGAN: a map of real/fake scores, one per overlapping patch (about 34 px receptive field)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.GroupNorm(norm_groups(2 * c), 2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, stride=1, padding=1), nn.GroupNorm(norm_groups(4 * c), 4 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 1, 4, stride=1, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def kl_per_pixel(mean: torch.Tensor, logvar: torch.Tensor, pixels: int) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over each latent map, divided by the image's pixels, batch mean."""
    mean, logvar = mean.float(), logvar.float()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean() / pixels


# --------------------------------------------------------------------------- data

class SliceSampler:
    """Random crops (crop_size^2, zero-padded when a slice is smaller) of the slices of all
    volumes, with random flips. All randomness comes from one numpy Generator whose state
    goes into the checkpoint.

    sample:         single slices, drawn uniformly over all slices.
    sample_triples: the through-plane supervision a thick-slice scan holds: two real
                    slices g = 2..max_gap apart and one real slice k between them (at
                    t = k/g), cropped at the same place and flipped alike.
    """

    def __init__(self, volumes: list[np.ndarray], crop_size: int, seed: int, max_gap: int = 2):
        self.crop = crop_size
        self.volumes = []
        for v in volumes:
            ph, pw = max(0, crop_size - v.shape[1]), max(0, crop_size - v.shape[2])
            if ph or pw:
                v = np.pad(v, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
            self.volumes.append(np.ascontiguousarray(v))
        counts = np.array([v.shape[0] for v in self.volumes], dtype=np.float64)
        self.p = counts / counts.sum()
        # Triples: (volume, gap) drawn in proportion to the number of places they fit.
        self.triple_kinds = [(i, g) for i, v in enumerate(self.volumes) for g in range(2, max_gap + 1)
                             if v.shape[0] > g]
        fits = np.array([self.volumes[i].shape[0] - g for i, g in self.triple_kinds], dtype=np.float64)
        self.triple_p = fits / fits.sum() if fits.size else fits
        self.rng = np.random.default_rng(seed)

    @property
    def has_triples(self) -> bool:
        return bool(self.triple_kinds)

    def _crop(self, v: np.ndarray, slices) -> np.ndarray:
        c = self.crop
        y = int(self.rng.integers(v.shape[1] - c + 1))
        x = int(self.rng.integers(v.shape[2] - c + 1))
        patch = v[slices, y:y + c, x:x + c]
        if self.rng.random() < 0.5:
            patch = patch[..., ::-1, :]
        if self.rng.random() < 0.5:
            patch = patch[..., :, ::-1]
        return patch

    def sample(self, batch_size: int) -> np.ndarray:
        """(batch_size, 1, crop, crop)."""
        out = np.empty((batch_size, 1, self.crop, self.crop), dtype=np.float32)
        for b in range(batch_size):
            v = self.volumes[self.rng.choice(len(self.volumes), p=self.p)]
            out[b, 0] = self._crop(v, int(self.rng.integers(v.shape[0])))
        return out

    def sample_triples(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """((3, batch_size, 1, crop, crop): first, between, last slice; t of the between slice)."""
        out = np.empty((3, batch_size, 1, self.crop, self.crop), dtype=np.float32)
        t = np.empty(batch_size, dtype=np.float32)
        for b in range(batch_size):
            i, g = self.triple_kinds[self.rng.choice(len(self.triple_kinds), p=self.triple_p)]
            v = self.volumes[i]
            s = int(self.rng.integers(v.shape[0] - g))
            k = int(self.rng.integers(1, g))
            out[:, b, 0] = self._crop(v, [s, s + k, s + g])
            t[b] = k / g
        return out, t

    def get_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


# --------------------------------------------------------------------------- training

def train_vae(volumes: list[np.ndarray], config: VAEConfig, checkpoint: str | Path,
              loss_csv: str | Path, device: str = "auto", progress: bool = True) -> SliceVAE:
    """Train the stage-1 VAE on random crops of the slices of `volumes`; returns it in eval mode.

    volumes:    normalized scans, each (n_slices, H, W) with the slice axis first.
    checkpoint: written every `checkpoint_every` steps and at the end (atomically); when it
                exists at the start, training resumes from it (same config required, but
                `steps` may be raised) and reproduces an uninterrupted run exactly on CPU.
    loss_csv:   one row of mean losses every 10 steps.
    """
    config.validate()
    if not volumes:
        raise ThinsliceError("train_vae: no volumes given; pass at least one (n_slices, H, W) array")
    volumes = [check_slices(v, f"train_vae: volume {i}") for i, v in enumerate(volumes)]
    checkpoint = Path(checkpoint)
    dev = select_device(device)
    configure_device(dev)
    amp_dtype = autocast_dtype(dev)
    use_amp = amp_dtype is not None

    seed_everything(config.seed)
    model = SliceVAE(config).to(dev)
    model.floor.fill_(min(float(v.min()) for v in volumes))
    ema = copy.deepcopy(model).requires_grad_(False)  # what synthesis uses
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    disc = disc_opt = None
    if config.adversarial_weight > 0:
        disc = PatchDiscriminator().to(dev)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=config.learning_rate, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    sampler = SliceSampler(volumes, config.crop_size, config.seed, config.max_gap)
    learn_interpolation = config.interpolation_weight > 0 and sampler.has_triples
    distance = F.l1_loss if config.recon_loss == "l1" else F.mse_loss
    noise_gen = torch.Generator().manual_seed(config.seed + 1)

    step = 0
    fingerprint = data_fingerprint(*volumes)
    state = load_resumable(checkpoint, KIND, fingerprint, asdict(config), RESUMABLE_FIELDS)
    if state is not None:
        model.load_state_dict(state["training_model"])
        ema.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if disc is not None:
            disc.load_state_dict(state["discriminator"])
            disc_opt.load_state_dict(state["discriminator_optimizer"])
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        sampler.set_state(state["sampler"])
        noise_gen.set_state(state["noise"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        if step >= config.steps:
            return ema.eval()

    def save() -> None:
        payload = {"kind": KIND, "config": asdict(config), "step": step, "data": fingerprint,
                   "model": ema.state_dict(), "training_model": model.state_dict(),
                   "optimizer": opt.state_dict(),
                   "sampler": sampler.get_state(), "noise": noise_gen.get_state(),
                   "rng": rng_state()}
        if disc is not None:
            payload["discriminator"] = disc.state_dict()
            payload["discriminator_optimizer"] = disc_opt.state_dict()
        if scaler.is_enabled():
            payload["scaler"] = scaler.state_dict()
        save_checkpoint(checkpoint, payload)

    log = LossLog(loss_csv, LOSS_COLUMNS, resume_step=step)
    pixels = config.crop_size ** 2
    latent_side = config.crop_size // 2 ** config.levels
    sums = dict.fromkeys(LOSS_COLUMNS, 0.0)
    n_sum = 0
    model.train()
    tuner = ThreadTuner(dev)
    bar = Progress(config.steps, "train vae", initial=step, enabled=progress)
    while step < config.steps:
        between = t = None
        if learn_interpolation:   # both ends of each triple are reconstructed, its middle interpolated
            triples, ts = sampler.sample_triples(config.batch_size)
            x = torch.from_numpy(np.concatenate([triples[0], triples[2]])).to(dev, non_blocking=True)
            between = torch.from_numpy(triples[1]).to(dev, non_blocking=True)
            t = torch.from_numpy(ts).to(dev).view(-1, 1, 1, 1)
        else:
            x = torch.from_numpy(sampler.sample(config.batch_size)).to(dev, non_blocking=True)
        noise = torch.randn((len(x), config.latent_channels, latent_side, latent_side),
                            generator=noise_gen).to(dev)
        kl_weight = config.beta * min(1.0, (step + 1) / config.kl_warmup_steps) \
            if config.kl_warmup_steps > 0 else config.beta

        with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
            mean, logvar = model.encode(x)
            z = mean + torch.exp(0.5 * logvar) * noise.to(mean.dtype)
            if between is not None:
                first, last = z.chunk(2)
                z = torch.cat([z, (1 - t) * first + t * last])
            decoded = model.decode(z).float()
        recon = decoded[:len(x)]
        rec = distance(recon, x)
        kl = kl_per_pixel(mean, logvar, pixels)
        interp = distance(decoded[len(x):], between) if between is not None else torch.zeros(())
        loss = rec + config.interpolation_weight * interp + kl_weight * kl
        adv = torch.zeros(())
        if disc is not None:
            disc.requires_grad_(False)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                adv = -disc(decoded).float().mean()  # hinge generator loss
            loss = loss + config.adversarial_weight * adv

        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)

        d_loss = torch.zeros(())
        if disc is not None:
            disc.requires_grad_(True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                d_real = disc(x).float()
                d_fake = disc(decoded.detach()).float()
            d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
            disc_opt.zero_grad(set_to_none=True)
            scaler.scale(d_loss).backward()
            scaler.step(disc_opt)
        scaler.update()

        step += 1
        _update_ema(ema, model, config.ema_decay, step)
        values = {"loss": loss.item(), "recon": rec.item(), "interp": interp.item(), "kl": kl.item(),
                  "kl_weight": kl_weight,
                  "adv": adv.item(), "disc": d_loss.item()}
        if not all(math.isfinite(v) for v in values.values()):
            raise ThinsliceError(f"VAE training diverged at step {step} (loss {values['loss']}); "
                                 f"lower vae.learning_rate or vae.beta and delete {checkpoint}")
        for k, v in values.items():
            sums[k] += v
        n_sum += 1
        bar.update(1)
        if step % 10 == 0 or step == config.steps:
            means = {k: v / n_sum for k, v in sums.items()}
            log.write(step, **means)
            bar.set_postfix(loss=f"{means['loss']:.4f}", recon=f"{means['recon']:.4f}",
                            interp=f"{means['interp']:.4f}")
            sums = dict.fromkeys(LOSS_COLUMNS, 0.0)
            n_sum = 0
        if step % config.checkpoint_every == 0 or step == config.steps:
            save()
        tuner.step()
    bar.close()
    tuner.close()
    return ema.eval()


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema <- d * ema + (1 - d) * model, with d ramping up as (1 + step) / (10 + step) early on."""
    d = min(float(decay), (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)

