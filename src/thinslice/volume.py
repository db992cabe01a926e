"""A 3D image with its geometry: the one data type passed between modules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import lr_affine, output_affine


@dataclass
class Volume:
    """A scalar 3D image.

    data:   float32 array of shape (I, J, K), indexed like the NIfTI voxel array.
    affine: 4x4 voxel index -> world (RAS+, mm) transform, as in NIfTI.
    """

    data: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.data.ndim != 3:
            raise ValueError(f"a Volume is 3D, got shape {self.data.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along each array axis, in mm (norms of the affine's columns)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    def world(self, index) -> np.ndarray:
        """World coordinates (mm) of voxel indices, shape (..., 3)."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def refined(self, data: np.ndarray, axis: int, ratio: float) -> "Volume":
        """`data` on this grid made `ratio` times finer along `axis`, same origin: slice i of this
        volume is index i*ratio there (a scan's output grid, or at an integer ratio its working grid)."""
        return Volume(data, output_affine(self.affine, axis, ratio))

    def coarsened(self, data: np.ndarray, axis: int, r: int) -> "Volume":
        """`data` on the grid of every r-th slice of this volume along `axis`, slice 0 first."""
        return Volume(data, lr_affine(self.affine, axis, r))
