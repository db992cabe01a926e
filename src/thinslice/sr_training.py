"""Training of the stage-2 SR network (sr.SRNet) on (input, target, degraded axis) pairs:
patches drawn from the pairs, an L1, L2 or L1-then-L2 pixel loss (plus an optional L1 one on finite
differences), a cosine-decayed learning rate, and checkpoints that resume exactly on the CPU.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .errors import ThinsliceError
from .interpolate import Upsampled
from .normalize import above_fraction
from .progress import Progress
from .settings import SRConfig
from .sr import SRNet, build_model, json_safe
from .training import (LossLog, ThreadTuner, autocast_dtype, configure_device, load_resumable, rng_state,
                       save_checkpoint, seed_everything, select_device, set_rng_state, update_fingerprint)

CHECKPOINT_KIND = "thinslice-sr-checkpoint"
# Settings a checkpoint may differ in and still be resumed (`steps` may not: the learning
# rate is cosine-decayed over it).
RESUMABLE_FIELDS = ("checkpoint_every", "log_every")


# --------------------------------------------------------------------------- patch sampling

class _PairData:
    """A pair prepared for sampling: arrays padded to fit a patch, foreground voxels listed (those
    of the volume its target is a crop of: `volume_shape`, the crop starting at `origin`)."""

    def __init__(self, pair, index: int, factor_default: int | None, patch: int, volumes: "_Volumes"):
        if len(pair) < 3:
            raise ThinsliceError(f"pair {index}: expected (input, target, axis[, factor[, context]])")
        inp, target, axis = pair[0], pair[1], int(pair[2])
        factor = int(pair[3]) if len(pair) > 3 and pair[3] is not None else factor_default
        context = pair[4] if len(pair) > 4 else None
        self.source = pair[5] if len(pair) > 5 else "synthetic"
        if factor is None:
            raise ThinsliceError(f"pair {index}: no factor r; give it in the pair or in meta['factor']")
        if not isinstance(inp, Upsampled):
            inp = np.asarray(inp, dtype=np.float32)
        target = np.asarray(target, dtype=np.float32)
        if inp.ndim != 3 or inp.shape != target.shape:
            raise ThinsliceError(f"pair {index}: input {inp.shape} and target {target.shape} "
                                 f"must be 3D arrays of one shape")
        if axis not in (0, 1, 2):
            raise ThinsliceError(f"pair {index}: degraded axis must be 0, 1 or 2, got {axis}")
        samples = inp.slices if isinstance(inp, Upsampled) else inp
        if not (np.all(np.isfinite(samples)) and np.all(np.isfinite(target))):
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
            inp, target = np.pad(np.asarray(inp), pad), np.pad(target, pad)
        if isinstance(inp, Upsampled):
            self.input = Upsampled(volumes.stored(inp.slices, f"pair{index}_input"), inp.axis, inp.factor)
        else:
            self.input = volumes.stored(inp, f"pair{index}_input")
        self.target, self.volume_shape, self.origin, self.foreground = volumes.crop(target, f"pair{index}")
        self.shape = target.shape


def _crop_origin(target: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(the volume whose memory `target` is a box of, the box's first voxel in it); (target, (0, 0, 0))
    when it is no such box."""
    volume = target.base
    if not (isinstance(volume, np.ndarray) and volume.ndim == 3 and volume.dtype == target.dtype
            and volume.flags.c_contiguous and target.strides == volume.strides):
        return target, (0, 0, 0)
    offset = (target.__array_interface__["data"][0] - volume.__array_interface__["data"][0]) // target.itemsize
    origin = tuple(int(i) for i in np.unravel_index(offset, volume.shape))
    fits = all(o + n <= m for o, n, m in zip(origin, target.shape, volume.shape))   # same strides: then a box
    return (volume, origin) if fits else (target, (0, 0, 0))


_BITS_SET = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1, dtype=np.uint8)   # per byte value


class _Foreground:
    """A volume's foreground voxels as a bit mask (one bit per voxel, where a list of their flat
    indices takes 32 per foreground voxel) with the count of voxels before each block of bits:
    `self[k]` is the k-th foreground voxel's flat index in C order, np.flatnonzero(mask)[k]."""

    BLOCK = 512   # bytes of the mask per block: 4096 voxels, unpacked to find one

    def __init__(self, mask: np.ndarray, stored):
        """stored: where the packed mask is kept (an array in memory or a file: _Volumes.stored)."""
        bits = np.packbits(mask.ravel())
        per_block = np.add.reduceat(_BITS_SET[bits], np.arange(0, bits.size, self.BLOCK), dtype=np.int64)
        self.before = np.cumsum(per_block) - per_block
        self.size = int(per_block.sum())
        self.bits = stored(bits)

    def __getitem__(self, k: int) -> int:
        if not 0 <= k < self.size:
            raise IndexError(f"foreground voxel {k} of {self.size}")
        block = int(np.searchsorted(self.before, k, side="right")) - 1
        chunk = np.unpackbits(self.bits[block * self.BLOCK:(block + 1) * self.BLOCK])
        return block * self.BLOCK * 8 + int(np.flatnonzero(chunk)[k - self.before[block]])


class _Volumes:
    """The volumes that pairs' targets are boxes of, with their foreground voxels, each made once
    for the consecutive pairs that share it (one scan's pairs: their targets are views of its
    memory). With a directory they go to .npy files there (stored() does so for any array) and are
    read back memory-mapped: a cohort's pairs then take disk space, not memory (the OS caches what
    is sampled)."""

    def __init__(self, threshold: float, directory: str | Path | None = None):
        self.threshold = threshold
        self.directory = Path(directory) if directory is not None else None
        self.last = None      # (volume, its stored copy, its foreground)

    def stored(self, data: np.ndarray, name: str) -> np.ndarray:
        if self.directory is None:
            return data
        path = self.directory / f"{name}.npy"
        np.save(path, data)
        return np.load(path, mmap_mode="r")

    def crop(self, target: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...], _Foreground]:
        """(the stored target, the shape of its volume, the target's origin in it, the volume's
        foreground voxels)."""
        volume, origin = _crop_origin(target)
        if self.last is None or volume is not self.last[0]:
            fg = _Foreground(above_fraction(volume, self.threshold), lambda bits: self.stored(bits, f"{name}_foreground"))
            self.last = (volume, self.stored(volume, f"{name}_target"), fg)
        _, stored, fg = self.last
        return stored[tuple(slice(o, o + n) for o, n in zip(origin, target.shape))], volume.shape, origin, fg


class PatchSampler:
    """Draws training batches from the pairs; its whole state is one numpy generator."""

    def __init__(self, pairs, config: SRConfig, factor_default: int | None = None, spill: str | Path | None = None):
        """pairs: any iterable of pairs, read once. With `spill` (a directory) each pair's arrays
        go to files there as soon as it is read (_Volumes), so memory holds one scan's pairs at a
        time, not the cohort's. `fingerprint` is the digest of the pairs (training.data_fingerprint)."""
        self.config = config
        self.data = []
        digest = hashlib.blake2b(digest_size=16)
        volumes = _Volumes(config.foreground_threshold, spill)
        for i, pair in enumerate(pairs):
            update_fingerprint(digest, pair)
            if i == 0:
                first = pair[3] if len(pair) > 3 and pair[3] is not None else factor_default
                g = int(first) if (config.unshuffle and first) else 1
                self.patch = int(math.ceil(config.patch_size / g) * g)
            self.data.append(_PairData(pair, i, factor_default, self.patch, volumes))
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
            voxel = np.unravel_index(int(d.foreground[rng.integers(0, d.foreground.size)]), d.volume_shape)
            centre = np.clip(np.subtract(voxel, d.origin), 0, np.subtract(d.shape, 1))   # in the pair's box
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


def pixel_loss(error: torch.Tensor, loss: str, step: int, steps: int) -> torch.Tensor:
    """The pixel loss of `error` (prediction - target) at `step` of `steps`. l1_then_l2 turns to L2 for
    the last third, divided by twice the (constant) mean absolute error: its gradient, error / (n mean|e|),
    then has L1's scale, so the switch does not jolt Adam's step size, and its value stays near L1's."""
    if loss == "l1" or (loss == "l1_then_l2" and step < int(steps * 2 / 3)):
        return error.abs().mean()
    if loss == "l2":
        return error.square().mean()
    return error.square().mean() / (2 * error.abs().mean().detach())


def _lr_at(step: int, config: SRConfig) -> float:
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))


# --------------------------------------------------------------------------- training

def train_sr(pairs, config: SRConfig, checkpoint, loss_csv, device="auto", progress: bool = True,
             meta: dict | None = None, spill: str | Path | None = None, init=None) -> SRNet:
    """Train the SR network on (input, target, degraded_axis[, factor[, context]]) pairs.

    pairs:      Pair objects (pairs.synthetic_pairs / pairs.self_pairs) or plain tuples, in any
                iterable (a generator keeps only one subject's pairs in memory at a time);
                r comes from the pairs or meta['factor']; all intensities already normalised.
    spill:      a directory for the pairs' arrays, sampled memory-mapped (PatchSampler).
    init:       a network to start from (a previous round's; steps.train_sr), else new weights; a
                checkpoint to resume from wins over it.
    checkpoint: path of the training checkpoint: resumed from when it exists, rewritten
                atomically every `checkpoint_every` steps and at the end.
    loss_csv:   LossLog CSV (step, loss, pixel, gradient, lr), mean over each `log_every` steps.
    device:     "auto" (CUDA with mixed precision, training.autocast_dtype, when present, else
                CPU), "cpu", "cuda".
    Returns the trained network (eval mode, on the CPU). On the CPU a resumed run ends with
    the same weights as an uninterrupted one (model, optimiser, sampler and RNG restored).
    """
    dev = select_device(device)
    configure_device(dev)
    meta = dict(meta or {})
    seed_everything(config.seed)
    sampler = PatchSampler(pairs, config, meta.get("factor"), spill)
    if spill is not None:
        size = sum(f.stat().st_size for f in Path(spill).iterdir())
        print(f"training pairs: {len(sampler.data)}, in {size / 2**20:.0f} MB of files in {spill} while training")
    model = build_model(config, sampler.factor)
    if init is not None:
        model.load_state_dict(init.state_dict())
    model = model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    amp_dtype = autocast_dtype(dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    start = 0
    fingerprint = sampler.fingerprint
    state = load_resumable(checkpoint, CHECKPOINT_KIND, fingerprint, asdict(config), RESUMABLE_FIELDS)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.state = state["sampler"]
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        sums, count = np.array(state["log_sums"], dtype=np.float64), int(state["log_count"])
    else:
        sums, count = np.zeros(3), 0
    log = LossLog(loss_csv, ["loss", "pixel", "gradient", "lr"], resume_step=start)

    def save(step: int) -> None:
        payload = {"kind": CHECKPOINT_KIND, "step": step, "config": asdict(config), "data": fingerprint,
                   "factor": int(sampler.factor), "model": model.state_dict(), "optimizer": opt.state_dict(),
                   "sampler": sampler.state, "rng": rng_state(), "log_sums": sums.tolist(), "log_count": count,
                   "meta": json_safe(meta)}
        if scaler.is_enabled():
            payload["scaler"] = scaler.state_dict()
        save_checkpoint(checkpoint, payload)

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
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(x)
        pred = pred.float()
        error = pred - y
        pixel = pixel_loss(error, config.loss, step, config.steps)
        grad = _gradient_l1(pred, y) if config.gradient_loss_weight > 0 else pixel.new_zeros(())
        loss = pixel + config.gradient_loss_weight * grad
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()   # scaled only in float16: otherwise loss.backward(), opt.step()
        scaler.step(opt)
        scaler.update()
        sums += (loss.item(), pixel.item(), grad.item())
        count += 1
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            mean = sums / count
            log.write(done, loss=mean[0], pixel=mean[1], gradient=mean[2], lr=lr)
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

