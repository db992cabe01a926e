"""Shared fixtures: the package on sys.path, nibabel's real T1, the `workflow` marker."""

from __future__ import annotations

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
