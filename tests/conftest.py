"""Shared fixtures: the package on sys.path, nibabel's real T1, the `workflow` marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # tests run from a checkout without an installed package
    sys.path.insert(0, str(REPO / "src"))

ANATOMICAL = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "workflow: runs snakemake on a tiny project (select with -m workflow, skip with -m 'not workflow')")


@pytest.fixture(scope="session")
def anatomical_path() -> Path:
    """nibabel's real T1: 33x41x25 voxels at 2 mm, int16, LAS."""
    assert ANATOMICAL.exists(), f"nibabel's test image is missing: {ANATOMICAL}"
    return ANATOMICAL


@pytest.fixture(scope="session")
def anatomical(anatomical_path):
    """(data as float32, affine) of nibabel's real T1."""
    img = nibabel.load(anatomical_path)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()


def rotation(axis, degrees) -> np.ndarray:
    """3x3 rotation about `axis` by `degrees` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def oblique_affine(spacing=(0.7, 0.9, 4.0), offset=(-31.5, 12.25, 40.0)) -> np.ndarray:
    """A 4x4 affine with a rotation about an oblique axis, anisotropic spacing and an offset."""
    aff = np.eye(4)
    aff[:3, :3] = rotation((1.0, 2.0, 0.5), 23.0) @ np.diag(spacing)
    aff[:3, 3] = offset
    return aff


# ---------------------------------------------------------------------------------------------
# running the workflow from tests

SNAKEFILE = REPO / "Snakefile"
BIN = Path(sys.executable).parent


def snakemake(workdir: Path | None, *args: str, extra_env: dict | None = None,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """Run snakemake with this interpreter's environment first on PATH, and without PYTHONPATH or
    SLURM_*/SBATCH_*/SNAKEMAKE_* variables from outside (the package must be found through the
    Snakefile's own PYTHONPATH prefix). workdir: a project folder, run from there with the
    repository's Snakefile; None: the repository itself. extra_env: added variables (a PATH
    entry goes first on PATH)."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("SLURM_", "SBATCH_", "SNAKEMAKE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    extra = dict(extra_env or {})
    if "PATH" in extra:
        env["PATH"] = f"{extra.pop('PATH')}{os.pathsep}{env['PATH']}"
    env.update(extra)
    exe = [str(BIN / "snakemake")] if (BIN / "snakemake").exists() else [sys.executable, "-m", "snakemake"]
    where = ["--snakefile", str(SNAKEFILE), "--directory", str(workdir)] if workdir else []
    return subprocess.run([*exe, *where, *args], cwd=workdir or REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def write_fake_eclare(folder: Path) -> Path:
    """An executable `run-eclare` in `folder`: tests/tools/fake_run_eclare.py (ECLARE's command line
    and output grid) run with this interpreter."""
    exe = folder / "run-eclare"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests/tools/fake_run_eclare.py'} \"$@\"\n")
    exe.chmod(0o755)
    return exe


def output_tail(done: subprocess.CompletedProcess, n: int = 3000) -> str:
    """The end of a run's output, for assertion messages."""
    return (done.stdout + done.stderr)[-n:]


def job_stats(text: str) -> dict[str, int]:
    """Snakemake's "Job stats" table (the first one in `text`): rule -> count, with 'total'."""
    lines = text.splitlines()
    stats = {}
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        stats[parts[0]] = int(parts[1])
    return stats
