"""Figures for people: through-plane reformats of every method side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from .geometry import Geometry, output_affine, output_shape  # noqa: E402
from .interpolate import nearest_upsample  # noqa: E402
from .io import atomic_path  # noqa: E402
from .metrics import resample_to  # noqa: E402
from .volume import Volume  # noqa: E402


def _load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.header.get_zooms()[:3], dtype=float)


def reformat(data: np.ndarray, slice_axis: int, in_plane_axis: int, index: int | None = None) -> np.ndarray:
    """A through-plane section: the plane spanned by `in_plane_axis` (rows) and the slice axis
    (columns), through the middle of the remaining axis unless `index` is given."""
    other = ({0, 1, 2} - {slice_axis, in_plane_axis}).pop()
    index = data.shape[other] // 2 if index is None else index
    section = np.take(data, index, axis=other)
    kept = [a for a in range(3) if a != other]
    return section if kept.index(in_plane_axis) == 0 else section.T


def truth_on_output_grid(truth_path, lr_path, geom: Geometry) -> np.ndarray:
    """The ground truth sampled at the output grid's voxels (world coordinates; 0 outside its
    field of view), whatever its own grid: a truth column may hold any orientation or extent."""
    lr_img = nib.load(str(lr_path))
    shape = output_shape(lr_img.shape[:3], geom.slice_axis, geom.factor)
    reference = Volume(np.zeros(shape, np.float32), output_affine(lr_img.affine, geom.slice_axis, geom.factor))
    t = nib.load(str(truth_path))
    values, inside = resample_to(Volume(np.asarray(t.dataobj, dtype=np.float32), t.affine), reference, order=1)
    return np.where(inside, values, 0.0).astype(np.float32)


def run_figure(lr_path, geometry_path, outputs: dict[str, str], out_png, truth_path=None,
               title: str = "") -> None:
    """One row of through-plane reformats (LR, each method, truth), and |error| below when a
    truth exists. Shared window per row; axes in mm; the slice axis runs horizontally."""
    geom = Geometry.load(geometry_path)
    axis = geom.slice_axis
    in_plane = [a for a in range(3) if a != axis][0]
    lr, lr_zoom = _load(lr_path)
    panels = [("LR (nearest)", nearest_upsample(lr, axis, geom.factor))]
    panels += [(name, _load(p)[0]) for name, p in outputs.items()]
    truth = truth_on_output_grid(truth_path, lr_path, geom) if truth_path else None
    if truth is not None:
        panels.append(("ground truth", truth))
    sections = [(name, reformat(d, axis, in_plane)) for name, d in panels]
    lo, hi = np.percentile(np.concatenate([s.ravel() for _, s in sections]), [0.5, 99.5])
    extent = [0, sections[0][1].shape[1] * geom.target_spacing_mm, sections[0][1].shape[0] * lr_zoom[in_plane], 0]
    rows = 2 if truth is not None else 1
    fig, axes = plt.subplots(rows, len(sections), figsize=(2.6 * len(sections), 2.9 * rows), squeeze=False,
                             constrained_layout=True)
    for col, (name, s) in enumerate(sections):
        ax = axes[0, col]
        ax.imshow(s, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"slice axis {axis} (mm)", fontsize=7)
        ax.tick_params(labelsize=6)
        if col == 0:
            ax.set_ylabel(f"axis {in_plane} (mm)", fontsize=7)
    if truth is not None:
        t = reformat(truth, axis, in_plane)
        errors = [(name, np.abs(s - t)) for name, s in sections if name != "ground truth"]
        emax = max(float(np.percentile(e, 99.5)) for _, e in errors) or 1.0
        for col in range(len(sections)):
            ax = axes[1, col]
            if col < len(errors):
                im = ax.imshow(errors[col][1], cmap="inferno", vmin=0, vmax=emax, extent=extent,
                               interpolation="nearest")
                ax.set_title(f"|error| {errors[col][0]}", fontsize=8)
                ax.tick_params(labelsize=6)
            else:
                ax.axis("off")
        fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8, label="|error|")
    if title:
        fig.suptitle(title, fontsize=10)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
