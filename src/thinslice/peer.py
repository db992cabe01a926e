"""ECLARE, the per-volume peer method: run its own command on a prepared scan, then bring
its output onto thinslice's output grid so it is evaluated and drawn like every method.

ECLARE (PyPI `eclare`, GPL-3.0) is never imported: it runs as the separate program
`run-eclare`, installed by the user in its own environment (envs/eclare.yaml).
ECLARE upsamples to the in-plane spacing and splits each LR slice into sub-slices that
tile its extent, so its slice centres sit between ours for even factors; its output
is resampled in world coordinates (cubic B-spline).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import ThinsliceError
from .geometry import Geometry, output_shape
from .io import read_nifti, save_volume
from .resample import resample_to
from .settings import DEFAULT_SLICE_MODEL
from .volume import Volume

# thinslice slice models -> ECLARE's slice-profile names
PROFILES = {"gaussian": "gaussian", "box": "boxcar"}


def gpu_id(device: str) -> int:
    """ECLARE's --gpu-id for a thinslice device name (-1: CPU)."""
    from .training import select_device

    d = select_device(device)
    return -1 if d.type == "cpu" else (d.index or 0)


def eclare_argv(command: str, image: str | Path, out_dir: str | Path, relative_thickness: float,
                profile: str, n_patches: int, batch_size: int, gpu: int) -> list[str]:
    """The run-eclare command line for one prepared scan."""
    return [command, "--in-fpath", str(image), "--out-dir", str(out_dir),
            "--relative-slice-thickness", f"{relative_thickness:.6g}",
            "--relative-slice-profile-type", profile,
            "--n-patches", str(n_patches), "--batch-size", str(batch_size), "--gpu-id", str(gpu)]


def run_eclare(image: str, geometry: str, out: str, command: str = "run-eclare",
               slice_model: str = DEFAULT_SLICE_MODEL, n_patches: int = 1_000_000, batch_size: int = 128,
               device: str = "auto", threads: int = 1) -> None:
    """ECLARE's thin-slice volume of one prepared scan, on thinslice's output grid."""
    lr, g = read_nifti(image), Geometry.load(geometry)
    if slice_model not in PROFILES:
        raise ThinsliceError(f"eclare: slice model '{slice_model}' has no ECLARE slice profile; "
                             f"use one of {', '.join(PROFILES)}")
    coarsest = int(np.argmax(lr.spacing))
    if coarsest != g.slice_axis:
        raise ThinsliceError(f"eclare: {image}: ECLARE takes the axis of largest voxel size ({coarsest}) "
                             f"as the slice axis, but the slice axis is {g.slice_axis}")
    relative_thickness = g.thickness_mm / min(g.in_plane_mm)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # ECLARE's scratch folder goes beside the output
    with tempfile.TemporaryDirectory(prefix=".eclare-", dir=Path(out).parent) as work:
        argv = eclare_argv(command, Path(image).resolve(), work, relative_thickness, PROFILES[slice_model],
                           n_patches, batch_size, gpu_id(device))
        print("running:", " ".join(argv), flush=True)
        try:
            status = subprocess.run(argv, env=env).returncode
        except FileNotFoundError:
            raise ThinsliceError(f"eclare: command '{command}' not found; install ECLARE "
                                 f"(pip install eclare) or set config key eclare.command") from None
        if status != 0:
            raise ThinsliceError(f"eclare: '{command}' exited with status {status}; its output is above")
        written = sorted(Path(work).glob("*_eclare.nii*"))
        if len(written) != 1:
            raise ThinsliceError(f"eclare: expected one *_eclare.nii.gz from '{command}', found {len(written)}")
        result = read_nifti(written[0])
    grid = lr.refined(np.empty(output_shape(lr.shape, g.slice_axis, g.ratio), dtype=np.float32), g.slice_axis, g.ratio)
    data, inside = resample_to(result, grid, order=3)
    if not inside.all():
        print(f"warning: {int((~inside).sum())} output voxels lie outside ECLARE's volume; "
              f"they take the nearest value", flush=True)
    save_volume(Volume(data, grid.affine), out, g.output_description("eclare"), g.output_dtype)
