"""Slice geometry: which axis is the slice axis, the factor r, and the output grid.

Convention: LR slice i lands on output slice i*r. The output has (n-1)*r+1 slices along
the slice axis and the input's affine with the slice-axis column divided by r (same
origin), so it overlays the input in world coordinates whatever the orientation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import ThinsliceError

# Relative tolerance for "spacing / target is an integer" (DICOM positions carry ~1e-4 noise).
FACTOR_TOLERANCE = 1e-2


# Spacings within this share of the largest count as equal: no axis is the slice axis then.
AMBIGUOUS_REL = 0.01


def detect_slice_axis(spacing, source: str = "input") -> int:
    """The array axis with the largest spacing; an error when two or three axes share it
    (an isotropic volume has no slice axis to find: the user must name it)."""
    spacing = np.asarray(spacing, dtype=float)
    axis = int(np.argmax(spacing))
    tied = [a for a in range(3) if a != axis and spacing[a] >= (1 - AMBIGUOUS_REL) * spacing[axis]]
    if tied:
        raise ThinsliceError(
            f"{source}: voxel spacing {' x '.join(f'{v:.4g}' for v in spacing)} mm has no single largest "
            f"axis, so the slice axis is ambiguous; name it (sample sheet column slice_axis, or --slice-axis)")
    return axis


def resolve_factor(spacing_mm: float, factor: int | None = None,
                   target_spacing_mm: float | None = None, source: str = "input") -> int:
    """The integer upsampling factor r, from an explicit factor or a target spacing."""
    if factor is not None:
        if int(factor) != factor or factor < 2:
            raise ThinsliceError(f"{source}: factor must be an integer >= 2, got {factor}")
        return int(factor)
    if target_spacing_mm is None or target_spacing_mm <= 0:
        raise ThinsliceError(f"{source}: give a factor or a positive target spacing")
    ratio = spacing_mm / target_spacing_mm
    r = int(round(ratio))
    if r < 2 or abs(ratio - r) > FACTOR_TOLERANCE * ratio:
        raise ThinsliceError(
            f"{source}: slice spacing {spacing_mm:.4g} mm / target spacing {target_spacing_mm:g} mm "
            f"= {ratio:.4g} is not an integer >= 2; choose a target spacing that divides the "
            f"slice spacing (e.g. {spacing_mm / max(2, r):.4g} mm)")
    return r


def output_shape(shape, axis: int, r: int) -> tuple[int, int, int]:
    """Shape of the upsampled grid: (n-1)*r+1 slices along `axis`."""
    out = list(shape)
    out[axis] = (shape[axis] - 1) * r + 1
    return tuple(out)  # type: ignore[return-value]


def output_affine(affine: np.ndarray, axis: int, r: int) -> np.ndarray:
    """The input affine with the slice-axis column divided by r; same origin."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, axis] /= r
    return out


def lr_affine(hr_affine: np.ndarray, axis: int, r: int) -> np.ndarray:
    """Inverse of `output_affine`: the grid of every r-th HR slice, starting at slice 0."""
    out = np.array(hr_affine, dtype=np.float64, copy=True)
    out[:3, axis] *= r
    return out


@dataclass
class Geometry:
    """What a subject's acquisition looks like along its slice axis.

    spacing_mm:   distance between LR slice centres; thickness_mm: slice thickness;
    gap_mm:       spacing - thickness when positive, else 0; factor: r;
    in_plane_mm:  spacing of the two other axes (in array order);
    shape:        LR array shape; orientation: axis codes of the affine (e.g. 'LPS').
    norm_low/norm_high: intensity normalisation x -> (x - low) / (high - low).
    """

    slice_axis: int
    spacing_mm: float
    thickness_mm: float
    gap_mm: float
    factor: int
    in_plane_mm: tuple[float, float]
    shape: tuple[int, int, int]
    orientation: str
    norm_low: float
    norm_high: float

    @property
    def target_spacing_mm(self) -> float:
        return self.spacing_mm / self.factor

    def normalize(self, data: np.ndarray) -> np.ndarray:
        return ((data - self.norm_low) / (self.norm_high - self.norm_low)).astype(np.float32)

    def denormalize(self, data: np.ndarray) -> np.ndarray:
        return (data * (self.norm_high - self.norm_low) + self.norm_low).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from .io import atomic_path
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Geometry":
        d = json.loads(Path(path).read_text())
        d["in_plane_mm"] = tuple(d["in_plane_mm"])
        d["shape"] = tuple(d["shape"])
        return cls(**d)


def describe(affine, shape, slice_axis: int | None, thickness_mm: float | None, factor: int | None,
             target_spacing_mm: float | None, norm: tuple[float, float], source: str) -> Geometry:
    """Build the geometry record of an LR scan."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    axis = detect_slice_axis(spacing, source) if slice_axis is None else int(slice_axis)
    if axis not in (0, 1, 2):
        raise ThinsliceError(f"{source}: slice_axis must be 0, 1 or 2, got {slice_axis}")
    if shape[axis] < 2:
        raise ThinsliceError(f"{source}: needs at least 2 slices along the slice axis {axis}")
    s = float(spacing[axis])
    r = resolve_factor(s, factor, target_spacing_mm, source)
    t = s if thickness_mm is None else float(thickness_mm)
    if not t > 0:
        raise ThinsliceError(f"{source}: slice thickness must be positive, got {thickness_mm}")
    others = [float(spacing[a]) for a in range(3) if a != axis]
    return Geometry(slice_axis=axis, spacing_mm=s, thickness_mm=t, gap_mm=max(s - t, 0.0), factor=r,
                    in_plane_mm=(others[0], others[1]), shape=tuple(int(n) for n in shape),
                    orientation="".join(nib.aff2axcodes(affine)),
                    norm_low=float(norm[0]), norm_high=float(norm[1]))
