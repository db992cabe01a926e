"""Score one output, and gather the scores of a run into tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .consistency import consistency_psnr
from .geometry import Geometry
from .interpolate import nearest_upsample
from .io import atomic_path, read_nifti, write_json, write_table
from .metrics import TRUTH_FRACTION, compare, periodic_artifact, through_plane_sharpness
from .normalize import above_fraction
from .resample import resample_to
from .settings import DEFAULT_SLICE_MODEL
from .slice_profile import profile_mismatch

# Above this, the texture of the output slices repeats every r slices visibly (cubic on real scans: 1.1-1.4).
PERIODIC_WARNING = 1.5

COLUMNS = ["subject", "method", "psnr", "ssim", "ssim_fg", "sharpness", "periodic_artifact", "consistency_psnr"]


def evaluate(output: str | Path, lr: str | Path, geometry: str | Path, mask: str | Path,
             subject: str, method: str, truth: str | Path | None = None, slice_model: str = DEFAULT_SLICE_MODEL) -> dict:
    """Metrics of one output: PSNR/SSIM against the truth when there is one; always the
    through-plane sharpness, the periodic-artifact score and the consistency with the
    acquisition (the output re-acquired with `slice_model` against the real slices), all
    in the input's foreground."""
    out, low = read_nifti(output), read_nifti(lr)
    geom = Geometry.load(geometry)
    axis, ratio = geom.slice_axis, geom.ratio
    fg = read_nifti(mask).data > 0.5
    fg_out = nearest_upsample(fg, axis, ratio)
    row = {"subject": subject, "method": method, "psnr": math.nan, "ssim": math.nan, "ssim_fg": math.nan,
           "sharpness": through_plane_sharpness(geom.intensity.normalize(out.data), axis, fg_out),
           "periodic_artifact": periodic_artifact(out.data, axis, ratio, fg_out),
           "consistency_psnr": consistency_psnr(out.data, low.data, axis, ratio, slice_model, geom.thickness_mm,
                                                geom.target_spacing_mm, fg)}
    if truth:
        row.update({k: v for k, v in compare(out, read_nifti(truth)).items() if k in COLUMNS})
    return row


def uncertainty_scores(uncertainty: str | Path, output: str | Path, axis: int, fg_out: np.ndarray,
                       truth: str | Path | None = None) -> dict:
    """How an uncertainty map reads: its mean over the foreground and, with a truth, how well
    it ranks the real error: the Spearman correlation, over the output slices along `axis`
    (those with at least 100 foreground voxels), between the slice's mean uncertainty and
    its mean absolute error, over the truth's foreground."""
    from scipy.stats import spearmanr

    u, out = read_nifti(uncertainty).data, read_nifti(output)
    scores = {"uncertainty_mean": float(u[fg_out].mean()) if fg_out.any() else math.nan,
              "uncertainty_error_spearman": math.nan}
    if truth:
        t, inside = resample_to(read_nifti(truth), out)
        fg = np.moveaxis(above_fraction(t, TRUTH_FRACTION) & inside, axis, 0)
        err, u = np.moveaxis(np.abs(out.data - t), axis, 0), np.moveaxis(u, axis, 0)
        keep = [k for k in range(len(fg)) if fg[k].sum() >= 100]
        if len(keep) >= 3:
            scores["uncertainty_error_spearman"] = float(spearmanr([u[k][fg[k]].mean() for k in keep],
                                                                   [err[k][fg[k]].mean() for k in keep]).statistic)
    return scores


def qc_record(row: dict, output: str | Path, geometry: str | Path, mask: str | Path,
              uncertainty: str | Path | None = None, truth: str | Path | None = None) -> dict:
    """The per-scan QC entry of one output (`row`: its metrics): consistency with the
    acquisition, the slice profile (the header's thickness, the FWHM estimated from the scan,
    the wider of its two in-plane readings and the one used), the uncertainty map's scores and
    warnings a user should read."""
    geom = Geometry.load(geometry)
    scores = None
    if uncertainty:
        fg_out = nearest_upsample(read_nifti(mask).data > 0.5, geom.slice_axis, geom.ratio)
        scores = uncertainty_scores(uncertainty, output, geom.slice_axis, fg_out, truth)
    record = {"subject": row["subject"], "method": row["method"], "consistency_psnr": row["consistency_psnr"],
              "periodic_artifact": row["periodic_artifact"],
              "fwhm_header_mm": geom.header_thickness_mm,
              "fwhm_estimate_mm": geom.fwhm_estimate_mm, "fwhm_wide_reading_mm": geom.fwhm_wide_reading_mm,
              "slice_thickness_used_mm": geom.thickness_mm,
              "slice_spacing_mm": geom.spacing_mm,
              "output_spacing_mm": geom.target_spacing_mm,
              **(scores or {"uncertainty_mean": None, "uncertainty_error_spearman": None})}
    warnings = []
    if row["periodic_artifact"] > PERIODIC_WARNING:
        hint = ("; if the scan's noise is not white (its reconstruction filtered it), sr.train.noise_scale 2 to 3 "
                "may lower it (README, Methods)") if row["method"].startswith("sr_") else ""
        warnings.append(f"periodic_artifact {row['periodic_artifact']:.2f} > {PERIODIC_WARNING}: a pattern repeats "
                        f"with the real slices, every {geom.ratio:.3g} output slices (look at the reformats){hint}")
    if mismatch := profile_mismatch(geom):
        warnings.append(mismatch)
    record["warnings"] = warnings
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def write_row(row: dict, path: str | Path) -> None:
    write_json(path, row)


def collect(rows: list[str | Path], out_csv: str | Path, summary_csv: str | Path, summary_md: str | Path,
            skipped: list[str] = ()) -> list[dict]:
    """metrics.csv (one row per subject and method) and a per-method summary (mean, sd);
    `skipped` ("method: why" lines) are noted under the Markdown summary."""
    table = [json.loads(Path(p).read_text()) for p in rows]
    table.sort(key=lambda r: r["subject"])  # stable: methods keep the order they are given in
    write_table(out_csv, COLUMNS, ({k: _fmt(r.get(k)) for k in COLUMNS} for r in table))
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
    write_table(summary_csv, fields, ({k: _fmt(e[k]) for k in fields} for e in summary))
    lines = ["| method | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for e in summary:
        cells = [_pm(e[f"{k}_mean"], e[f"{k}_sd"], k) for k in metrics]
        lines.append(f"| {e['method']} | {e['n']} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Skipped methods:"] + [f"- {line}" for line in skipped]
    with atomic_path(summary_md) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return table


QC_COLUMNS = ["subject", "method", "consistency_psnr", "periodic_artifact", "fwhm_header_mm", "fwhm_estimate_mm",
              "fwhm_wide_reading_mm", "slice_thickness_used_mm", "uncertainty_mean", "uncertainty_error_spearman",
              "warnings"]


def collect_qc(entries: list[str | Path], out_csv: str | Path) -> None:
    """qc.csv: the per-scan QC entries of a run, one row per subject and method."""
    table = sorted((json.loads(Path(p).read_text()) for p in entries), key=lambda r: r["subject"])
    write_table(out_csv, QC_COLUMNS,
                ({k: "; ".join(r[k]) if k == "warnings" else _fmt(r.get(k)) for k in QC_COLUMNS} for r in table))


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _pm(mean: float, sd: float, key: str) -> str:
    if math.isnan(mean):
        return "–"
    digits = 2 if key == "psnr" else 4
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")
