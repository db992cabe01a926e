"""Stage 2: the super-resolution network, its training loop, model files and inference.

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

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ThinsliceError
from .training import (LossLog, config_from_dict, configure_device, load_resumable, rng_state, save_checkpoint,
                       seed_everything, select_device, set_rng_state, ThreadTuner, update_fingerprint)
from .progress import Progress

MODEL_KIND = "thinslice-sr"
MODEL_VERSION = 1
ARCHITECTURES = ("2d", "3d")
CHECKPOINT_KIND = "thinslice-sr-checkpoint"
# Settings a checkpoint may differ in and still be resumed (`steps` may not: the learning
# rate is cosine-decayed over it).
RESUMABLE_FIELDS = ("checkpoint_every", "log_every")


@dataclass
class SRConfig:
    """Settings of the SR network and its training (defaults: the ch2-z4 benchmark choice)."""

    architecture: str = "2d"        # "2d": through-plane slices, both orientations averaged | "3d": 3D CNN on patches (synthetic pairs only)
    channels: int = 32              # feature channels of every hidden convolution
    depth: int = 4                  # residual blocks (2 convolutions each) between the input and output convolutions
    unshuffle: bool = True          # process groups of r output samples along the degraded axis as channels (r x cheaper, knows the real slices)
    patch_size: int = 24            # training patch side in output-grid voxels (rounded up to a multiple of r)
    batch_size: int = 64            # patches per training step
    steps: int = 6000               # optimiser steps
    learning_rate: float = 2e-3     # Adam learning rate at the start, cosine-decayed to 0 over `steps`
    gradient_loss_weight: float = 0.0  # weight of the L1 loss on finite differences (0 = off); the main loss is L1
    synthetic_share: float = 0.1    # with synthetic and self pairs together (sr_both): share of patches drawn from the synthetic ones
    foreground_fraction: float = 0.9   # share of patches centred on a foreground voxel (target above the threshold)
    foreground_threshold: float = 0.1  # foreground: target > min + this x (99th percentile - min), per pair
    flip: bool = True               # random flips of the patches (the slice profile is symmetric)
    checkpoint_every: int = 500     # steps between atomic checkpoints (and at the end)
    log_every: int = 50             # steps between rows of the loss CSV (means over the interval)
    seed: int = 0                   # seeds weights and patch sampling: same config, same numbers on CPU

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ThinsliceError(f"sr.architecture: {self.architecture!r} is not one of {ARCHITECTURES}")
        for name in ("channels", "depth", "patch_size", "batch_size", "steps", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            low = 0 if name == "depth" else 1
            if int(value) != value or value < low:
                raise ThinsliceError(f"sr.{name}: must be an integer >= {low}, got {value}")
        if not self.learning_rate > 0:
            raise ThinsliceError(f"sr.learning_rate: must be positive, got {self.learning_rate}")
        if not self.gradient_loss_weight >= 0:
            raise ThinsliceError(f"sr.gradient_loss_weight: must be >= 0, got {self.gradient_loss_weight}")
        if not 0 <= self.synthetic_share <= 1:
            raise ThinsliceError(f"sr.synthetic_share: must lie in [0, 1], got {self.synthetic_share}")
        if not 0 <= self.foreground_fraction <= 1:
            raise ThinsliceError(f"sr.foreground_fraction: must lie in [0, 1], got {self.foreground_fraction}")
        if not 0 <= self.foreground_threshold < 1:
            raise ThinsliceError(f"sr.foreground_threshold: must lie in [0, 1), got {self.foreground_threshold}")

    @classmethod
    def from_dict(cls, d: dict) -> "SRConfig":
        return config_from_dict(cls, d, "sr")


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


# --------------------------------------------------------------------------- patch sampling

class _PairData:
    """A pair prepared for sampling: arrays padded to fit a patch, foreground voxels listed."""

    def __init__(self, pair, index: int, factor_default: int | None, patch: int, config: SRConfig):
        if len(pair) < 3:
            raise ThinsliceError(f"pair {index}: expected (input, target, axis[, factor[, context]])")
        inp, target, axis = pair[0], pair[1], int(pair[2])
        factor = int(pair[3]) if len(pair) > 3 and pair[3] is not None else factor_default
        context = pair[4] if len(pair) > 4 else None
        self.source = pair[5] if len(pair) > 5 else "synthetic"
        if factor is None:
            raise ThinsliceError(f"pair {index}: no factor r; give it in the pair or in meta['factor']")
        inp = np.asarray(inp, dtype=np.float32)
        target = np.asarray(target, dtype=np.float32)
        if inp.ndim != 3 or inp.shape != target.shape:
            raise ThinsliceError(f"pair {index}: input {inp.shape} and target {target.shape} "
                                 f"must be 3D arrays of one shape")
        if axis not in (0, 1, 2):
            raise ThinsliceError(f"pair {index}: degraded axis must be 0, 1 or 2, got {axis}")
        if not (np.all(np.isfinite(inp)) and np.all(np.isfinite(target))):
            raise ThinsliceError(f"pair {index}: NaN or infinite values")
        self.axis, self.factor = axis, factor
        others = tuple(a for a in range(3) if a != axis)
        self.context = tuple(int(c) for c in context) if context else others
        if not set(self.context) <= set(others):
            raise ThinsliceError(f"pair {index}: context axes {self.context} must differ from axis {axis}")
        # Pad so a patch always fits: P+1 samples along the degraded axis (flips take one
        # more), P along the others; zeros after the end keep the phase of the real samples.
        need = [patch] * 3
        need[axis] = patch + 1
        pad = [(0, max(0, n - s)) for n, s in zip(need, inp.shape)]
        if any(p[1] for p in pad):
            inp, target = np.pad(inp, pad), np.pad(target, pad)
        self.input, self.target = np.ascontiguousarray(inp), np.ascontiguousarray(target)
        lo = float(target.min())
        hi = float(np.percentile(target, 99))
        fg = np.flatnonzero(target > lo + config.foreground_threshold * (hi - lo))
        self.foreground = fg.astype(np.int32 if target.size < 2**31 else np.int64)
        self.shape = target.shape

    def spill(self, prefix: Path) -> None:
        """Move the arrays to .npy files at `prefix`* and read them memory-mapped from there:
        a cohort's pairs then take disk space, not memory (the OS caches what is sampled)."""
        for name in ("input", "target", "foreground"):
            path = prefix.with_name(f"{prefix.name}_{name}.npy")
            np.save(path, getattr(self, name))
            setattr(self, name, np.load(path, mmap_mode="r"))


class PatchSampler:
    """Draws training batches from the pairs; its whole state is one numpy generator."""

    def __init__(self, pairs, config: SRConfig, factor_default: int | None = None, spill: str | Path | None = None):
        """pairs: any iterable of pairs, read once. With `spill` (a directory) each pair's arrays
        go to files there as soon as it is read, so memory holds one pair at a time, not the
        cohort. `fingerprint` is the digest of the pairs (training.data_fingerprint)."""
        self.config = config
        self.data = []
        digest = hashlib.blake2b(digest_size=16)
        for i, pair in enumerate(pairs):
            update_fingerprint(digest, pair)
            if i == 0:
                first = pair[3] if len(pair) > 3 and pair[3] is not None else factor_default
                g = int(first) if (config.unshuffle and first) else 1
                self.patch = int(math.ceil(config.patch_size / g) * g)
            self.data.append(_PairData(pair, i, factor_default, self.patch, config))
            if spill is not None:
                self.data[-1].spill(Path(spill) / f"pair{i}")
        if not self.data:
            raise ThinsliceError("train_sr: no training pairs")
        self.fingerprint = digest.hexdigest()
        factors = {d.factor for d in self.data}
        if len(factors) != 1:
            raise ThinsliceError(f"train_sr: all pairs must share one factor r, got {sorted(factors)}")
        self.factor = factors.pop()
        self.group = self.factor if config.unshuffle else 1
        if config.architecture == "3d":
            for i, d in enumerate(self.data):
                if len(d.context) != 2:
                    raise ThinsliceError(
                        f"pair {i}: the 3d architecture needs both other axes at high resolution "
                        f"(synthetic pairs); use architecture '2d' for self pairs")
        # Patches are drawn in proportion to the voxels of each pair; when synthetic and
        # self pairs are mixed, each kind first gets its configured share.
        sizes = np.array([d.target.size for d in self.data], dtype=np.float64)
        synthetic = np.array([d.source == "synthetic" for d in self.data])
        if synthetic.any() and not synthetic.all():
            share = np.where(synthetic, config.synthetic_share, 1.0 - config.synthetic_share)
            sizes = share * sizes / np.where(synthetic, sizes[synthetic].sum(), sizes[~synthetic].sum())
        self.weights = sizes / sizes.sum()
        self.rng = np.random.Generator(np.random.PCG64(config.seed))

    @property
    def state(self) -> dict:
        return self.rng.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        self.rng.bit_generator.state = value

    def _start(self, n: int, centre: int | None, degraded: bool) -> int:
        p, g = self.patch, self.group
        if degraded:   # starts at multiples of g, and s + P + 1 <= n (room for a flipped window)
            top = (n - 1 - p) // g
            if centre is None:
                return int(self.rng.integers(0, top + 1)) * g
            return int(np.clip((centre - p // 2) // g, 0, top)) * g
        top = n - p
        if centre is None:
            return int(self.rng.integers(0, top + 1))
        return int(np.clip(centre - p // 2, 0, top))

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        rng, p, cfg = self.rng, self.patch, self.config
        d = self.data[int(rng.choice(len(self.data), p=self.weights))]
        centre = None
        if d.foreground.size and rng.random() < cfg.foreground_fraction:
            centre = np.unravel_index(int(d.foreground[rng.integers(0, d.foreground.size)]), d.shape)
        flips = rng.random(3) < 0.5 if cfg.flip else np.zeros(3, dtype=bool)
        a = d.axis
        if cfg.architecture == "2d":
            b = d.context[int(rng.integers(0, len(d.context)))]
            c = 3 - a - b
            index = [None, None, None]
            index[c] = int(centre[c]) if centre is not None else int(rng.integers(0, d.shape[c]))
            spatial = (b, a)
        else:
            index = [None, None, None]
            spatial = tuple(x for x in range(3) if x != a) + (a,)
        for ax in spatial:
            s = self._start(d.shape[ax], None if centre is None else int(centre[ax]), ax == a)
            if not flips[ax]:
                index[ax] = slice(s, s + p)
            elif ax == a:      # reversed window s+P .. s+1: it starts on a real sample again
                index[ax] = slice(s + p, s, -1)
            else:
                index[ax] = slice(s + p - 1, s - 1 if s > 0 else None, -1)
        x, y = d.input[tuple(index)], d.target[tuple(index)]
        order = [sorted(spatial).index(ax) for ax in spatial]   # network layout: degraded axis last
        return np.transpose(x, order), np.transpose(y, order)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self._one() for _ in range(n)))
        return np.stack(xs)[:, None], np.stack(ys)[:, None]


def _gradient_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    loss = pred.new_zeros(())
    for dim in range(2, pred.ndim):
        loss = loss + (pred.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return loss / (pred.ndim - 2)


def _lr_at(step: int, config: SRConfig) -> float:
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))


# --------------------------------------------------------------------------- training

def train_sr(pairs, config: SRConfig, checkpoint, loss_csv, device="auto", progress: bool = True,
             meta: dict | None = None, spill: str | Path | None = None) -> SRNet:
    """Train the SR network on (input, target, degraded_axis[, factor[, context]]) pairs.

    pairs:      Pair objects (pairs.synthetic_pairs / pairs.self_pairs) or plain tuples, in any
                iterable (a generator keeps only one subject's pairs in memory at a time);
                r comes from the pairs or meta['factor']; all intensities already normalised.
    spill:      a directory for the pairs' arrays, sampled memory-mapped (PatchSampler).
    checkpoint: path of the training checkpoint: resumed from when it exists, rewritten
                atomically every `checkpoint_every` steps and at the end.
    loss_csv:   LossLog CSV (step, loss, l1, gradient, lr), mean over each `log_every` steps.
    device:     "auto" (CUDA with bf16 mixed precision when present, else CPU), "cpu", "cuda".
    Returns the trained network (eval mode, on the CPU). On the CPU a resumed run ends with
    the same weights as an uninterrupted one (model, optimiser, sampler and RNG restored).
    """
    dev = select_device(device)
    configure_device(dev)
    meta = dict(meta or {})
    seed_everything(config.seed)
    sampler = PatchSampler(pairs, config, meta.get("factor"), spill)
    model = build_model(config, sampler.factor).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    start = 0
    fingerprint = sampler.fingerprint
    state = load_resumable(checkpoint, CHECKPOINT_KIND, fingerprint, asdict(config), RESUMABLE_FIELDS)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.state = state["sampler"]
        set_rng_state(state["rng"])
        start = int(state["step"])
        sums, count = np.array(state["log_sums"], dtype=np.float64), int(state["log_count"])
    else:
        sums, count = np.zeros(3), 0
    log = LossLog(loss_csv, ["loss", "l1", "gradient", "lr"], resume_step=start)
    amp = dev.type == "cuda"

    def save(step: int) -> None:
        save_checkpoint(checkpoint, {
            "kind": CHECKPOINT_KIND, "step": step, "config": asdict(config), "data": fingerprint,
            "factor": sampler.factor, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "sampler": sampler.state, "rng": rng_state(), "log_sums": sums.tolist(), "log_count": count,
            "meta": _plain(meta)})

    model.train()
    tuner = ThreadTuner(dev)
    bar = Progress(config.steps, "train sr", initial=start, enabled=progress)
    for step in range(start, config.steps):
        lr = _lr_at(step, config)
        for group in opt.param_groups:
            group["lr"] = lr
        xb, yb = sampler.batch(config.batch_size)
        x = torch.from_numpy(xb).to(dev, non_blocking=True)
        y = torch.from_numpy(yb).to(dev, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        pred = pred.float()
        l1 = (pred - y).abs().mean()
        grad = _gradient_l1(pred, y) if config.gradient_loss_weight > 0 else l1.new_zeros(())
        loss = l1 + config.gradient_loss_weight * grad
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums += (loss.item(), l1.item(), grad.item())
        count += 1
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            mean = sums / count
            log.write(done, loss=mean[0], l1=mean[1], gradient=mean[2], lr=lr)
            bar.set_postfix(loss=f"{mean[0]:.4g}")
            sums[:] = 0
            count = 0
        if done % config.checkpoint_every == 0 or done == config.steps:
            save(done)
        bar.update(1)
        tuner.step()
    bar.close()
    tuner.close()
    model.eval()
    return model.cpu()


# --------------------------------------------------------------------------- model files

def _plain(value):
    """JSON-safe copy of meta (numpy scalars and arrays become Python numbers and lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def save_model(path, model: SRNet, config: SRConfig, meta: dict | None = None) -> None:
    """Write the model file (atomically): weights, config, factor r and the caller's meta.

    meta should hold what inference needs besides the weights: slice model, thickness and
    spacing, slice axis, normalisation (applied by the caller), ...; JSON-like values.
    """
    state = {"kind": MODEL_KIND, "version": MODEL_VERSION, "config": asdict(config),
             "factor": int(model.factor), "dims": int(model.dims),
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "meta": _plain(dict(meta or {}))}
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


# --------------------------------------------------------------------------- inference

def _windows(n: int, size: int, stride: int) -> list[int]:
    """Window starts covering [0, n): multiples of the stride, the last one flush with the end."""
    if size >= n:
        return [0]
    starts = list(range(0, n - size, stride))
    starts.append(n - size)
    return starts


def _weights_1d(start: int, size: int, n: int, overlap: int, margin: int) -> np.ndarray:
    """Blending weights of one window: 0 within `margin` of an inner edge, linear ramp to 1."""
    k = np.arange(size, dtype=np.float64)
    w = np.ones(size)
    ramp = max(overlap - 2 * margin, 1)
    if start > 0:
        w = np.minimum(w, np.clip((k - margin + 0.5) / ramp, 0, 1))
    if start + size < n:
        w = np.minimum(w, np.clip((size - margin - k - 0.5) / ramp, 0, 1))
    return w.astype(np.float32)


def _round_up(x: int, g: int) -> int:
    return int(math.ceil(x / g) * g)


@torch.no_grad()
def _run_windows(model: SRNet, vol: np.ndarray, patch: int, overlap: int | None, dev: torch.device,
                 batch_size: int, desc: str = "apply sr") -> np.ndarray:
    """Apply the net over `vol` laid out (batch-like axes..., spatial axes..., degraded last).

    2D: vol (C, W, H): windows over (W, H), all C images of a window batched.
    3D: vol (D1, D2, H): windows over all three, several windows per batch.
    H is padded with edge values to a multiple of r first, as the net itself would.
    """
    g = model.group
    h = vol.shape[-1]
    pad = (-h) % g
    if pad:
        vol = np.concatenate([vol, np.repeat(vol[..., -1:], pad, axis=-1)], axis=-1)
    reach_deg, reach_other = model.reach
    spatial = vol.shape[1:] if model.dims == 2 else vol.shape
    sizes, strides, margins, overlaps = [], [], [], []
    for i, n in enumerate(spatial):
        degraded = i == len(spatial) - 1
        reach = reach_deg if degraded else reach_other
        ov = overlap if overlap is not None else 2 * reach + (2 * g if degraded else 8)
        size = min(_round_up(patch, g) if degraded else patch, n)
        ov = min(_round_up(ov, g) if degraded else ov, max(size - (g if degraded else 1), 0))
        stride = max(size - ov, g if degraded else 1)
        sizes.append(size)
        strides.append(stride)
        overlaps.append(ov)
        margins.append(min(reach, max((ov - 1) // 2, 0)))
    grids = [_windows(n, s, t) for n, s, t in zip(spatial, sizes, strides)]
    out = np.zeros(vol.shape, dtype=np.float32)
    wsum = np.zeros(spatial, dtype=np.float32)
    starts = np.array(np.meshgrid(*grids, indexing="ij")).reshape(len(spatial), -1).T
    weight_of = []
    for st in starts:
        ws = [_weights_1d(int(s), z, n, o, m) for s, z, n, o, m in zip(st, sizes, spatial, overlaps, margins)]
        w = ws[0]
        for x in ws[1:]:
            w = np.multiply.outer(w, x)
        weight_of.append(w)
        wsum[tuple(slice(int(s), int(s) + z) for s, z in zip(st, sizes))] += w

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch[:, None])).to(dev)
        y = model(x)[:, 0].float().cpu().numpy()
        bar.update(1)
        return y

    batches = len(starts) * -(-vol.shape[0] // batch_size) if model.dims == 2 else -(-len(starts) // batch_size)
    bar = Progress(batches, desc, unit="batch")
    if model.dims == 2:
        for st, w in zip(starts, weight_of):
            region = (slice(None),) + tuple(slice(int(s), int(s) + z) for s, z in zip(st, sizes))
            for c0 in range(0, vol.shape[0], batch_size):
                sub = (slice(c0, c0 + batch_size),) + region[1:]
                out[sub] += run(vol[sub]) * w
    else:
        for b0 in range(0, len(starts), batch_size):
            regions = [tuple(slice(int(s), int(s) + z) for s, z in zip(st, sizes)) for st in starts[b0:b0 + batch_size]]
            y = run(np.stack([vol[r] for r in regions]))
            for r, yi, w in zip(regions, y, weight_of[b0:b0 + batch_size]):
                out[r] += yi * w
    bar.close()
    out /= wsum[None] if model.dims == 2 else wsum
    return out[..., :h]


def predictions(model: SRNet, upsampled: np.ndarray, slice_axis: int, patch: int = 192,
                overlap: int | None = None, device="auto", batch_size: int = 8, flips: bool = False):
    """The SR net's predictions of a volume already cubic-upsampled onto the output grid.

    upsampled: (X, Y, Z) float32 (normalised like the training pairs), real slices at
    0, r, 2r, ... along `slice_axis`. Sliding windows of `patch` voxels per side overlap
    by `overlap` (default: twice the net's reach plus a little), weights blend them
    linearly and are 0 within the reach of an inner window edge, so the result equals
    the whole-volume application (up to float rounding) whenever overlap > 2 x reach.
    Only `batch_size` windows (2D: images of one window) are on the device at a time;
    the output is accumulated on the CPU.
    Yields (flipped, prediction) pairs, float32 of the input's shape: "2d" nets one per
    through-plane orientation (slice axis with each other axis), "3d" nets one; with
    `flips`, then the same of the volume flipped along every axis (flipped back; the flip
    maps slice i*r onto slice (n-1-i)*r, so real slices stay real).
    """
    if slice_axis not in (0, 1, 2):
        raise ThinsliceError(f"apply_sr: slice_axis must be 0, 1 or 2, got {slice_axis}")
    vol = np.asarray(upsampled, dtype=np.float32)
    if vol.ndim != 3:
        raise ThinsliceError(f"apply_sr: expected a 3D volume, got shape {vol.shape}")
    if not np.all(np.isfinite(vol)):
        raise ThinsliceError("apply_sr: the volume holds NaN or infinite values")
    if (vol.shape[slice_axis] - 1) % model.factor:
        raise ThinsliceError(
            f"apply_sr: {vol.shape[slice_axis]} slices along axis {slice_axis} is not an output grid "
            f"of factor {model.factor} ((n-1)*r+1 slices); upsample the LR scan by the model's factor")
    dev = select_device(device)
    model = model.to(dev).eval()
    others = [a for a in range(3) if a != slice_axis]
    if model.dims == 2:   # (C, W, H) layouts: C the other in-plane axis, H the slice axis
        layouts = [(3 - slice_axis - b, b, slice_axis) for b in others]
    else:
        layouts = [(*others, slice_axis)]
    try:
        for flipped in (False, True) if flips else (False,):
            source = np.ascontiguousarray(np.flip(vol)) if flipped else vol
            for n, order in enumerate(layouts, start=1):
                moved = np.ascontiguousarray(np.transpose(source, order))
                y = _run_windows(model, moved, patch, overlap, dev, batch_size,
                                 desc=f"apply sr{', flipped' if flipped else ''}, orientation {n}/{len(layouts)}")
                y = np.transpose(y, np.argsort(order))
                yield flipped, np.ascontiguousarray(np.flip(y) if flipped else y)
    finally:
        model.cpu()


def apply_sr(model: SRNet, upsampled: np.ndarray, slice_axis: int, **options) -> np.ndarray:
    """The mean of the net's `predictions` (options: patch, overlap, device, batch_size, flips)."""
    total, n = None, 0
    for _, y in predictions(model, upsampled, slice_axis, **options):
        total = y if total is None else total + y
        n += 1
    return total / n


def apply_sr_with_spread(model: SRNet, upsampled: np.ndarray, slice_axis: int,
                         **options) -> tuple[np.ndarray, np.ndarray]:
    """(output, spread): the output of `apply_sr` (the unflipped predictions' mean) and the
    per-voxel standard deviation of all predictions, flipped ones included: where
    predictions that should agree differ, the output is not to be trusted (twice the time)."""
    plain, n_plain = None, 0
    total = squares = None
    n = 0
    for flipped, y in predictions(model, upsampled, slice_axis, flips=True, **options):
        y64 = y.astype(np.float64)
        total = y64 if total is None else total + y64
        squares = y64 ** 2 if squares is None else squares + y64 ** 2
        n += 1
        if not flipped:
            plain = y if plain is None else plain + y
            n_plain += 1
    spread = np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0.0)).astype(np.float32)
    return plain / n_plain, spread
