"""Fetch the public data sets of the demo and the benchmark from the package registries.

- Demo: a real 3 T sagittal multi-echo knee inside the PyPI source archive mskt==0.1.22 (MIT).
- Benchmark ground truth: Colin27 `ch2.nii.gz` from Debian's package mricron-data.
Both are checksum-checked; a second call finds the files and does nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .errors import ThinsliceError

DEMO_PACKAGE = "mskt==0.1.22"
DEMO_ARCHIVE = "mskt-0.1.22.tar.gz"
DEMO_SHA256 = "b49ffa4924337e28dc08af2e7efab399e9248c9e7db477e593d5d6e254757308"
DEMO_FOLDER = "mskt-0.1.22/data/MESE_T2_dicom_data/"
DEMO_FILES = 192

CH2_SYSTEM_PATH = "/usr/share/mricron/templates/ch2.nii.gz"
CH2_SHA256 = "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309"
CH2_HOW_TO = ("install Debian's package mricron-data (apt-get install mricron-data) or set "
              "the sample sheet's path to your copy of ch2.nii.gz")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_demo(out_dir: str | Path, cache_dir: str | Path) -> Path:
    """Extract the knee's DICOM files into `out_dir`; the archive is kept in `cache_dir`."""
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    if out_dir.is_dir() and len(list(out_dir.glob("*.dcm"))) == DEMO_FILES:
        return out_dir
    archive = cache_dir / DEMO_ARCHIVE
    if not archive.exists() or sha256(archive) != DEMO_SHA256:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            # the sdist (it holds the DICOMs); its build dependencies, which pip needs to read
            # its metadata, may come as wheels (`:all:` would compile numpy from source)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", DEMO_PACKAGE.split("==")[0],
                   "-d", tmp, DEMO_PACKAGE]
            done = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / DEMO_ARCHIVE
            if done.returncode != 0 or not got.exists():
                raise ThinsliceError(f"could not download {DEMO_PACKAGE} from PyPI ({done.stderr.strip()[-200:]}); "
                                     f"check the network or place {DEMO_ARCHIVE} in {cache_dir}")
            got.replace(archive)
    if sha256(archive) != DEMO_SHA256:
        raise ThinsliceError(f"{archive}: checksum mismatch; delete it and fetch again")
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(DEMO_FOLDER) and m.isfile()]
            for m in members:
                m.name = Path(m.name).name
                tar.extract(m, staging, filter="data")
        if len(members) != DEMO_FILES:
            raise ThinsliceError(f"{archive}: expected {DEMO_FILES} DICOM files, found {len(members)}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def fetch_ch2(out: str | Path, system_path: str | Path = CH2_SYSTEM_PATH) -> Path:
    """Copy Colin27 ch2.nii.gz to `out`: from the installed package, else from Debian's archive."""
    out = Path(out)
    if out.exists() and sha256(out) == CH2_SHA256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    source = Path(system_path)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        if not source.exists():
            source = _ch2_from_debian(Path(tmp))
        if sha256(source) != CH2_SHA256:
            raise ThinsliceError(f"{source}: not the expected ch2.nii.gz (checksum mismatch); {CH2_HOW_TO}")
        staged = Path(tmp) / "ch2.nii.gz.part"
        shutil.copyfile(source, staged)
        staged.replace(out)
    return out


def _ch2_from_debian(tmp: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ThinsliceError(f"{CH2_SYSTEM_PATH} not found and this is no Debian system; {CH2_HOW_TO}")
    done = subprocess.run(["apt-get", "download", "mricron-data"], cwd=tmp, capture_output=True, text=True)
    debs = list(tmp.glob("mricron-data_*.deb"))
    if done.returncode != 0 or not debs:
        raise ThinsliceError(f"{CH2_SYSTEM_PATH} not found and 'apt-get download mricron-data' failed "
                             f"({done.stderr.strip()[-160:]}); run 'apt-get update' first, or {CH2_HOW_TO}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], check=True)
    found = tmp / "root" / CH2_SYSTEM_PATH.lstrip("/")
    if not found.exists():
        raise ThinsliceError(f"{debs[0].name} holds no {CH2_SYSTEM_PATH}; {CH2_HOW_TO}")
    return found
