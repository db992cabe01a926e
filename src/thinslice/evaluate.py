"""Score one output, and gather the scores of a run into tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from .geometry import Geometry
from .interpolate import nearest_upsample
from .io import atomic_path, read_nifti
from .metrics import compare, periodic_artifact, real_slice_error, through_plane_sharpness

COLUMNS = ["subject", "method", "psnr", "ssim", "ssim_fg", "sharpness", "periodic_artifact", "real_slice_error"]


def evaluate(output: str | Path, lr: str | Path, geometry: str | Path, mask: str | Path,
             subject: str, method: str, truth: str | Path | None = None) -> dict:
    """Metrics of one output: PSNR/SSIM against the truth when there is one; always the
    through-plane sharpness and the periodic-artifact score (both in the input's foreground)
    and the real-slice error."""
    out, low = read_nifti(output), read_nifti(lr)
    geom = Geometry.load(geometry)
    axis, r = geom.slice_axis, geom.factor
    fg = read_nifti(mask).data > 0.5
    fg_out = nearest_upsample(fg, axis, r)
    row = {"subject": subject, "method": method, "psnr": math.nan, "ssim": math.nan, "ssim_fg": math.nan,
           "sharpness": through_plane_sharpness(geom.normalize(out.data), axis, fg_out),
           "periodic_artifact": periodic_artifact(out.data, axis, r, fg_out),
           "real_slice_error": real_slice_error(out.data, low.data, axis, r)}
    if truth:
        row.update({k: v for k, v in compare(out, read_nifti(truth)).items() if k in COLUMNS})
    return row


def write_row(row: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(row, indent=2) + "\n")


def collect(rows: list[str | Path], out_csv: str | Path, summary_csv: str | Path, summary_md: str | Path,
            skipped: list[str] = ()) -> list[dict]:
    """metrics.csv (one row per subject and method) and a per-method summary (mean, sd);
    `skipped` ("method: why" lines) are noted under the Markdown summary."""
    table = [json.loads(Path(p).read_text()) for p in rows]
    table.sort(key=lambda r: r["subject"])  # stable: methods keep the order they are given in
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in table:
            w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
    methods = list(dict.fromkeys(r["method"] for r in table))
    metrics = COLUMNS[2:]
    summary = []
    for m in methods:
        sel = [r for r in table if r["method"] == m]
        entry = {"method": m, "n": len(sel)}
        for k in metrics:
            vals = np.array([r.get(k, math.nan) for r in sel], dtype=float)
            vals = vals[np.isfinite(vals)]
            entry[f"{k}_mean"] = float(vals.mean()) if vals.size else math.nan
            entry[f"{k}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
        summary.append(entry)
    fields = ["method", "n"] + [f"{k}_{s}" for k in metrics for s in ("mean", "sd")]
    with atomic_path(summary_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for e in summary:
            w.writerow({k: _fmt(e[k]) for k in fields})
    lines = ["| method | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for e in summary:
        cells = [_pm(e[f"{k}_mean"], e[f"{k}_sd"], k) for k in metrics]
        lines.append(f"| {e['method']} | {e['n']} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Skipped methods:"] + [f"- {line}" for line in skipped]
    with atomic_path(summary_md) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return table


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _pm(mean: float, sd: float, key: str) -> str:
    if math.isnan(mean):
        return "–"
    digits = 2 if key == "psnr" else 4
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")
