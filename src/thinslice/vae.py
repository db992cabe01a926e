"""Stage 1: a convolutional VAE over in-plane slices, its model files, and slice synthesis by
latent interpolation (its training: vae_training).

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

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ThinsliceError
from .interpolate import interpolation_matrix, upsample
from .settings import INTERPOLATIONS, PAIRWISE_INTERPOLATIONS, SYNTHESES, VAEConfig
from .training import autocast_dtype, load_checkpoint, save_checkpoint, select_device

KIND = "thinslice-vae"   # of the training checkpoints and the model files


# --------------------------------------------------------------------------- network

def norm_groups(channels: int) -> int:
    """Groups of a GroupNorm over `channels`: 8, 4 or 2 where they divide them, else 1."""
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(norm_groups(channels), channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(norm_groups(channels), channels), nn.SiLU(),
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
        enc += [ResBlock(ch[-1]), nn.GroupNorm(norm_groups(ch[-1]), ch[-1]), nn.SiLU(),
                nn.Conv2d(ch[-1], 2 * config.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(config.latent_channels, ch[-1], 3, padding=1), ResBlock(ch[-1])]
        for level in reversed(range(config.levels)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(ch[level + 1], ch[level], 3, padding=1), ResBlock(ch[level])]
        dec += [nn.GroupNorm(norm_groups(ch[0]), ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # Lowest intensity of the training data: decoded slices are clamped at it, so the
        # background can be reproduced exactly (set by train_vae, saved with the weights).
        self.register_buffer("floor", torch.tensor(float("-inf")))
        # Channels-last weights let oneDNN skip its layout reorders (train_vae on ch2-z4, 2 CPU
        # cores: 563 s instead of 690 s); .to(device) and load_state_dict keep the layout, and a
        # one-channel input is already channels-last.
        self.to(memory_format=torch.channels_last)

    @property
    def multiple(self) -> int:
        return 2 ** self.config.levels

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder(z)
        return torch.clamp(y, min=self.floor.to(y.dtype))


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
        self.dtype = autocast_dtype(self.dev)

    @torch.no_grad()
    def encode(self, slices: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Latent means (n, C, h, w), float32 on the device, and the original (H, W)."""
        means = []
        hw = slices.shape[-2:]
        for i in range(0, len(slices), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(slices[i:i + self.batch], dtype=np.float32))
            x, hw = _pad_slices(x[:, None].to(self.dev), self.model.multiple)
            with torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.dtype is not None):
                mean, _ = self.model.encode(x)
            means.append(mean.float())
        return torch.cat(means), tuple(hw)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
        out = []
        for i in range(0, len(z), self.batch):
            with torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.dtype is not None):
                y = self.model.decode(z[i:i + self.batch])
            out.append(y.float()[:, 0, :hw[0], :hw[1]].cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, *hw), np.float32)


def check_slices(volume: np.ndarray, what: str) -> np.ndarray:
    """`volume` as a float32 stack of slices (n_slices, H, W), or an error naming `what`."""
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ThinsliceError(f"{what} has shape {volume.shape}; expected (n_slices, H, W)")
    if not np.isfinite(volume).all():
        raise ThinsliceError(f"{what} contains NaN or infinite values; clean it first")
    return volume


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
    volume = check_slices(volume, "synthesize: volume")
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
