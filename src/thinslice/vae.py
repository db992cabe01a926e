"""Stage 1: a convolutional VAE over in-plane slices, and slice synthesis by latent interpolation.

The VAE is trained on the in-plane slices of the real thick-slice scans (all subjects
together). Its latent is a spatial map (H/2**levels x W/2**levels x latent_channels), so a
decoded slice keeps its anatomy. Besides reconstruction it is taught to interpolate:
decoding the mix of the latents of two real slices 2..max_gap apart must give the real
slices between them, the through-plane supervision every thick-slice scan holds. The
synthetic volume, with r times as many slices, decodes a cubic B-spline through the real
slices' latent means at every output slice position.

Shapes: a volume is (n_slices, H, W) float32 with the slice axis first, intensities in a
normalized scale (~[0, 1]); slices go through the network as (batch, 1, H, W).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ThinsliceError
from .interpolate import interpolation_matrix, upsample
from .training import (LossLog, config_from_dict, configure_device, data_fingerprint, load_checkpoint, load_resumable,
                       rng_state, save_checkpoint, seed_everything, select_device, set_rng_state, ThreadTuner)
from .progress import Progress

KIND = "thinslice-vae"
RECON_LOSSES = ("l1", "l2")
# Latent paths along the slice axis: linear and slerp mix the two neighbouring slices;
# cubic is a cubic B-spline through the latents of all slices.
INTERPOLATIONS = ("cubic", "linear", "slerp")
PAIRWISE_INTERPOLATIONS = ("linear", "slerp")
# What a synthetic volume is made of. residual: the decoded latent path plus the real slices'
# reconstruction errors interpolated along it (real slices exact, detail the decoder loses kept);
# decoded: the decoded latent path alone; kept: decoded, with the real slices put back.
SYNTHESES = ("residual", "decoded", "kept")
LOSS_COLUMNS = ["loss", "recon", "interp", "kl", "kl_weight", "adv", "disc"]
# Fields that may differ between a checkpoint and the run resuming it: they do not change
# the trajectory of the weights, only how far it goes and how often it is saved.
RESUMABLE_FIELDS = ("steps", "checkpoint_every")


@dataclass
class VAEConfig:
    """Stage-1 VAE: architecture, loss and training schedule."""

    levels: int = 2                 # downsamplings: the latent map is the slice size / 2**levels
    base_channels: int = 16         # feature channels at full resolution (x2 per level, at most x8)
    latent_channels: int = 8        # channels of the latent map
    beta: float = 1e-4              # weight of the KL term (KL in nats per image pixel)
    kl_warmup_steps: int = 500      # the KL weight rises linearly from 0 to beta over these steps
    recon_loss: str = "l1"          # reconstruction loss: l1 | l2 (mean per pixel)
    interpolation_weight: float = 1.0  # weight of the loss on real slices decoded from the mix of their neighbours' latents (0: reconstruction only)
    max_gap: int = 3                # the neighbours mixed for that loss lie 2..max_gap real slices apart
    adversarial_weight: float = 0.0  # > 0 adds a PatchGAN discriminator (hinge loss) with this weight
    steps: int = 2000               # optimizer steps in all
    batch_size: int = 16            # crops per step (with the interpolation loss: triples of slices)
    crop_size: int = 64             # side of the random square crops, pixels (slices smaller are zero-padded)
    learning_rate: float = 1e-3     # Adam learning rate (constant, so a run can be extended by raising steps)
    ema_decay: float = 0.995        # synthesis uses this moving average of the weights (0: the last weights)
    checkpoint_every: int = 500     # steps between checkpoints (one is also written at the end)
    seed: int = 0                   # seed of weights, crops, flips and sampling noise

    def validate(self) -> None:
        """Raise ThinsliceError naming the first bad key."""
        ints = {"levels": 0, "base_channels": 1, "latent_channels": 1, "kl_warmup_steps": 0, "max_gap": 2,
                "steps": 0, "batch_size": 1, "crop_size": 1, "checkpoint_every": 1}
        for key, low in ints.items():
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ThinsliceError(f"vae.{key} must be an integer >= {low}, got {value!r}")
        for key in ("beta", "adversarial_weight", "interpolation_weight"):
            if not float(getattr(self, key)) >= 0:
                raise ThinsliceError(f"vae.{key} must be >= 0, got {getattr(self, key)!r}")
        if not 0 <= float(self.ema_decay) < 1:
            raise ThinsliceError(f"vae.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not float(self.learning_rate) > 0:
            raise ThinsliceError(f"vae.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.recon_loss not in RECON_LOSSES:
            raise ThinsliceError(f"vae.recon_loss must be one of {RECON_LOSSES}, got {self.recon_loss!r}")
        if self.crop_size % (2 ** self.levels):
            raise ThinsliceError(f"vae.crop_size ({self.crop_size}) must be a multiple of "
                                 f"2**levels = {2 ** self.levels}")

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        return config_from_dict(cls, d, "vae")


# --------------------------------------------------------------------------- network

def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _channels(config: VAEConfig) -> list[int]:
    """Feature channels at each level 0..levels (x2 per level, capped at 8x base)."""
    return [config.base_channels * min(2 ** level, 8) for level in range(config.levels + 1)]


class SliceVAE(nn.Module):
    """Fully convolutional VAE of single-channel slices; H and W must be multiples of 2**levels.

    encode: (B, 1, H, W) -> mean, log-variance, each (B, latent_channels, H/2**L, W/2**L)
    decode: latent map -> (B, 1, H, W)
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        ch = _channels(config)
        enc: list[nn.Module] = [nn.Conv2d(1, ch[0], 3, padding=1)]
        for level in range(config.levels):
            enc += [ResBlock(ch[level]), nn.Conv2d(ch[level], ch[level + 1], 3, stride=2, padding=1)]
        enc += [ResBlock(ch[-1]), nn.GroupNorm(_groups(ch[-1]), ch[-1]), nn.SiLU(),
                nn.Conv2d(ch[-1], 2 * config.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(config.latent_channels, ch[-1], 3, padding=1), ResBlock(ch[-1])]
        for level in reversed(range(config.levels)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(ch[level + 1], ch[level], 3, padding=1), ResBlock(ch[level])]
        dec += [nn.GroupNorm(_groups(ch[0]), ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # Lowest intensity of the training data: decoded slices are clamped at it, so the
        # background can be reproduced exactly (set by train_vae, saved with the weights).
        self.register_buffer("floor", torch.tensor(float("-inf")))

    @property
    def multiple(self) -> int:
        return 2 ** self.config.levels

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder(z)
        return torch.clamp(y, min=self.floor.to(y.dtype))


class PatchDiscriminator(nn.Module):
    """PatchGAN: a map of real/fake scores, one per overlapping patch (about 34 px receptive field)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.GroupNorm(_groups(2 * c), 2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, stride=1, padding=1), nn.GroupNorm(_groups(4 * c), 4 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 1, 4, stride=1, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def kl_per_pixel(mean: torch.Tensor, logvar: torch.Tensor, pixels: int) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over each latent map, divided by the image's pixels, batch mean."""
    mean, logvar = mean.float(), logvar.float()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean() / pixels


# --------------------------------------------------------------------------- data

def _check_volumes(volumes: list[np.ndarray]) -> list[np.ndarray]:
    if not volumes:
        raise ThinsliceError("train_vae: no volumes given; pass at least one (n_slices, H, W) array")
    out = []
    for i, v in enumerate(volumes):
        v = np.asarray(v, dtype=np.float32)
        if v.ndim != 3 or min(v.shape) < 1:
            raise ThinsliceError(f"train_vae: volume {i} has shape {v.shape}; expected (n_slices, H, W)")
        if not np.isfinite(v).all():
            raise ThinsliceError(f"train_vae: volume {i} contains NaN or infinite values; clean it first")
        out.append(v)
    return out


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

def _amp(device: torch.device) -> tuple[bool, torch.dtype | None]:
    """(autocast on?, dtype): bf16 where the GPU has it, else fp16 (with a GradScaler); CPU float32."""
    if device.type != "cuda":
        return False, None
    return True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


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
    volumes = _check_volumes(volumes)
    checkpoint = Path(checkpoint)
    dev = select_device(device)
    configure_device(dev)
    use_amp, amp_dtype = _amp(dev)

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


# --------------------------------------------------------------------------- model files

def save_vae(model: SliceVAE, path: str | Path) -> None:
    """Write the model alone (weights + config), atomically: what `load_vae` reads."""
    save_checkpoint(path, {"kind": KIND, "config": asdict(model.config),
                           "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}})


def load_vae(path: str | Path) -> SliceVAE:
    """The VAE of a training checkpoint or a `save_vae` file, on CPU, in eval mode."""
    path = Path(path)
    if not path.exists():
        raise ThinsliceError(f"{path}: no such VAE model file; train the VAE first")
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise ThinsliceError(f"{path}: not a thinslice VAE model file")
    model = SliceVAE(VAEConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model


# --------------------------------------------------------------------------- synthesis

def interpolate_latents(a: torch.Tensor, b: torch.Tensor, ts, method: str = "linear") -> torch.Tensor:
    """Latents between `a` and `b` (same shape (..., C, h, w)) at each t of `ts`: (len(ts), *a.shape).

    linear: (1-t) a + t b.  slerp: spherical interpolation of each latent map taken as one
    vector (falls back to linear where a and b are (anti)parallel or zero).
    """
    if method not in PAIRWISE_INTERPOLATIONS:
        raise ThinsliceError(f"unknown pairwise latent interpolation {method!r}; choose one of "
                             f"{PAIRWISE_INTERPOLATIONS}")
    t = torch.as_tensor(np.asarray(ts, dtype=np.float64), dtype=torch.float64, device=a.device)
    t = t.view(-1, *([1] * a.dim()))
    a64, b64 = a.double().unsqueeze(0), b.double().unsqueeze(0)
    if method == "linear":
        return ((1 - t) * a64 + t * b64).to(a.dtype)
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return ((1 - t) * a64 + t * b64).to(a.dtype)
    cos = ((a64 * b64).sum() / (na * nb)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if so < 1e-6:
        return ((1 - t) * a64 + t * b64).to(a.dtype)
    wa = torch.sin((1 - t) * omega) / so
    wb = torch.sin(t * omega) / so
    return (wa * a64 + wb * b64).to(a.dtype)


def _pad_slices(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, 1, H, W) at the bottom/right to multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class _Runner:
    """Batched, no-grad encode/decode of whole slices on a device (padding handled here)."""

    def __init__(self, model: SliceVAE, device: str, batch_size: int):
        if batch_size < 1:
            raise ThinsliceError(f"batch_size must be >= 1, got {batch_size}")
        self.dev = select_device(device)
        self.model = model.to(self.dev).eval()
        self.batch = batch_size
        self.amp, self.dtype = _amp(self.dev)

    @torch.no_grad()
    def encode(self, slices: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Latent means (n, C, h, w), float32 on the device, and the original (H, W)."""
        means = []
        hw = slices.shape[-2:]
        for i in range(0, len(slices), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(slices[i:i + self.batch], dtype=np.float32))
            x, hw = _pad_slices(x[:, None].to(self.dev), self.model.multiple)
            with torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.amp):
                mean, _ = self.model.encode(x)
            means.append(mean.float())
        return torch.cat(means), tuple(hw)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
        out = []
        for i in range(0, len(z), self.batch):
            with torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.amp):
                y = self.model.decode(z[i:i + self.batch])
            out.append(y.float()[:, 0, :hw[0], :hw[1]].cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, *hw), np.float32)


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ThinsliceError(f"synthesize: volume has shape {volume.shape}; expected (n_slices, H, W)")
    if not np.isfinite(volume).all():
        raise ThinsliceError("synthesize: volume contains NaN or infinite values; clean it first")
    return volume


def reconstruct(model: SliceVAE, slices: np.ndarray, device: str = "auto", batch_size: int = 8) -> np.ndarray:
    """Decoded latent means of `slices` (n, H, W): the model's reconstructions, float32."""
    runner = _Runner(model, device, batch_size)
    z, hw = runner.encode(_check_volume(slices))
    return runner.decode(z, hw)


def interpolate_pair(model: SliceVAE, a: np.ndarray, b: np.ndarray, ts, interpolation: str = "linear",
                     device: str = "auto") -> np.ndarray:
    """Decoded slices between slices `a` and `b` (each (H, W)) at each t of `ts`: (len(ts), H, W).

    t = 0 and t = 1 give the reconstructions of `a` and `b`.
    """
    runner = _Runner(model, device, batch_size=8)
    z, hw = runner.encode(_check_volume(np.stack([a, b])))
    return runner.decode(interpolate_latents(z[0], z[1], ts, interpolation), hw)


def latent_path(z: torch.Tensor, r: int, interpolation: str = "cubic") -> torch.Tensor:
    """Latents at every output slice position: ((n-1)*r+1, C, h, w) from the n real slices' (n, C, h, w).

    Position i*r is z[i] itself. cubic: cubic B-spline interpolation through all latents
    (as the `cubic` baseline does with intensities); linear / slerp: between z[i] and
    z[i+1] at t = k/r.
    """
    if interpolation not in INTERPOLATIONS:
        raise ThinsliceError(f"unknown latent interpolation {interpolation!r}; choose one of {INTERPOLATIONS}")
    n = len(z)
    if interpolation == "cubic":
        weights = torch.from_numpy(interpolation_matrix(n, r, "cubic")).to(z.device, torch.float64)
        return torch.einsum("on,n...->o...", weights, z.double()).to(z.dtype)
    path = torch.empty(((n - 1) * r + 1, *z.shape[1:]), dtype=z.dtype, device=z.device)
    path[::r] = z
    if r > 1:
        ts = np.arange(1, r) / r
        for i in range(n - 1):
            path[i * r + 1:(i + 1) * r] = interpolate_latents(z[i], z[i + 1], ts, interpolation)
    return path


def synthesize(model: SliceVAE, volume: np.ndarray, r: int, interpolation: str = "cubic",
               synthesis: str = "residual", device: str = "auto", batch_size: int = 8) -> np.ndarray:
    """Synthetic volume with r times finer slice spacing: shape ((n-1)*r+1, H, W), float32.

    Every output slice decodes the latent path (`latent_path`) of the real slices' latent
    means at its position. With synthesis "residual" (the default) the real slices'
    reconstruction errors are added, interpolated along the slice axis as the path is
    (cubic B-spline, else linear): output slice i*r is real slice i exactly, and an
    in-between slice is the intensity interpolation of its neighbours plus what the VAE
    decodes there beyond interpolating its own reconstructions. So the detail and noise the
    decoder cannot reproduce are interpolated, not lost, and every slice phase keeps the
    input's texture. "decoded" keeps the decoded path alone; "kept" puts the real slices
    back into it (two textures: a periodic pattern that stage 2 would learn).
    """
    if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 1:
        raise ThinsliceError(f"synthesize: the factor r must be an integer >= 1, got {r!r}")
    if synthesis not in SYNTHESES:
        raise ThinsliceError(f"synthesize: unknown synthesis {synthesis!r}; choose one of {SYNTHESES}")
    volume = _check_volume(volume)
    runner = _Runner(model, device, batch_size)
    z, hw = runner.encode(volume)
    out = runner.decode(latent_path(z, int(r), interpolation), hw)
    if synthesis == "kept":
        out[::r] = volume
    elif synthesis == "residual":   # the path passes through the real slices' latents: out[::r] decodes them
        residual = volume - out[::r]
        out += upsample(residual, 0, int(r), "cubic" if interpolation == "cubic" else "linear")
        out[::r] = volume   # exact, not up to float rounding
    return out
