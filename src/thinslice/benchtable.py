"""The benchmark table: quality from metrics.csv, cost from the rules' benchmark files.

Which rules a method costs is fixed by the workflow's layout under results/<run>/benchmarks/:
training is everything the method needs before it can be applied (for sr_vae: the VAE,
the synthesis and the SR network), inference is applying it to every subject.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from . import methods as registry
from .errors import ThinsliceError


def read_benchmark(path: Path) -> dict:
    """Seconds and peak resident memory (MB) of one Snakemake benchmark file (last repeat)."""
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise ThinsliceError(f"{path}: empty benchmark file; rerun the job that writes it")
    row = rows[-1]
    rss = row.get("max_rss", "NA")
    return {"s": float(row["s"]), "max_rss": float(rss) if rss not in ("NA", "", "-") else math.nan}


def method_stages(method: str) -> tuple[list[str], list[str]]:
    """(training, inference) benchmark-file patterns of a method, relative to benchmarks/."""
    if method in registry.REGISTRY:
        return registry.get(method).benchmark_stages()
    return [], [f"{method}/*.tsv"]


def _cost(bench_dir: Path, patterns: list[str]) -> tuple[float, float]:
    seconds, peak = 0.0, math.nan
    for pattern in patterns:
        for p in sorted(bench_dir.glob(pattern)):
            b = read_benchmark(p)
            seconds += b["s"]
            peak = b["max_rss"] if math.isnan(peak) else max(peak, b["max_rss"])
    return seconds, peak


def run_table(run_dir: str | Path) -> list[dict]:
    """One row per method of a run: mean PSNR/SSIM over subjects, training and inference
    seconds (summed over jobs), peak memory (MB, the largest job)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").exists():
        raise ThinsliceError(f"{run_dir}: no metrics.csv, the run has not finished; run its workflow first "
                             f"(snakemake --cores all --configfile config/<run>.yaml)")
    with (run_dir / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    rows = []
    for method in registry.order(dict.fromkeys(m["method"] for m in metrics)):
        sel = [m for m in metrics if m["method"] == method]
        train, infer = method_stages(method)
        t_train, m_train = _cost(run_dir / "benchmarks", train)
        t_infer, m_infer = _cost(run_dir / "benchmarks", infer)
        rows.append({
            "run": run_dir.name, "method": method,
            "psnr": _mean(m["psnr"] for m in sel), "ssim": _mean(m["ssim"] for m in sel),
            "train_s": t_train, "infer_s": t_infer,
            "peak_mb": max((v for v in (m_train, m_infer) if not math.isnan(v)), default=math.nan),
        })
    return rows


def _mean(values) -> float:
    vals = [float(v) for v in values if v not in ("", None)]
    return sum(vals) / len(vals) if vals else math.nan


def markdown(rows: list[dict]) -> str:
    lines = ["| run | method | PSNR (dB) | SSIM | training (s) | inference (s) | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {_f(r['psnr'], 2)} | {_f(r['ssim'], 4)} | "
                     f"{_f(r['train_s'], 0)} | {_f(r['infer_s'], 1)} | {_f(r['peak_mb'], 0)} |")
    return "\n".join(lines) + "\n"


def _f(v: float, digits: int) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.{digits}f}"
