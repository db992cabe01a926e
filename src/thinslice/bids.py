"""BIDS in and out: a sample sheet from a BIDS dataset, and outputs as a BIDS derivatives dataset.

Input follows the inheritance principle for sidecar metadata, so a SliceThickness given once at
the dataset root reaches every scan; outputs carry a sidecar recording how each was made.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from . import __version__
from .errors import ThinsliceError
from .fetch import sha256
from .io import read_json, write_json, write_table

BIDS_VERSION = "1.9.0"
SUBJECT_RE = re.compile(r"^[A-Za-z0-9._-]+$")
SHEET_COLUMNS = ("subject", "path", "slice_thickness")


def _entities(stem: str) -> tuple[dict[str, str], str]:
    """`sub-01_ses-2_T2w` -> ({'sub': '01', 'ses': '2'}, 'T2w'); a part without '-' is no entity."""
    *parts, suffix = stem.split("_")
    pairs = dict(p.split("-", 1) for p in parts if "-" in p)
    return pairs, suffix


def _stem(name: str) -> str:
    """The file name without its extension(s) (`.nii.gz` counts as one)."""
    for ext in (".nii.gz", ".nii", ".json"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name.split(".")[0]


def _inherited(scan: Path, root: Path, suffix: str, key: str):
    """(value of `key`, sidecar) from the nearest applicable sidecar that defines it, or (None, None).

    A sidecar applies when it lies in the scan's folder or a folder above it (up to root), has the
    same suffix, and its entities are a subset of the scan's; at one level more entities win."""
    entities, _ = _entities(_stem(scan.name))
    folder = scan.parent
    while True:
        found = []
        for js in folder.glob(f"*{suffix}.json"):
            ents, sfx = _entities(_stem(js.name))
            if sfx == suffix and ents.items() <= entities.items():
                found.append((len(ents), js))
        for _, js in sorted(found, reverse=True):
            data = read_json(js, fix="fix or remove the sidecar")
            if key in data:
                return data[key], js
        if folder == root or folder.parent == folder:
            return None, None
        folder = folder.parent


def find_scans(root: str | Path, suffix: str = "T2w") -> list[dict]:
    """One sample-sheet row per `sub-*/[ses-*/]anat/*_<suffix>.nii[.gz]` of a BIDS dataset, sorted."""
    root = Path(root)
    expected = f"a BIDS dataset (dataset_description.json, sub-*/[ses-*/]anat/*_{suffix}.nii[.gz])"
    if not root.is_dir():
        raise ThinsliceError(f"{root}: not a folder; give the root folder of {expected}")
    if not (root / "dataset_description.json").is_file():
        raise ThinsliceError(f"{root}: has no dataset_description.json; give the root folder of {expected}")
    scans = [p for pattern in ("sub-*/anat/*", "sub-*/ses-*/anat/*") for p in root.glob(pattern)
             if p.name.endswith((f"_{suffix}.nii", f"_{suffix}.nii.gz")) and p.is_file()]
    if not scans:
        raise ThinsliceError(f"{root}: holds no sub-*/[ses-*/]anat/*_{suffix}.nii[.gz]; "
                             f"check the folder and the suffix (e.g. --suffix T1w)")
    rows, seen = [], {}
    for scan in sorted(scans):
        subject = _stem(scan.name)[: -len(f"_{suffix}")]
        if not SUBJECT_RE.match(subject):
            raise ThinsliceError(f"{scan}: '{subject}' is no valid subject id (letters, digits, '.', '_', '-'); "
                                 f"rename the file")
        if subject in seen:
            raise ThinsliceError(f"{scan}: same name as {seen[subject]}; keep one of the two")
        seen[subject] = scan
        value, sidecar = _inherited(scan, root, suffix, "SliceThickness")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ThinsliceError(f"{sidecar}: SliceThickness = {value!r} is not a positive number of mm; fix it")
        rows.append({"subject": subject, "path": str(scan),
                     "slice_thickness": None if value is None else float(value)})
    return rows


def write_sample_sheet(rows: list[dict], path: str | Path) -> None:
    """The rows as a tab-separated sample sheet; an empty cell where the thickness is unknown."""
    write_table(path, SHEET_COLUMNS, ({k: "" if row.get(k) is None else row[k] for k in SHEET_COLUMNS} for row in rows),
                delimiter="\t")


def write_dataset_description(folder: str | Path, source: str | Path | None = None) -> Path:
    """`folder/dataset_description.json` that makes the outputs a BIDS derivatives dataset."""
    desc = {
        "Name": "thinslice outputs",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "thinslice", "Version": __version__,
                         "Description": "Slice-axis upsampling of thick-slice MR scans."}],
    }
    if source is not None:
        desc["SourceDatasets"] = [{"URL": Path(source).absolute().as_uri()}]
    path = Path(folder) / "dataset_description.json"
    write_json(path, desc, sort_keys=True)
    return path


def derivative_name(subject: str, method: str, suffix: str = "T2w") -> str:
    """`sub-01/ses-2/anat/sub-01_ses-2_desc-<method>_<suffix>.nii.gz`: where an output goes in BIDS.

    The desc label keeps only letters and digits (BIDS labels allow nothing else)."""
    desc = re.sub(r"[^A-Za-z0-9]", "", method)
    if not desc:
        raise ThinsliceError(f"method '{method}': has no letter or digit to name the output with")
    parts = subject.split("_")
    if parts[0].startswith("sub-"):
        folders = [parts[0]] + [p for p in parts[1:] if p.startswith("ses-")][:1]
    else:
        label = re.sub(r"[^A-Za-z0-9]", "", subject)
        if not label:
            raise ThinsliceError(f"subject '{subject}': has no letter or digit; rename it in the sample sheet")
        folders = [f"sub-{label}"]
    return "/".join([*folders, "anat", f"{subject}_desc-{desc}_{suffix}.nii.gz"])


def write_sidecar(path: str | Path, record: dict) -> Path:
    """The JSON sidecar beside a NIfTI output (`x.nii.gz` -> `x.json`)."""
    path = Path(path)
    sidecar = path.with_name(_stem(path.name) + ".json")
    write_json(sidecar, record, sort_keys=True)
    return sidecar


def provenance(method: str, geometry, model: str | Path | None = None, source: str | Path | None = None,
               *, slice_model: str | None = None) -> dict:
    """What an output's sidecar records: the method, the slice geometry, the inputs and the model."""
    record = {
        "Method": method,
        "SliceAxis": int(geometry.slice_axis),
        "SliceSpacing": float(geometry.spacing_mm),
        "SliceThickness": float(geometry.thickness_mm),
        "UpsamplingRatio": float(geometry.ratio),
        "WorkingFactor": int(geometry.factor),
        "OutputSliceSpacing": float(geometry.target_spacing_mm),
        "Sources": [str(source)] if source is not None else [],
        "ThinsliceVersion": __version__,
    }
    if slice_model is not None:
        record["SliceModel"] = slice_model
    if model is not None:
        record["ModelFile"] = str(model)
        record["ModelSHA256"] = sha256(model)
    return record


def export(folder: str | Path, entries: list[dict], suffix: str = "T2w", slice_model: str | None = None,
           source_dataset: str | Path | None = None) -> list[Path]:
    """A run's outputs as a BIDS derivatives dataset in `folder`: dataset_description.json, and
    each output (hard-linked where the file system allows, else copied) under its BIDS name
    with its sidecar. entries: {subject, method, output, geometry (record path), model (or
    None), source (the scan it was made from)}. Returns the files written, the description
    last (its presence marks a complete export)."""
    from .geometry import Geometry

    written = []
    for e in entries:
        target = Path(folder) / derivative_name(e["subject"], e["method"], suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(e["output"], target)
        except OSError:   # another file system, or links not allowed
            shutil.copyfile(e["output"], target)
        record = provenance(e["method"], Geometry.load(e["geometry"]), e.get("model"), e.get("source"),
                            slice_model=slice_model)
        written += [target, write_sidecar(target, record)]
    return written + [write_dataset_description(folder, source_dataset)]
