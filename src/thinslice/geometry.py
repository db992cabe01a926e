"""Slice geometry: which axis is the slice axis, the factor r, and the output grid.

Convention: the output grid is `ratio` = slice spacing / output spacing times finer than
the scan along the slice axis. Its first slice lies on the first real slice, and it keeps
the input's affine with the slice-axis column divided by the ratio (same origin), so it
overlays the input in world coordinates whatever the orientation; it has
floor((n-1)*ratio)+1 slices, up to the last real slice. For an integer ratio r, real
slice i is output slice i*r. The learned methods always work on the grid of an integer
factor (the ratio, or the next integer above it) and resample onto the output grid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import ThinsliceError
from .normalize import Intensity

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


def resolve_ratio(spacing_mm: float, factor: int | None = None,
                  target_spacing_mm: float | None = None, source: str = "input") -> float | int:
    """The upsampling ratio (slice spacing / output spacing), from an explicit integer factor
    or a target spacing: an int when the ratio is an integer (within header noise), else a float."""
    if factor is not None:
        if int(factor) != factor or factor < 2:
            raise ThinsliceError(f"{source}: factor must be an integer >= 2, got {factor}")
        return int(factor)
    if target_spacing_mm is None or target_spacing_mm <= 0:
        raise ThinsliceError(f"{source}: give a factor or a positive target spacing")
    ratio = spacing_mm / target_spacing_mm
    if abs(ratio - round(ratio)) <= FACTOR_TOLERANCE * ratio and round(ratio) >= 2:
        return int(round(ratio))
    if ratio <= 1 + FACTOR_TOLERANCE:
        raise ThinsliceError(
            f"{source}: target spacing {target_spacing_mm:g} mm is not finer than the slice spacing "
            f"{spacing_mm:.4g} mm; choose a target spacing below {spacing_mm:.4g} mm")
    return float(ratio)


def working_factor(ratio: float) -> int:
    """The integer factor the learned methods work at: the ratio, or the next integer above
    it (a grid at least as fine as the output grid, which is then sampled from it)."""
    return max(2, int(np.ceil(ratio - FACTOR_TOLERANCE)))


def output_shape(shape, axis: int, ratio: float) -> tuple[int, int, int]:
    """Shape of the upsampled grid: floor((n-1)*ratio)+1 slices along `axis` ((n-1)*r+1 for an integer r)."""
    out = list(shape)
    out[axis] = int(np.floor((shape[axis] - 1) * ratio + 1e-6)) + 1
    return tuple(out)  # type: ignore[return-value]


def output_positions(n_in: int, ratio: float) -> np.ndarray:
    """Where the output slices lie along the slice axis, in input slice indices (m / ratio)."""
    return np.arange(output_shape((n_in,), 0, ratio)[0]) / ratio


def output_affine(affine: np.ndarray, axis: int, ratio: float) -> np.ndarray:
    """The input affine with the slice-axis column divided by the ratio; same origin."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, axis] /= ratio
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
    gap_mm:       spacing - thickness when positive, else 0;
    factor:       the integer factor r the learned methods work at (work_spacing_mm = spacing / r);
    output_spacing_mm: the output grid's slice spacing, when it is not spacing / r (a
                  non-integer ratio); None otherwise.
    output_dtype: the data type the methods' outputs are written in (float32, or an
                  integer type: rounded and clipped).
    header_thickness_mm: the thickness the header (or the sample sheet) gives (None: neither does);
    fwhm_estimate_mm: the slice profile's FWHM estimated from the scan (None: not estimated);
    fwhm_wide_reading_mm: the wider of the two in-plane readings (the estimate is the thinner).
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
    output_spacing_mm: float | None = None
    output_dtype: str = "float32"
    header_thickness_mm: float | None = None
    fwhm_estimate_mm: float | None = None
    fwhm_wide_reading_mm: float | None = None

    @property
    def thickness_estimated(self) -> bool:
        """Whether the slice thickness is the one estimated from the scan (prepare)."""
        return self.fwhm_estimate_mm is not None and self.thickness_mm == self.fwhm_estimate_mm

    @property
    def work_spacing_mm(self) -> float:
        """Slice spacing of the grid the learned methods work on."""
        return self.spacing_mm / self.factor

    @property
    def ratio(self) -> float | int:
        """Slice spacing / output spacing: the output grid is `ratio` times finer."""
        return self.spacing_mm / self.output_spacing_mm if self.output_spacing_mm else self.factor

    @property
    def target_spacing_mm(self) -> float:
        """Slice spacing of the output grid."""
        return self.output_spacing_mm or self.work_spacing_mm

    @property
    def on_working_grid(self) -> bool:
        """Whether the output grid is the learned methods' working grid (an integer ratio)."""
        return self.output_spacing_mm is None

    def output_description(self, method: str) -> str:
        """What made an output, for its NIfTI header: method, slice axis, ratio and spacings."""
        return f"{method} axis {self.slice_axis} x{self.ratio:.4g} {self.spacing_mm:.4g}->{self.target_spacing_mm:.4g}mm"

    @property
    def intensity(self) -> Intensity:
        """The intensity scale recorded with the geometry when the scan was prepared."""
        return Intensity(self.norm_low, self.norm_high)

    def save(self, path: str | Path) -> None:
        from .io import write_json

        write_json(path, asdict(self))

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
    ratio = resolve_ratio(s, factor, target_spacing_mm, source)
    integer = isinstance(ratio, int)
    t = s if thickness_mm is None else float(thickness_mm)
    if not t > 0:
        raise ThinsliceError(f"{source}: slice thickness must be positive, got {thickness_mm}")
    others = [float(spacing[a]) for a in range(3) if a != axis]
    return Geometry(slice_axis=axis, spacing_mm=s, thickness_mm=t, gap_mm=max(s - t, 0.0),
                    factor=ratio if integer else working_factor(ratio),
                    output_spacing_mm=None if integer else float(target_spacing_mm),
                    in_plane_mm=(others[0], others[1]), shape=tuple(int(n) for n in shape),
                    orientation="".join(nib.aff2axcodes(affine)),
                    norm_low=float(norm[0]), norm_high=float(norm[1]))
