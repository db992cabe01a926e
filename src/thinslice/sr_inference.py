"""Inference of the stage-2 SR network: sliding windows over a volume already
cubic-upsampled onto the output grid, blended into one prediction per orientation, and the
spread of predictions that should agree (the uncertainty map). `super_resolve` does the same
from the LR scan one region at a time, so that memory holds the output and one region.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import torch

from .errors import ThinsliceError
from .interpolate import upsample
from .progress import Progress
from .sr import SRNet
from .training import select_device


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
                 batch_size: int, desc: str = "apply sr", progress: bool = True) -> np.ndarray:
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
    bar = Progress(batches, desc, unit="batch", enabled=progress)
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
    Yields predictions, float32 of the input's shape: "2d" nets one per through-plane
    orientation (slice axis with each other axis), "3d" nets one; then the same of the volume
    flipped along every axis (flipped back; the flip maps slice i*r onto slice (n-1-i)*r, so
    real slices stay real).
    """
    if slice_axis not in (0, 1, 2):
        raise ThinsliceError(f"apply sr: slice_axis must be 0, 1 or 2, got {slice_axis}")
    vol = np.asarray(upsampled, dtype=np.float32)
    if vol.ndim != 3:
        raise ThinsliceError(f"apply sr: expected a 3D volume, got shape {vol.shape}")
    if not np.all(np.isfinite(vol)):
        raise ThinsliceError("apply sr: the volume holds NaN or infinite values")
    if (vol.shape[slice_axis] - 1) % model.factor:
        raise ThinsliceError(
            f"apply sr: {vol.shape[slice_axis]} slices along axis {slice_axis} is not an output grid "
            f"of factor {model.factor} ((n-1)*r+1 slices); upsample the LR scan by the model's factor")
    dev = select_device(device)
    model = model.to(dev).eval()
    others = [a for a in range(3) if a != slice_axis]
    if model.dims == 2:   # (C, W, H) layouts: C the other in-plane axis, H the slice axis
        layouts = [(3 - slice_axis - b, b, slice_axis) for b in others]
    else:
        layouts = [(*others, slice_axis)]
    try:
        for flipped in (False, True):
            source = np.ascontiguousarray(np.flip(vol)) if flipped else vol
            for n, order in enumerate(layouts, start=1):
                moved = np.ascontiguousarray(np.transpose(source, order))
                y = _run_windows(model, moved, patch, overlap, dev, batch_size,
                                 desc=f"apply sr{', flipped' if flipped else ''}, orientation {n}/{len(layouts)}")
                y = np.transpose(y, np.argsort(order))
                yield np.ascontiguousarray(np.flip(y) if flipped else y)
    finally:
        model.cpu()


def apply_sr_with_spread(model: SRNet, upsampled: np.ndarray, slice_axis: int,
                         **options) -> tuple[np.ndarray, np.ndarray]:
    """(output, spread): the mean and the per-voxel standard deviation of all the net's
    `predictions`, those of the flipped volume included (a flip ensemble: its mean is a little
    more accurate than the unflipped predictions' mean, at twice the time); where
    predictions that should agree differ, the output is not to be trusted."""
    total = squares = None
    n = 0
    for y in predictions(model, upsampled, slice_axis, **options):
        y64 = y.astype(np.float64)
        total = y64 if total is None else total + y64
        squares = y64 ** 2 if squares is None else squares + y64 ** 2
        n += 1
    spread = np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0.0)).astype(np.float32)
    return (total / n).astype(np.float32), spread


SLAB_VOXELS = 2**23   # voxels of the upsampled slab of one region (32 MB per float32 array)


def _spans(n: int, size: int) -> list[slice]:
    """[0, n) cut into consecutive spans of at most `size`."""
    return [slice(c, min(c + size, n)) for c in range(0, n, size)]


def _predictions(model: SRNet, slab: np.ndarray, ia: slice, ib: slice, dev: torch.device, batch_size: int,
                 patch: int, overlap: int | None):
    """The four through-plane predictions of the interior (ia, ib, :) of a slab laid out (a, b, slice),
    one at a time: the images (b, slice) stacked along a, the images (a, slice) stacked along b,
    then the same of the volume flipped along every axis (the slab flipped, the interior mirrored),
    flipped back."""
    def run(images: np.ndarray) -> np.ndarray:
        return _run_windows(model, np.ascontiguousarray(images), patch, overlap, dev, batch_size, progress=False)

    la, lb = slab.shape[:2]
    for flipped in (False, True):
        source = slab[::-1, ::-1, ::-1] if flipped else slab
        ja = slice(la - ia.stop, la - ia.start) if flipped else ia
        jb = slice(lb - ib.stop, lb - ib.start) if flipped else ib
        for y in (run(source[ja])[:, jb], run(source[:, jb].transpose(1, 0, 2))[:, ja].transpose(1, 0, 2)):
            yield y[::-1, ::-1, ::-1] if flipped else y


def super_resolve(model: SRNet, lr: np.ndarray, slice_axis: int, spread: bool = False, spread_scale: float = 1.0,
                  device="auto", batch_size: int = 8, patch: int | None = None,
                  overlap: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(output, spread or None) of a normalised LR volume on the model's working grid: what
    `apply_sr_with_spread` gives on its cubic upsampling (up to float rounding), the flip
    ensemble's mean and, with `spread`, its spread multiplied by `spread_scale` (e.g. the
    intensity range: input units).

    A "2d" net sees each through-plane image on its own and reaches `model.reach[1]` voxels across
    it, so the volume is done one region at a time: a box of the two in-plane axes with the whole
    slice axis, upsampled on a slab widened by that reach, both orientations and their flipped
    twins predicted there and combined at once, each image in one window up to `patch` voxels a
    side (default 1024: overlapping windows redo the net's reach, which is long along the slice
    axis). Memory holds the output, one slab and its predictions; the spread is written region by
    region to an unlinked temporary file ($TMPDIR) and comes back memory-mapped, so that the
    caller can write the output and free it before the spread is read. "3d" nets take the
    whole-volume path.
    """
    r = model.factor
    if model.dims != 2:
        options = dict(device=device, batch_size=batch_size, overlap=overlap, **({"patch": patch} if patch else {}))
        up = upsample(lr, slice_axis, r, "cubic")
        out, sd = apply_sr_with_spread(model, up, slice_axis, **options)
        return out, np.multiply(sd, spread_scale, out=sd) if spread else None
    patch = patch or 1024
    a, b = (x for x in range(3) if x != slice_axis)
    layout = (a, b, slice_axis)
    shape = list(lr.shape)
    shape[slice_axis] = (shape[slice_axis] - 1) * r + 1
    n_a, n_b, n_s = shape[a], shape[b], shape[slice_axis]
    reach = model.reach[1]
    side = max(int(math.sqrt(SLAB_VOXELS / n_s)) - 2 * reach, 8)
    regions = [(ra, rb) for ra in _spans(n_a, side) for rb in _spans(n_b, side)]
    out = np.zeros(shape, np.float32)
    spread_file = tempfile.TemporaryFile() if spread else None
    dev = select_device(device)
    model = model.to(dev).eval()
    bar = Progress(len(regions), "apply sr", unit="region")
    try:
        for ra, rb in regions:
            wa = slice(max(ra.start - reach, 0), min(ra.stop + reach, n_a))   # the slab: the region widened
            wb = slice(max(rb.start - reach, 0), min(rb.stop + reach, n_b))
            index = [slice(None)] * 3
            index[a], index[b] = wa, wb
            slab = np.transpose(upsample(lr[tuple(index)], slice_axis, r, "cubic"), layout)
            ia = slice(ra.start - wa.start, ra.stop - wa.start)   # the region within the slab
            ib = slice(rb.start - wb.start, rb.stop - wb.start)
            cubic = slab[ia, ib]
            total = np.zeros(cubic.shape, np.float32)   # the deviations from the cubic input: float32
            squares = np.zeros(cubic.shape, np.float32) if spread else None   # sums without cancellation
            for y in _predictions(model, slab, ia, ib, dev, batch_size, patch, overlap):
                deviation = np.subtract(y, cubic, out=y)
                total += deviation
                if spread:
                    squares += deviation * deviation
            del y, deviation
            total /= 4
            index[a], index[b] = ra, rb
            out[tuple(index)] = np.transpose(total + cubic, np.argsort(layout))
            if spread:
                total *= total
                squares /= 4
                squares -= total
                sd = np.sqrt(np.maximum(squares, 0.0, out=squares), out=squares)
                sd *= np.float32(spread_scale)
                for i, plane in enumerate(sd):   # rows of the file's (a, b, slice) layout
                    os.pwrite(spread_file.fileno(), plane.tobytes(), ((ra.start + i) * n_b + rb.start) * n_s * 4)
            bar.update(1)
        bar.close()
    finally:
        model.cpu()
    if not spread:
        return out, None
    mapped = np.memmap(spread_file, np.float32, "r", shape=(n_a, n_b, n_s))
    spread_file.close()   # the mapping keeps the (unlinked) file until it goes
    return out, np.transpose(mapped, np.argsort(layout))
