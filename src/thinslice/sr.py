"""Stage 2: the super-resolution network and its model files (training: sr_training;
inference: sr_inference).

The network restores one degraded axis of a volume that was cubic-upsampled onto the
output grid (LR slice i at output index i*r). It predicts a residual over that input (its
last layer starts at zero, so an untrained net gives exactly the cubic interpolation).

Along the degraded axis the net works on groups of r output samples, each group starting
at a real (degraded) sample: "pixel unshuffle" by r along that axis only. It therefore
knows which outputs are the real slices and which lie between, costs 1/r of a net on
the full grid, and patches/windows along that axis always start at multiples of r.

Architectures (SRConfig.architecture):
- "2d": a 2D residual CNN on images holding the degraded axis (last image axis) and one
  high-resolution axis. Inference runs over both through-plane orientations (slice axis
  with each in-plane axis) and averages them. Trains on any pairs, incl. self pairs.
- "3d": a 3D residual CNN on patches, the degraded axis moved last. Needs pairs whose
  other two axes are both high resolution (synthetic pairs); not meant for self pairs.
Intensities: the caller normalises (e.g. Geometry.normalize) and scales back.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .errors import ThinsliceError
from .settings import SRConfig
from .training import save_checkpoint

MODEL_KIND = "thinslice-sr"
MODEL_VERSION = 1


# --------------------------------------------------------------------------- network

class _ResBlock(nn.Module):
    def __init__(self, conv, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  conv(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class SRNet(nn.Module):
    """Residual CNN restoring the degraded axis of a cubic-upsampled image.

    2D input (B, 1, W, H), 3D input (B, 1, D1, D2, H): H, the last axis, is the degraded one, on the
    output grid with the real samples at 0, r, 2r, ... Any size; H is padded internally
    (edge values) to a multiple of r and cropped back. Output: same shape, input + residual.
    """

    def __init__(self, dims: int, factor: int, channels: int, depth: int, unshuffle: bool = True):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.dims, self.factor, self.unshuffle = dims, int(factor), bool(unshuffle)
        self.group = self.factor if self.unshuffle else 1
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        g = self.group
        self.head = conv(g, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(conv, channels) for _ in range(depth)])
        self.tail = conv(channels, g, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        n_conv = 2 * depth + 2
        # How far (output-grid voxels) an output looks: (degraded axis, other axes).
        self.reach = ((n_conv + 1) * g, n_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.group
        h = x.shape[-1]
        pad = (-h) % g
        xp = nn.functional.pad(x, (0, pad) + (0, 0) * (self.dims - 1), mode="replicate") if pad else x
        b, hp = xp.shape[0], xp.shape[-1]
        spatial = xp.shape[2:-1]
        # (B, 1, *S, q*g) -> (B, g, *S, q): sample j of each group becomes channel j
        z = xp.reshape(b, *spatial, hp // g, g).movedim(-1, 1)
        z = self.head(z)
        z = self.tail(self.body(z) + z)
        res = z.movedim(1, -1).reshape(b, 1, *spatial, hp)
        return (xp + res.to(xp.dtype))[..., :h]


def build_model(config: SRConfig, factor: int) -> SRNet:
    dims = 2 if config.architecture == "2d" else 3
    return SRNet(dims, factor, config.channels, config.depth, config.unshuffle)


# --------------------------------------------------------------------------- model files

def json_safe(value):
    """A JSON-like copy of `value`, numpy scalars and arrays made Python numbers and lists: what
    the safe loader (torch.load(weights_only=True)) reads back."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def save_model(path, model: SRNet, config: SRConfig, meta: dict | None = None) -> None:
    """Write the model file (atomically): weights, config, factor r and the caller's meta.

    meta should hold what inference needs besides the weights: slice model, thickness and
    spacing, slice axis, normalisation (applied by the caller), ...; JSON-like values.
    """
    state = {"kind": MODEL_KIND, "version": MODEL_VERSION, "config": asdict(config),
             "factor": int(model.factor), "dims": int(model.dims),
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "meta": json_safe(dict(meta or {}))}
    save_checkpoint(path, state)


def load_model(path) -> tuple[SRNet, dict]:
    """(network in eval mode on the CPU, meta). ThinsliceError if `path` is no thinslice SR model."""
    path = Path(path)
    if not path.is_file():
        raise ThinsliceError(f"{path}: no such model file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise ThinsliceError(f"{path}: not a thinslice SR model file (cannot be read as one); "
                             f"give the model written by `thinslice train-sr`") from None
    if not isinstance(state, dict) or state.get("kind") != MODEL_KIND:
        raise ThinsliceError(f"{path}: not a thinslice SR model file (kind "
                             f"{state.get('kind') if isinstance(state, dict) else type(state).__name__!r}); "
                             f"give the model written by `thinslice train-sr`")
    if state.get("version", 0) > MODEL_VERSION:
        raise ThinsliceError(f"{path}: model file version {state['version']} is newer than this "
                             f"thinslice understands ({MODEL_VERSION}); upgrade thinslice")
    try:
        config = SRConfig.from_dict(state["config"])
        model = build_model(config, state["factor"])
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise ThinsliceError(f"{path}: damaged thinslice SR model file ({exc})") from None
    model.eval()
    meta = dict(state.get("meta") or {})
    meta.setdefault("factor", int(state["factor"]))
    meta["config"] = asdict(config)
    return model, meta

