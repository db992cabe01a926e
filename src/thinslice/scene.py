"""What the volume figures show: one subject's volumes on the output grid, in anatomical order.

Every volume is shown in anatomical orientation whatever its voxel order: the voxel axes are
mapped onto the nearest RAS axes (as `nibabel.as_closest_canonical` does) and each plane is
drawn the way radiology viewers draw it:

- sagittal: superior up, anterior left;
- coronal:  superior up, the patient's right on the viewer's left (radiological);
- axial:    anterior up, the patient's right on the viewer's left (radiological).

A method's outputs all lie on the output grid of the convention in `geometry`; a ground truth
on any grid is resampled onto it in world coordinates. Nothing here draws: the figures (and
tests) read the sections, windows, zoom squares and profile lines chosen here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from .errors import ThinsliceError
from .geometry import Geometry, output_affine, output_positions, output_shape
from .interpolate import nearest_upsample
from .io import read_nifti
from .methods import color as method_color, label as method_label
from .normalize import foreground_mask
from .resample import on_grid
from .volume import Volume

LR_LABEL, TRUTH_LABEL = "LR (nearest)", "ground truth"
LR_COLOR, TRUTH_COLOR = "#555555", "black"

# Planes are named by the RAS axis normal to them; rows of a drawn plane run along the larger
# remaining RAS axis (its + end on top), columns along the smaller (its + end on the left).
PLANE_NAMES = ("sagittal", "coronal", "axial")
EDGE_LETTERS = {0: ("S", "I", "A", "P"), 1: ("S", "I", "R", "L"), 2: ("A", "P", "R", "L")}  # top, bottom, left, right
RAS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (- end, + end) of each RAS axis


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
    """(x, y) in mm on a drawn panel (extent `Scene.extent`) of a RAS voxel index."""
    rows, cols = plane_axes(plane)
    return ((shape[cols] - 1 - ras_index[cols] + 0.5) * zooms[cols],
            (shape[rows] - 1 - ras_index[rows] + 0.5) * zooms[rows])


# ---------------------------------------------------------------------------------------------
# a subject's volumes on the output grid, in RAS order


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
    fg:         the object (`normalize.foreground_mask` of the reference) inside the truth;
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
        truth_path: a ground truth on any grid; 0 where it does not cover the output grid.
        extra: key -> (label, path, on_lr_grid): other volumes (e.g. the degraded synthetic LR,
        drawn nearest-upsampled when on_lr_grid)."""
        geom = Geometry.load(geometry_path)
        axis, r = geom.slice_axis, geom.ratio
        lr = read_nifti(lr_path)
        shape = output_shape(lr.shape, axis, r)
        aff = output_affine(lr.affine, axis, r)
        ori = Orientation.from_affine(aff)

        def grid(path, on_lr_grid=False) -> np.ndarray:
            vol = read_nifti(path)
            if on_lr_grid:
                vol = Volume(nearest_upsample(vol.data, axis, r), output_affine(vol.affine, axis, r))
            return on_grid(vol, shape, aff)[0].data

        samples = np.full(shape, np.nan, np.float32)
        positions = output_positions(lr.shape[axis], r)
        on_real = np.flatnonzero(np.abs(positions - np.rint(positions)) < 1e-6)   # every slice for an integer r
        np.moveaxis(samples, axis, 0)[on_real] = np.moveaxis(lr.data, axis, 0)[np.rint(positions[on_real]).astype(int)]
        volumes = {"lr": nearest_upsample(lr.data, axis, r)}
        volumes.update({m: grid(p) for m, p in outputs.items()})
        inside = np.ones(shape, bool)
        if truth_path:
            truth, inside = on_grid(read_nifti(truth_path), shape, aff)
            volumes["truth"] = truth.data
        for key, (_, path, on_lr) in (extra or {}).items():
            volumes[f"extra:{key}"] = grid(path, on_lr)
        ras = {k: ori.to_ras(v) for k, v in volumes.items()}
        samples, inside = ori.to_ras(samples), ori.to_ras(inside)
        ref = ras.get("truth", ras.get("cubic", ras[next(iter(outputs))] if outputs else ras["lr"]))
        fg = foreground_mask(np.nan_to_num(ref)) & inside
        box = None
        if crop and fg.any():
            box = bounding_box(fg)
            ras = {k: v[box] for k, v in ras.items()}
            samples, inside, fg = samples[box], inside[box], fg[box]
        names = list(outputs)
        return cls(
            geometry=geom, orientation=ori, zooms=ori.ras_zooms(), slice_ras=ori.ras_axis(axis),
            lr=Panel("lr", LR_LABEL, ras["lr"], LR_COLOR),
            methods=[Panel(m, method_label(m), ras[m], method_color(m, names)) for m in names],
            truth=Panel("truth", TRUTH_LABEL, ras["truth"], TRUTH_COLOR) if truth_path else None,
            lr_samples=samples, fg=fg, inside=inside,
            extra={k: Panel(k, label, ras[f"extra:{k}"], "gray") for k, (label, _, _) in (extra or {}).items()},
            grid_shape=tuple(shape), grid_affine=aff, box=box)

    def on_grid(self, path, what: str = "volume") -> np.ndarray:
        """A volume computed on the output grid (e.g. an uncertainty map), RAS-ordered and
        cropped like the panels. Any other grid is refused, not resampled: the volume then
        belongs to another output (another subject, factor or run)."""
        vol = read_nifti(path)
        if vol.shape != self.grid_shape or not np.allclose(vol.affine, self.grid_affine, atol=1e-4):
            raise ThinsliceError(f"{path}: the {what} is not on the output grid (shape {vol.shape}, expected "
                                 f"{self.grid_shape}, or another affine); give the one written with that output")
        ras = self.orientation.to_ras(vol.data)
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
        return (f"{PLANE_NAMES[self.slice_ras]} slices ({self.orientation.codes}), {g.spacing_mm:.3g} mm spacing, "
                f"{g.thickness_mm:.3g} mm thick, x{g.ratio:.3g} -> {g.target_spacing_mm:.3g} mm")


def bounding_box(mask: np.ndarray, margin: float = 0.05) -> tuple[slice, slice, slice]:
    """The box around `mask`, widened by `margin` of its size (at least 2 voxels) on each side."""
    box = []
    for k in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != k)))
        pad = max(2, int(round(margin * (hit[-1] - hit[0] + 1))))
        box.append(slice(max(0, hit[0] - pad), min(mask.shape[k], hit[-1] + pad + 1)))
    return tuple(box)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# what the figures pick: grey windows, zoom squares, profile lines


def window(sections: list[np.ndarray], fg: np.ndarray | None = None) -> tuple[float, float]:
    """One grey window for a row: 0.5 and 99.5 percentiles of all its images (foreground
    pixels when given; the low end then reaches down to the 1st percentile of all pixels, so
    that dark anatomy inside the object is not clipped to the background's black)."""
    values = np.concatenate([(s[fg] if fg is not None and fg.any() else s).ravel() for s in sections])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    if fg is not None and fg.any():
        lo = min(lo, float(np.percentile(np.concatenate([s.ravel() for s in sections]), 1)))
    return float(lo), float(hi if hi > lo else lo + 1.0)


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
