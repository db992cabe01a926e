"""Figures for people: the paper figures of a run, drawn from its NIfTI outputs and tables.

Every volume is shown in anatomical orientation whatever its voxel order: the voxel axes are
mapped onto the nearest RAS axes (as `nibabel.as_closest_canonical` does) and each plane is
drawn the way radiology viewers draw it:

- sagittal: superior up, anterior left;
- coronal:  superior up, the patient's right on the viewer's left (radiological);
- axial:    anterior up, the patient's right on the viewer's left (radiological).

Panels are in millimetres (pixels of any aspect keep their physical shape) with a scale bar
and orientation letters; every row of grey images shares one window (percentiles over the
row). A method's outputs all lie on the output grid of the convention in `geometry`; a
ground truth on any grid is resampled onto it in world coordinates.

Figures (one function each, all write a PNG):
    reformats_figure  through-plane reformats of LR, each method and the truth, with zooms
    errors_figure     |method - truth| on the same planes
    uncertainty_figure  each SR output beside its uncertainty map (and its |error| with a truth)
    profile_figure    intensities along the slice axis through a structure
    pipeline_figure   real LR -> VAE synthetic HR -> its degraded LR, and the SR output
    metrics_figure    PSNR/SSIM per method (sharpness where no truth exists)
    training_figure   loss curves of the VAE and SR models (log y)
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as patheffects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from scipy import ndimage  # noqa: E402

from .errors import ThinsliceError  # noqa: E402
from .geometry import Geometry, output_affine, output_positions, output_shape  # noqa: E402
from .interpolate import nearest_upsample  # noqa: E402
from .io import atomic_path, read_nifti  # noqa: E402
from .metrics import resample_to  # noqa: E402
from .volume import Volume  # noqa: E402

DPI = 120
FONT = 9           # pt; nothing is drawn smaller than SMALL
SMALL = 8
PANEL_IN = 1.9     # width of one image column, inches
ZOOM_COLOR = "#ffd400"
PROFILE_COLOR = "#00c8ff"

# Known methods: display label and colour (one colour per method in every figure).
METHOD_LABELS = {
    "linear": "linear",
    "cubic": "cubic B-spline",
    "vae": "VAE synthesis",
    "sr_vae": "SR (VAE pairs)",
    "sr_self": "SR (self pairs)",
    "sr_both": "SR (VAE + self pairs)",
    "sr_supervised": "SR (supervised)",
    "eclare": "ECLARE",
}
METHOD_COLORS = {
    "linear": "#1f77b4",
    "cubic": "#ff7f0e",
    "vae": "#9467bd",
    "sr_vae": "#d62728",
    "sr_self": "#2ca02c",
    "sr_both": "#e377c2",
    "sr_supervised": "#8c564b",
    "eclare": "#17becf",
}
OTHER_COLORS = ["#bcbd22", "#7f7f7f", "#393b79", "#637939"]
LR_LABEL, TRUTH_LABEL = "LR (nearest)", "ground truth"
LR_COLOR, TRUTH_COLOR = "#555555", "black"

# Planes are named by the RAS axis normal to them; rows of a drawn plane run along the larger
# remaining RAS axis (its + end on top), columns along the smaller (its + end on the left).
PLANE_NAMES = ("sagittal", "coronal", "axial")
EDGE_LETTERS = {0: ("S", "I", "A", "P"), 1: ("S", "I", "R", "L"), 2: ("A", "P", "R", "L")}  # top, bottom, left, right
RAS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (- end, + end) of each RAS axis


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_color(method: str, others: list[str] | None = None) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    unknown = [m for m in (others or [method]) if m not in METHOD_COLORS]
    i = unknown.index(method) if method in unknown else 0
    return OTHER_COLORS[i % len(OTHER_COLORS)]


# ---------------------------------------------------------------------------------------------
# orientation


@dataclass(frozen=True)
class Orientation:
    """How the voxel axes of an array map onto RAS (nearest axes of an oblique affine).

    axes:  RAS axis (0 L->R, 1 P->A, 2 I->S) of each array axis;
    flips: True where the array axis runs towards L, P or I;
    zooms: voxel size (mm) along each array axis.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    zooms: tuple[float, float, float]

    @classmethod
    def from_affine(cls, affine) -> "Orientation":
        affine = np.asarray(affine, dtype=float)
        ornt = nib.orientations.io_orientation(affine)
        if np.isnan(ornt).any():
            raise ThinsliceError("figure: the affine has a degenerate axis; cannot orient the volume")
        zooms = np.linalg.norm(affine[:3, :3], axis=0)
        return cls(tuple(int(a) for a in ornt[:, 0]), tuple(bool(f < 0) for f in ornt[:, 1]),
                   tuple(float(z) for z in zooms))

    @property
    def codes(self) -> str:
        """Axis codes of the array axes, e.g. 'PIR' (the + end of each axis)."""
        return "".join(RAS_LETTERS[a][0 if f else 1] for a, f in zip(self.axes, self.flips))

    def ras_axis(self, array_axis: int) -> int:
        return self.axes[array_axis]

    def to_ras(self, data: np.ndarray) -> np.ndarray:
        """The array reordered and flipped so that its axes run L->R, P->A, I->S."""
        ornt = np.column_stack([self.axes, np.where(self.flips, -1, 1)]).astype(float)
        return np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt))

    def ras_zooms(self) -> tuple[float, float, float]:
        z = [0.0, 0.0, 0.0]
        for a, ras in enumerate(self.axes):
            z[ras] = self.zooms[a]
        return tuple(z)  # type: ignore[return-value]

    def ras_index(self, index, shape) -> tuple[int, int, int]:
        """Where voxel `index` of an array of `shape` lands in `to_ras(array)`."""
        out = [0, 0, 0]
        for a, ras in enumerate(self.axes):
            out[ras] = shape[a] - 1 - int(index[a]) if self.flips[a] else int(index[a])
        return tuple(out)  # type: ignore[return-value]


def plane_section(ras: np.ndarray, plane: int, index: int) -> np.ndarray:
    """The display image (rows top->bottom, columns left->right) of the plane normal to RAS
    axis `plane` at `index`, from a RAS-ordered array."""
    section = np.take(ras, index, axis=plane)  # remaining axes (a, b) with a < b
    return section.T[::-1, ::-1]


def plane_axes(plane: int) -> tuple[int, int]:
    """(RAS axis along the rows, RAS axis along the columns) of a displayed plane."""
    a, b = [k for k in range(3) if k != plane]
    return b, a


def display_position(ras_index, plane: int, shape, zooms) -> tuple[float, float]:
    """(x, y) in mm on a panel drawn by `show` of a RAS voxel index."""
    rows, cols = plane_axes(plane)
    return ((shape[cols] - 1 - ras_index[cols] + 0.5) * zooms[cols],
            (shape[rows] - 1 - ras_index[rows] + 0.5) * zooms[rows])


# ---------------------------------------------------------------------------------------------
# a subject's volumes on the output grid, in RAS order


def _load(path) -> tuple[np.ndarray, np.ndarray]:
    vol = read_nifti(path)
    return vol.data, vol.affine


def _on_grid(data, affine, shape, ref_affine, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`data` sampled on the grid (shape, ref_affine) in world coordinates, 0 outside its field
    of view, and the inside mask."""
    values, inside = resample_to(Volume(np.asarray(data, np.float32), affine),
                                 Volume(np.zeros(shape, np.float32), ref_affine), order=order)
    return np.where(inside, values, 0.0).astype(np.float32), inside


def truth_on_output_grid(truth_path, lr_path, geom: Geometry) -> np.ndarray:
    """The ground truth sampled at the output grid's voxels (world coordinates; 0 outside its
    field of view), whatever its own grid: a truth column may hold any orientation or extent."""
    lr_img = nib.load(str(lr_path))
    shape = output_shape(lr_img.shape[:3], geom.slice_axis, geom.ratio)
    data, affine = _load(truth_path)
    return _on_grid(data, affine, shape, output_affine(lr_img.affine, geom.slice_axis, geom.ratio))[0]


def _foreground(data: np.ndarray) -> np.ndarray:
    """Voxels above 10% of the robust range: the object, not the air around it."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, bool)
    lo, hi = np.percentile(finite, [1, 99.5])
    fg = np.nan_to_num(data, nan=lo) > lo + 0.1 * (hi - lo)
    if fg.sum() > 1000:
        fg = ndimage.binary_opening(fg, iterations=1)
    labels, n = ndimage.label(fg)
    if n > 1:  # the object, without specks of noise in the air around it
        sizes = np.bincount(labels.ravel())[1:]
        fg = labels == 1 + int(np.argmax(sizes))
    return fg


@dataclass
class Panel:
    key: str          # 'lr', 'truth' or a method name
    label: str
    ras: np.ndarray   # on the (cropped) output grid, RAS order
    color: str


@dataclass
class Scene:
    """One subject's LR, method outputs and truth on the output grid, RAS-ordered, cropped to
    the object (+ a margin).

    zooms:      voxel size (mm) along R, A, S;  slice_ras: the RAS axis of the slice axis;
    lr_samples: the real LR slices on the output grid, NaN between them (for profiles);
    inside:     where the truth covers the output grid (all True without a truth);
    grid_shape, grid_affine: the output grid as its NIfTI files hold it;
    box:        the crop of the RAS arrays (None: not cropped).
    """

    geometry: Geometry
    orientation: Orientation
    zooms: tuple[float, float, float]
    slice_ras: int
    lr: Panel
    methods: list[Panel]
    truth: Panel | None
    lr_samples: np.ndarray
    fg: np.ndarray
    inside: np.ndarray
    extra: dict[str, Panel] = field(default_factory=dict)
    grid_shape: tuple[int, int, int] | None = None
    grid_affine: np.ndarray | None = None
    box: tuple[slice, slice, slice] | None = None

    @classmethod
    def load(cls, lr_path, geometry_path, outputs: dict[str, str], truth_path=None,
             extra: dict[str, tuple[str, str, bool]] | None = None, crop: bool = True) -> "Scene":
        """outputs: method -> NIfTI on the output grid (resampled in world coordinates if not).
        extra: key -> (label, path, on_lr_grid): other volumes (e.g. the degraded synthetic LR,
        drawn nearest-upsampled when on_lr_grid)."""
        geom = Geometry.load(geometry_path)
        axis, r = geom.slice_axis, geom.ratio
        lr, lr_aff = _load(lr_path)
        shape = output_shape(lr.shape, axis, r)
        aff = output_affine(lr_aff, axis, r)
        ori = Orientation.from_affine(aff)
        methods_list = list(outputs)

        def grid(path, on_lr_grid=False):
            data, a = _load(path)
            if on_lr_grid:
                data, a = nearest_upsample(data, axis, r), output_affine(a, axis, r)
            if data.shape == shape and np.allclose(a, aff, atol=1e-4):
                return data
            return _on_grid(data, a, shape, aff)[0]

        lr_nearest = nearest_upsample(lr, axis, r)
        samples = np.full(shape, np.nan, np.float32)
        positions = output_positions(lr.shape[axis], r)
        on_real = np.flatnonzero(np.abs(positions - np.rint(positions)) < 1e-6)   # every slice for an integer r
        np.moveaxis(samples, axis, 0)[on_real] = np.moveaxis(lr, axis, 0)[np.rint(positions[on_real]).astype(int)]
        volumes = {"lr": lr_nearest}
        volumes.update({m: grid(p) for m, p in outputs.items()})
        inside = np.ones(shape, bool)
        if truth_path:
            t, ta = _load(truth_path)
            volumes["truth"], inside = _on_grid(t, ta, shape, aff)
        for key, (_, path, on_lr) in (extra or {}).items():
            volumes[f"extra:{key}"] = grid(path, on_lr)
        ras = {k: ori.to_ras(v) for k, v in volumes.items()}
        samples, inside = ori.to_ras(samples), ori.to_ras(inside)
        ref = ras.get("truth", ras.get("cubic", ras[methods_list[0]] if methods_list else ras["lr"]))
        fg = _foreground(ref) & inside
        box = None
        if crop and fg.any():
            box = _bounding_box(fg)
            ras = {k: v[box] for k, v in ras.items()}
            samples, inside, fg = samples[box], inside[box], fg[box]
        return cls(
            geometry=geom, orientation=ori, zooms=ori.ras_zooms(), slice_ras=ori.ras_axis(axis),
            lr=Panel("lr", LR_LABEL, ras["lr"], LR_COLOR),
            methods=[Panel(m, method_label(m), ras[m], method_color(m, methods_list)) for m in outputs],
            truth=Panel("truth", TRUTH_LABEL, ras["truth"], TRUTH_COLOR) if truth_path else None,
            lr_samples=samples, fg=fg, inside=inside,
            extra={k: Panel(k, label, ras[f"extra:{k}"], "gray") for k, (label, _, _) in (extra or {}).items()},
            grid_shape=tuple(shape), grid_affine=aff, box=box)

    def on_grid(self, path, what: str = "volume") -> np.ndarray:
        """A volume computed on the output grid (e.g. an uncertainty map), RAS-ordered and
        cropped like the panels. Any other grid is refused, not resampled: the volume then
        belongs to another output (another subject, factor or run)."""
        data, affine = _load(path)
        if data.shape != self.grid_shape or not np.allclose(affine, self.grid_affine, atol=1e-4):
            raise ThinsliceError(f"{path}: the {what} is not on the output grid (shape {data.shape}, expected "
                                 f"{self.grid_shape}, or another affine); give the one written with that output")
        ras = self.orientation.to_ras(data)
        return ras[self.box] if self.box is not None else ras

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.lr.ras.shape

    def _reference_panel(self) -> Panel:
        if self.truth is not None:
            return self.truth
        by_key = {p.key: p for p in self.methods}
        return by_key.get("cubic") or (self.methods[0] if self.methods else self.lr)

    @property
    def reference(self) -> np.ndarray:
        """The best picture of the anatomy: the truth, else cubic, else the first method."""
        return self._reference_panel().ras

    @property
    def reference_label(self) -> str:
        return self._reference_panel().label

    def planes(self) -> list[int]:
        """The two anatomical planes that contain the slice axis (the through-plane views)."""
        return [k for k in range(3) if k != self.slice_ras]

    def centre(self, plane: int) -> int:
        """The cut through the object's centre of mass along `plane`'s normal."""
        fg = self.fg if self.fg.any() else np.ones(self.shape, bool)
        profile = fg.sum(axis=tuple(k for k in range(3) if k != plane)).astype(float)
        return int(round(float(np.average(np.arange(profile.size), weights=profile))))

    def extent(self, plane: int) -> list[float]:
        rows, cols = plane_axes(plane)
        return [0.0, self.shape[cols] * self.zooms[cols], self.shape[rows] * self.zooms[rows], 0.0]

    def size_mm(self, plane: int) -> tuple[float, float]:
        """(height, width) of a displayed plane in mm."""
        rows, cols = plane_axes(plane)
        return self.shape[rows] * self.zooms[rows], self.shape[cols] * self.zooms[cols]

    def slice_is_horizontal(self, plane: int) -> bool:
        return plane_axes(plane)[1] == self.slice_ras

    def describe(self) -> str:
        g = self.geometry
        name = {0: "sagittal", 1: "coronal", 2: "axial"}[self.slice_ras]
        return (f"{name} slices ({self.orientation.codes}), {g.spacing_mm:.3g} mm spacing, "
                f"{g.thickness_mm:.3g} mm thick, x{g.ratio:.3g} -> {g.target_spacing_mm:.3g} mm")


def _bounding_box(mask: np.ndarray, margin: float = 0.05) -> tuple[slice, slice, slice]:
    box = []
    for k in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != k)))
        pad = max(2, int(round(margin * (hit[-1] - hit[0] + 1))))
        box.append(slice(max(0, hit[0] - pad), min(mask.shape[k], hit[-1] + pad + 1)))
    return tuple(box)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# drawing helpers


def _window(sections: list[np.ndarray], fg: np.ndarray | None = None) -> tuple[float, float]:
    """One grey window for a row: 0.5 and 99.5 percentiles of all its images (foreground
    pixels when given)."""
    values = np.concatenate([(s[fg] if fg is not None and fg.any() else s).ravel() for s in sections])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    if fg is not None and fg.any():
        lo = min(lo, float(np.percentile(np.concatenate([s.ravel() for s in sections]), 1)))
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _outline(width: float = 2.0):
    return [patheffects.withStroke(linewidth=width, foreground="black")]


def _nice_length(span_mm: float) -> float:
    """A round scale-bar length of about a quarter of `span_mm`."""
    for n in (100, 50, 20, 10, 5, 2, 1, 0.5):
        if n <= span_mm / 3.5:
            return float(n)
    return 0.5


def _scale_bar(ax, width_mm: float, height_mm: float, x0: float = 0.0, y0: float = 0.0) -> None:
    length = _nice_length(width_mm)
    x, y = x0 + 0.06 * width_mm, y0 + height_mm * 0.94
    ax.plot([x, x + length], [y, y], color="white", lw=2.5, solid_capstyle="butt",
            path_effects=_outline(4.0))
    ax.text(x + length / 2, y - 0.02 * height_mm, f"{length:g} mm", color="white", ha="center", va="bottom",
            fontsize=SMALL, path_effects=_outline())


def _letters(ax, plane: int, extent) -> None:
    top, bottom, left, right = EDGE_LETTERS[plane]
    x1, y1 = extent[1], extent[2]
    style = dict(color="white", fontsize=SMALL, fontweight="bold", path_effects=_outline())
    ax.text(x1 / 2, 0.01 * y1, top, ha="center", va="top", **style)
    ax.text(x1 / 2, 0.99 * y1, bottom, ha="center", va="bottom", **style)
    ax.text(0.01 * x1, y1 / 2, left, ha="left", va="center", **style)
    ax.text(0.99 * x1, y1 / 2, right, ha="right", va="center", **style)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _show(ax, image, extent, lo, hi, cmap="gray", interpolation="antialiased"):
    ax.set_facecolor("black")
    im = ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, extent=extent, interpolation=interpolation,
                   aspect="equal")
    _bare(ax)
    return im


def _save(fig, out_png) -> None:
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)


def zoom_box(scene: Scene, plane: int, fraction: float = 0.32) -> tuple[float, float, float, float]:
    """(x0, y0, width, height) in mm of a square zoom on the plane through its centre: the window
    with the most through-plane structure (gradient along the slice axis in the reference)."""
    ref = plane_section(scene.reference, plane, scene.centre(plane))
    fg = plane_section(scene.fg, plane, scene.centre(plane))
    rows, cols = plane_axes(plane)
    zr, zc = scene.zooms[rows], scene.zooms[cols]
    h_mm, w_mm = scene.size_mm(plane)
    side = fraction * min(h_mm, w_mm)
    wr, wc = max(4, int(round(side / zr))), max(4, int(round(side / zc)))
    wr, wc = min(wr, ref.shape[0]), min(wc, ref.shape[1])
    grad_axis = 1 if scene.slice_is_horizontal(plane) else 0
    energy = np.abs(np.diff(ref, axis=grad_axis, append=np.take(ref, [-1], axis=grad_axis)))
    energy = np.nan_to_num(energy) * fg
    score = ndimage.uniform_filter(energy, size=(wr, wc), mode="constant")
    filled = ndimage.uniform_filter(fg.astype(float), size=(wr, wc), mode="constant")
    # only windows inside the image, and inside the object (its rim, e.g. a skull, is not the point)
    valid = np.zeros_like(score, dtype=bool)
    valid[wr // 2: ref.shape[0] - (wr - 1 - wr // 2), wc // 2: ref.shape[1] - (wc - 1 - wc // 2)] = True
    for need in (0.9, 0.75, 0.5, 0.0):
        if (valid & (filled >= need)).any():
            valid &= filled >= need
            break
    score = np.where(valid, score, -1.0)
    r, c = np.unravel_index(int(np.argmax(score)), score.shape)
    r0, c0 = r - wr // 2, c - wc // 2
    return c0 * zc, r0 * zr, wc * zc, wr * zr


# ---------------------------------------------------------------------------------------------
# figures


def reformats_figure(scene: Scene, out_png, title: str = "") -> None:
    """Through-plane reformats: one column per image (LR, each method, truth), for each of
    the two planes that contain the slice axis a full view with a marked square and, below it,
    that square enlarged."""
    panels = [scene.lr] + scene.methods + ([scene.truth] if scene.truth is not None else [])
    planes = scene.planes()
    heights = []
    for plane in planes:
        h, w = scene.size_mm(plane)
        heights += [PANEL_IN * h / w, PANEL_IN]
    fig = plt.figure(figsize=(PANEL_IN * len(panels) + 0.5, sum(heights) + 0.7), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    grid = fig.add_gridspec(len(heights), len(panels), height_ratios=heights)
    for p_i, plane in enumerate(planes):
        cut = scene.centre(plane)
        sections = [plane_section(panel.ras, plane, cut) for panel in panels]
        fg = plane_section(scene.fg, plane, cut)
        lo, hi = _window(sections, fg)
        extent = scene.extent(plane)
        x0, y0, zw, zh = zoom_box(scene, plane)
        for col, (panel, sec) in enumerate(zip(panels, sections)):
            ax = fig.add_subplot(grid[2 * p_i, col])
            _show(ax, sec, extent, lo, hi)
            ax.add_patch(Rectangle((x0, y0), zw, zh, fill=False, ec=ZOOM_COLOR, lw=1.2))
            if p_i == 0:
                ax.set_title(panel.label, fontsize=FONT, color=panel.color if panel.key != "lr" else "black")
            if col == 0:
                ax.set_ylabel(PLANE_NAMES[plane], fontsize=FONT)
                _letters(ax, plane, extent)
                _scale_bar(ax, extent[1], extent[2])
            zax = fig.add_subplot(grid[2 * p_i + 1, col])
            _show(zax, sec, extent, lo, hi, interpolation="nearest")
            zax.set_xlim(x0, x0 + zw)
            zax.set_ylim(y0 + zh, y0)
            for s in zax.spines.values():
                s.set_visible(True)
                s.set_color(ZOOM_COLOR)
                s.set_linewidth(1.5)
            if col == 0:
                zax.set_ylabel(f"{PLANE_NAMES[plane]}, zoom", fontsize=FONT)
                _scale_bar(zax, zw, zh, x0, y0)
    fig.suptitle(_title(title, f"through-plane reformats; {scene.describe()}"), fontsize=FONT + 1)
    _save(fig, out_png)


def errors_figure(scene: Scene, out_png, title: str = "") -> None:
    """|method - truth| on the through-plane planes; the truth in the first column, one colour
    scale for all maps; each panel gives the mean |error| over the foreground of the volume."""
    if scene.truth is None:
        raise ThinsliceError("errors figure: needs a ground truth (--truth)")
    panels = [scene.lr] + scene.methods
    planes = scene.planes()
    truth = scene.truth.ras
    errors = {p.key: np.where(scene.inside, np.abs(p.ras - truth), np.nan) for p in panels}
    fg = scene.fg & scene.inside
    vmax = float(np.nanpercentile(np.concatenate([errors[p.key][fg] for p in scene.methods] or [errors["lr"][fg]]),
                                  99.5)) if fg.any() else 1.0
    vmax = vmax if vmax > 0 else 1.0
    heights = [PANEL_IN * scene.size_mm(k)[0] / scene.size_mm(k)[1] for k in planes]
    ncols = len(panels) + 1
    fig = plt.figure(figsize=(PANEL_IN * ncols + 1.0, sum(heights) + 0.8), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    grid = fig.add_gridspec(len(planes), ncols, height_ratios=heights)
    cmap = plt.get_cmap("magma").with_extremes(bad="#2a2a2a")
    image = None
    axes = []
    for row, plane in enumerate(planes):
        cut = scene.centre(plane)
        extent = scene.extent(plane)
        t = plane_section(truth, plane, cut)
        lo, hi = _window([t], plane_section(fg, plane, cut))
        ax = fig.add_subplot(grid[row, 0])
        _show(ax, t, extent, lo, hi)
        ax.set_ylabel(PLANE_NAMES[plane], fontsize=FONT)
        _letters(ax, plane, extent)
        _scale_bar(ax, extent[1], extent[2])
        if row == 0:
            ax.set_title(TRUTH_LABEL, fontsize=FONT)
        for col, panel in enumerate(panels, start=1):
            ax = fig.add_subplot(grid[row, col])
            image = _show(ax, plane_section(errors[panel.key], plane, cut), extent, 0.0, vmax, cmap=cmap)
            axes.append(ax)
            if row == 0:
                mae = float(np.nanmean(errors[panel.key][fg])) if fg.any() else math.nan
                ax.set_title(f"{panel.label}\nMAE {mae:.3g}", fontsize=FONT,
                             color=panel.color if panel.key != "lr" else "black")
    bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01, extend="max")
    bar.set_label("|output - truth| (intensity)", fontsize=FONT)
    bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(_title(title, "absolute error against the ground truth (MAE: mean over the foreground, whole volume)"),
                 fontsize=FONT + 1)
    _save(fig, out_png)


def uncertainty_figure(scene: Scene, out_png, uncertainty: dict[str, str], title: str = "") -> None:
    """Where an output is not to be trusted: one row per method with a map (`uncertainty`:
    method -> NIfTI on the output grid, the per-voxel SD of predictions that should agree), and
    for each through-plane plane the output, its map and, with a truth, |output - truth|. A row's
    map and error share one colour scale, 0 to the map's 99th percentile in the object, so the
    map can be held against the real error; each row label gives both means over the object."""
    unknown = [m for m in uncertainty if m not in {p.key for p in scene.methods}]
    if unknown or not uncertainty:
        raise ThinsliceError("uncertainty figure: " + (f"no output of {', '.join(unknown)} for its map"
                                                       if unknown else "no uncertainty map given"))
    rows = [p for p in scene.methods if p.key in uncertainty]
    maps = {p.key: scene.on_grid(uncertainty[p.key], f"uncertainty map of {p.key}") for p in rows}
    truth, fg = scene.truth, scene.fg
    kinds = ["output", "uncertainty (SD)"] + (["|output - truth|"] if truth is not None else [])
    planes = scene.planes()
    cuts = {k: scene.centre(k) for k in planes}
    # equal row heights: each column as wide as its plane's aspect asks
    widths = [scene.size_mm(k)[1] / scene.size_mm(k)[0] for k in planes for _ in kinds]
    fig = plt.figure(figsize=(PANEL_IN * sum(widths) + 1.3, PANEL_IN * len(rows) + 0.9), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    grid = fig.add_gridspec(len(rows), len(widths), width_ratios=widths)
    cmap = plt.get_cmap("magma").with_extremes(bad="#2a2a2a")
    for r, panel in enumerate(rows):
        sd = maps[panel.key]
        ok = fg & np.isfinite(sd)
        ok = ok if ok.any() else np.isfinite(sd)
        vmax = float(np.percentile(sd[ok], 99)) if ok.any() else 0.0
        vmax = vmax if vmax > 0 else 1.0
        images = {"output": panel.ras, "uncertainty (SD)": sd}
        label = f"{panel.label}\nmean SD {float(np.mean(sd[ok])) if ok.any() else math.nan:.3g}"
        if truth is not None:
            images["|output - truth|"] = np.where(scene.inside, np.abs(panel.ras - truth.ras), np.nan)
            label += f", MAE {float(np.nanmean(images['|output - truth|'][fg])) if fg.any() else math.nan:.3g}"
        # one grey window for the row's outputs: the two planes' sections flattened together
        sections = [plane_section(panel.ras, k, cuts[k]).ravel() for k in planes]
        lo, hi = _window([np.concatenate(sections)],
                         np.concatenate([plane_section(fg, k, cuts[k]).ravel() for k in planes]))
        axes, image = [], None
        for p_i, plane in enumerate(planes):
            extent = scene.extent(plane)
            for c, kind in enumerate(kinds):
                ax = fig.add_subplot(grid[r, p_i * len(kinds) + c])
                sec = plane_section(images[kind], plane, cuts[plane])
                if kind == "output":
                    _show(ax, sec, extent, lo, hi)
                    if r == 0:
                        _letters(ax, plane, extent)
                        _scale_bar(ax, extent[1], extent[2])
                else:
                    image = _show(ax, sec, extent, 0.0, vmax, cmap=cmap)
                    axes.append(ax)
                if r == 0:
                    ax.set_title(f"{kind}\n{PLANE_NAMES[plane]}", fontsize=FONT)
                if p_i == 0 and c == 0:
                    ax.set_ylabel(label, fontsize=FONT, color=panel.color)
        bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.01, extend="max")
        bar.set_label("SD, |error| (input intensity)" if truth is not None else "SD (input intensity)",
                      fontsize=SMALL)
        bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(_title(title, "uncertainty: spread of predictions that should agree (both 2D orientations, "
                               f"volume and flip); {scene.describe()}"), fontsize=FONT + 1)
    _save(fig, out_png)


def profile_line(scene: Scene, min_foreground: float = 0.7) -> tuple[int, int, int]:
    """A RAS voxel on the line along the slice axis through the most structure: the largest
    variance of the reference over the line's foreground voxels (smoothed over 3x3 neighbouring
    lines), among lines mostly inside the object and off its rim. The slice-axis coordinate of
    the returned index is 0."""
    s = scene.slice_ras
    ref = np.nan_to_num(scene.reference).astype(np.float64)
    fg = scene.fg
    count = fg.sum(axis=s)
    mean = np.where(fg, ref, 0).sum(axis=s) / np.maximum(count, 1)
    var = np.where(fg, ref**2, 0).sum(axis=s) / np.maximum(count, 1) - mean**2
    var = ndimage.uniform_filter(var, size=3, mode="nearest")
    frac = count / fg.shape[s]
    inside = frac >= min(min_foreground, float(frac.max()))
    core = ndimage.binary_erosion(inside, iterations=2)
    inside = core if core.any() else inside
    a, b = np.unravel_index(int(np.argmax(np.where(inside, var, -np.inf))), var.shape)
    others = [k for k in range(3) if k != s]
    index = [0, 0, 0]
    index[others[0]], index[others[1]] = int(a), int(b)
    return tuple(index)  # type: ignore[return-value]


def profile_figure(scene: Scene, out_png, title: str = "") -> None:
    """Left: a through-plane reformat with the chosen line. Right: intensities along it for the
    real LR samples (markers at the real slice positions), each method and the truth, drawn in
    the reformat's direction (a vertical line gives a vertical profile)."""
    s = scene.slice_ras
    point = profile_line(scene)
    plane = scene.planes()[0]
    line = [slice(None) if k == s else point[k] for k in range(3)]
    line = tuple(line)
    n, z = scene.shape[s], scene.zooms[s]
    disp = (n - 1 - np.arange(n) + 0.5) * z  # mm from the panel's left (or top) edge
    horizontal = scene.slice_is_horizontal(plane)
    on = np.flatnonzero(scene.fg[line])
    pad = scene.geometry.spacing_mm * 1.5
    span = (disp[on[-1]] - pad, disp[on[0]] + pad) if on.size else (disp[-1], disp[0])

    h, w = scene.size_mm(plane)
    thumb_w = max(2.2, 3.0 * w / h) if h >= w else 3.0
    fig = plt.figure(figsize=(thumb_w + (5.4 if horizontal else 3.6), 3.9), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[thumb_w, 5.4 if horizontal else 3.6])
    ax = fig.add_subplot(grid[0, 0])
    sec = plane_section(scene.reference, plane, point[plane])
    lo, hi = _window([sec], plane_section(scene.fg, plane, point[plane]))
    extent = scene.extent(plane)
    _show(ax, sec, extent, lo, hi)
    _letters(ax, plane, extent)
    _scale_bar(ax, extent[1], extent[2])
    end = list(point)
    end[s] = n - 1
    (x0, y0), (x1, y1) = (display_position(p, plane, scene.shape, scene.zooms) for p in (point, end))
    ax.plot([x0, x1], [y0, y1], color=PROFILE_COLOR, lw=1.4)
    ax.set_title(f"{PLANE_NAMES[plane]}, {scene.reference_label}", fontsize=FONT)

    pax = fig.add_subplot(grid[0, 1])

    def draw(values, **kw):
        return pax.plot(disp, values, **kw) if horizontal else pax.plot(values, disp, **kw)

    if scene.truth is not None:
        draw(scene.truth.ras[line], color=TRUTH_COLOR, lw=2.0, label=TRUTH_LABEL, zorder=3)
    for panel in scene.methods:
        draw(panel.ras[line], color=panel.color, lw=1.3, label=panel.label, zorder=4)
    samples = scene.lr_samples[line]
    real = np.isfinite(samples)
    draw(np.where(real, samples, np.nan), ls="none", marker="s", ms=5, mfc="white", mec=LR_COLOR, mew=1.3,
         label="LR samples (real slices)", zorder=5)
    top, bottom, left, right = EDGE_LETTERS[plane]
    guide = pax.axvline if horizontal else pax.axhline
    for d in disp[real]:
        guide(d, color="#dddddd", lw=0.6, zorder=0)
    if horizontal:
        pax.set_xlim(*span)
        pax.set_xlabel(f"position (mm), {left} \u2190 \u2192 {right}", fontsize=FONT)
        pax.set_ylabel("intensity", fontsize=FONT)
    else:
        pax.set_ylim(span[1], span[0])  # top of the panel = top of the reformat
        pax.set_ylabel(f"position (mm), {top} (up) \u2194 {bottom} (down)", fontsize=FONT)
        pax.set_xlabel("intensity", fontsize=FONT)
    pax.tick_params(labelsize=SMALL)
    fig.legend(*pax.get_legend_handles_labels(), loc="outside lower center", ncols=min(4, len(scene.methods) + 2),
               fontsize=SMALL, frameon=False)
    for side in ("top", "right"):
        pax.spines[side].set_visible(False)
    pax.set_title("intensity along the blue line (object only)", fontsize=FONT)
    fig.suptitle(_title(title, scene.describe()), fontsize=FONT + 1)
    _save(fig, out_png)


def pipeline_figure(scene: Scene, out_png, title: str = "") -> None:
    """The method on one subject: real LR -> VAE-synthesized HR -> that volume degraded with
    the acquisition's slice model, and the SR network's output on the real LR scan."""
    by_key = {p.key: p for p in scene.methods}
    steps = [("1. real LR scan", scene.lr)]
    if "vae" in by_key or "vae" in scene.extra:
        steps.append(("2. VAE-synthesized HR", by_key.get("vae") or scene.extra["vae"]))
    if "degraded" in scene.extra:
        steps.append(("3. synthetic HR degraded", scene.extra["degraded"]))
    sr = by_key.get("sr_vae") or by_key.get("sr_both")
    if sr is not None:
        steps.append((f"4. {sr.label} on the real LR", sr))
    if len(steps) < 2:
        raise ThinsliceError("pipeline figure: needs the VAE output, the degraded volume or an sr_vae/sr_both output")
    plane = scene.planes()[0]
    cut = scene.centre(plane)
    sections = [plane_section(p.ras, plane, cut) for _, p in steps]
    lo, hi = _window(sections, plane_section(scene.fg, plane, cut))
    extent = scene.extent(plane)
    h, w = scene.size_mm(plane)
    n = len(steps)
    fig = plt.figure(figsize=(2.3 * n + 0.3, 2.3 * h / w + 1.4), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.05, wspace=0.12)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    for ax, (name, panel), sec in zip(axes, steps, sections):
        _show(ax, sec, extent, lo, hi, interpolation="nearest")
        ax.set_title(name, fontsize=FONT)
    _letters(axes[0], plane, extent)
    _scale_bar(axes[0], extent[1], extent[2])
    notes = {("1", "2"): "VAE: decode a spline\nthrough the real\nslices' latents",
             ("2", "3"): f"slice model: {scene.geometry.thickness_mm:.3g} mm profile,\n"
                         f"every {_ordinal(scene.geometry.factor)} slice kept",
             ("3", "4"): "SR net trained on\n(3 \u2192 2) pairs,\napplied to 1"}
    fig.suptitle(_title(title, f"the method on one subject ({PLANE_NAMES[plane]}); {scene.describe()}"),
                 fontsize=FONT + 1)
    fig.get_layout_engine().set(rect=(0, 0.16, 1, 0.84))
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the positions the notes are placed by
    bottom = min(a.get_position().y0 for a in axes)
    for (a_name, _), (b_name, _), a, b in zip(steps, steps[1:], axes, axes[1:]):
        learned = b_name.startswith("4")
        fig.add_artist(matplotlib.patches.ConnectionPatch(
            xyA=(1.0, 0.5), coordsA=a.transAxes, xyB=(0.0, 0.5), coordsB=b.transAxes,
            arrowstyle="-|>", mutation_scale=14, lw=1.5, color="#444444", ls="--" if learned else "-"))
        note = notes.get((a_name[0], b_name[0]), "")
        if note:
            mid = (a.get_position().x1 + b.get_position().x0) / 2
            fig.text(mid, bottom - 0.03, note, ha="center", va="top", fontsize=SMALL, color="#333333")
    _save(fig, out_png)


def read_metrics(path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in list(r.items()):
            if k not in ("subject", "method"):
                try:
                    r[k] = float(v) if v not in ("", None) else math.nan
                except ValueError:
                    r[k] = math.nan
    return rows


def metrics_figure(metrics_csv, out_png, methods: list[str] | None = None, title: str = "") -> None:
    """Per-method scores, one point per subject (grey lines join a subject's points) and the
    mean as a bar with its value: PSNR and SSIM where a truth exists, else through-plane
    sharpness; always the periodic-artifact score."""
    rows = read_metrics(metrics_csv)
    if not rows:
        raise ThinsliceError(f"{metrics_csv}: no rows")
    present = list(dict.fromkeys(r["method"] for r in rows))
    order = [m for m in (methods or []) if m in present] + [m for m in present if m not in (methods or [])]
    has_truth = any(math.isfinite(r.get("psnr", math.nan)) for r in rows)
    keys = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")] if has_truth else \
        [("sharpness", "through-plane sharpness\n(mean |slice difference|, normalised)")]
    if any(math.isfinite(r.get("periodic_artifact", math.nan)) for r in rows):
        keys.append(("periodic_artifact", "periodic artifact\n(max/min texture over slice phases; 1 = none)"))
    subjects = list(dict.fromkeys(r["subject"] for r in rows))
    table = {(r["subject"], r["method"]): r for r in rows}
    fig, axes = plt.subplots(1, len(keys), figsize=(max(3.0, 0.7 * len(order) + 1.2) * len(keys), 3.4),
                             layout="constrained", squeeze=False)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.12, 0.12, len(subjects)) if len(subjects) > 1 else np.zeros(1)
    for ax, (key, label) in zip(axes[0], keys):
        values = np.array([[table.get((s, m), {}).get(key, math.nan) for m in order] for s in subjects], float)
        x = np.arange(len(order))
        for si in range(len(subjects)):
            if len(subjects) > 1:
                ax.plot(x + jitter[si], values[si], color="#bbbbbb", lw=0.7, zorder=1)
            ax.scatter(x + jitter[si], values[si], s=16, color=[method_color(m, order) for m in order],
                       edgecolor="black", linewidth=0.4, zorder=3)
        means = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0) if values.size else []
        for xi, (m, mean) in enumerate(zip(order, means)):
            if not math.isfinite(mean):
                continue
            ax.hlines(mean, xi - 0.32, xi + 0.32, color=method_color(m, order), lw=2.5, zorder=2)
            ax.annotate(f"{mean:.2f}" if key == "psnr" else f"{mean:.4f}" if key.startswith("ssim") else f"{mean:.3g}",
                        (xi, mean), xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                        fontsize=SMALL, zorder=4,
                        bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
        finite = values[np.isfinite(values)]
        if finite.size:
            span = float(finite.max() - finite.min()) or abs(float(finite.max())) * 0.05 or 1.0
            ax.set_ylim(finite.min() - 0.15 * span, finite.max() + 0.25 * span)
        ax.set_xticks(x, [method_label(m) for m in order], rotation=30 if len(order) > 3 else 0,
                      ha="right" if len(order) > 3 else "center", fontsize=SMALL)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_ylabel(label, fontsize=FONT)
        ax.tick_params(axis="y", labelsize=SMALL)
        ax.grid(axis="y", color="#eeeeee", lw=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    what = "against the ground truth" if has_truth else "no ground truth: a no-reference check"
    fig.suptitle(_title(title, f"{what}; {len(subjects)} subject{'s' if len(subjects) != 1 else ''}, "
                               f"bar = mean"), fontsize=FONT + 1)
    _save(fig, out_png)


TRAINING_TITLES = {"vae": "VAE (stage 1)", "sr_vae": "SR on VAE pairs (stage 2)",
                   "sr_self": "SR on self pairs", "sr_both": "SR on VAE + self pairs",
                   "sr_supervised": "SR supervised (upper bound)"}
NOT_LOSSES = {"step", "lr", "kl_weight", "learning_rate", "epoch", "time", "seconds"}


def read_losses(path) -> dict[str, np.ndarray]:
    """A LossLog CSV as column -> values, sorted by step; a resumed run's repeated steps keep
    their last row."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "step" not in rows[0]:
        raise ThinsliceError(f"{path}: not a loss log (needs a 'step' column and rows)")
    by_step = {}
    for r in rows:
        try:
            by_step[float(r["step"])] = r
        except (TypeError, ValueError):
            continue
    steps = sorted(by_step)
    out = {"step": np.array(steps)}
    for col in rows[0]:
        if col == "step":
            continue
        vals = []
        for s in steps:
            try:
                vals.append(float(by_step[s][col]))
            except (TypeError, ValueError):
                vals.append(math.nan)
        out[col] = np.array(vals)
    return out


def training_figure(losses: dict[str, str], out_png, title: str = "") -> None:
    """One panel per model: every loss column of its log (positive ones; log y) against the
    training step. `losses`: model name (vae, sr_vae, ...) -> loss CSV."""
    if not losses:
        raise ThinsliceError("training figure: no loss CSV given")
    n = len(losses)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.4, 3.2), layout="constrained", squeeze=False)
    for ax, (name, path) in zip(axes[0], losses.items()):
        log = read_losses(path)
        drawn = 0
        colors = iter(plt.get_cmap("tab10").colors)
        for col, vals in log.items():
            if col.lower() in NOT_LOSSES:
                continue
            ok = np.isfinite(vals)
            color = next(colors)
            if not ok.any() or (vals[ok] <= 0).any():
                continue  # log y: signed or zero columns (e.g. an unused term) are left out
            if col != "loss" and "loss" in log and np.allclose(vals, log["loss"], equal_nan=True):
                continue  # the total when it is the only term
            main = col == "loss"
            ax.plot(log["step"][ok], vals[ok], lw=1.8 if main else 1.0, color="black" if main else color,
                    label=col, zorder=3 if main else 2)
            drawn += 1
        ax.set_yscale("log")
        ax.set_title(TRAINING_TITLES.get(name, name), fontsize=FONT)
        ax.set_xlabel("training step", fontsize=FONT)
        ax.set_ylabel("loss (log scale)", fontsize=FONT)
        ax.tick_params(which="both", labelsize=SMALL)
        ax.grid(True, which="major", color="#eeeeee", lw=0.8)
        if drawn:
            ax.legend(fontsize=SMALL, frameon=False)
        else:
            ax.text(0.5, 0.5, "no positive loss values", transform=ax.transAxes, ha="center", fontsize=FONT)
    fig.suptitle(_title(title, "training curves"), fontsize=FONT + 1)
    _save(fig, out_png)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _title(title: str, what: str) -> str:
    return f"{title}\n{what}" if title else what


def qc_summary(entries: list[dict]) -> str:
    """The QC entries of one subject (evaluate --qc) as title lines: the slice profile, each
    method's consistency with the acquisition, and the warnings."""
    if not entries:
        return ""
    first = entries[0]
    est = first.get("fwhm_estimate_mm")
    lines = [f"slice profile: header {first['fwhm_header_mm']:.3g} mm, estimated from the scan "
             + (f"{est:.3g} mm" if est is not None else "- (too few slices)"),
             "consistency (dB): " + ", ".join(f"{e['method']} {e['consistency_psnr']:.1f}" for e in entries)]
    warnings = sorted({w for e in entries for w in e.get("warnings", [])})
    return "\n".join(lines + [f"warning: {w}" for w in warnings])
