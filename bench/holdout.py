"""Held-out real slices: how well each method predicts slices that were really acquired.

Only every k-th slice of a real scan is kept (k = --every, 2 by default; fold f keeps slices
f, f+k, ...; one fold per offset, so every slice is held out once): the spacing grows k times,
the slices keep their thickness. Each method upsamples the kept slices xk and is scored on the
dropped ones: PSNR over the brightest 40% of their voxels, peak their largest value. No
simulation: real noise, real slice profile, real anatomy, but k times the scan's own spacing.

    python bench/holdout.py results/knee-demo/input/knee_echo1.nii.gz     (make bench-holdout)
    python bench/holdout.py scan.nii.gz --every 3                         (keep every third slice)
    python bench/holdout.py scan.nii.gz --thickness 3 --settings sr.json  (an SR variant)
    python bench/holdout.py scan.nii.gz --slice-model box                 (another slice model)

The slice axis and thickness come from the geometry record beside a prepared input
(`<name>.json`), else the axis of largest spacing and --thickness, else what `thinslice prepare`
takes for a scan without one (the spacing of the kept slices, or the slice profile estimated
from them where it is more than 25% below that spacing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from thinslice.geometry import Geometry
from thinslice.metrics import psnr
from thinslice.settings import DEFAULT_SLICE_MODEL, SLICE_MODELS

METHODS = ["linear", "cubic", "sr_self"]


def thinslice(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "thinslice", *args], check=True, stdout=subprocess.DEVNULL)


def held_out_psnr(out: np.ndarray, truth: np.ndarray, axis: int, every: int) -> float:
    """PSNR of `out` on the slices along `axis` that are not multiples of `every` (the dropped ones),
    over the brightest 40% of them."""
    dropped = [i for i in range(truth.shape[axis]) if i % every]
    held = np.take(truth, dropped, axis=axis)
    region = held >= np.quantile(held, 0.6)
    return psnr(np.take(out, dropped, axis=axis), held, region, peak=held[region].max())


def fold_scores(data: np.ndarray, affine: np.ndarray, axis: int, thickness: float, every: int, fold: int,
                work: Path, threads: int, settings: str | None, slice_model: str) -> dict:
    """Keep the slices fold, fold+every, ... of `data`; each method's PSNR on the slices in between."""
    kept = np.take(data, range(fold, data.shape[axis], every), axis=axis)
    sparse = affine.copy()
    sparse[:3, 3] += fold * affine[:3, axis]   # origin at the first kept slice, `every` times the spacing
    sparse[:3, axis] *= every
    truth = np.take(data, range(fold, fold + every * (kept.shape[axis] - 1) + 1), axis=axis)
    scan, image, geometry, mask = (work / f"fold{fold}_{n}" for n in ("scan.nii.gz", "input.nii.gz", "input.json",
                                                                        "mask.nii.gz"))
    nib.save(nib.Nifti1Image(kept, sparse), scan)
    thinslice("prepare", "--input", str(scan), "--slice-axis", str(axis), "--factor", str(every),
              *(["--thickness", str(thickness)] if thickness else []),
              "--out-image", str(image), "--out-geometry", str(geometry), "--out-mask", str(mask))
    scores = {"thickness": Geometry.load(geometry).thickness_mm}
    for method in METHODS:
        out = work / f"fold{fold}_{method}.nii.gz"
        start = time.perf_counter()
        if method == "sr_self":
            model = work / f"fold{fold}_sr_self.pt"
            thinslice("train-sr", "--source", "self", "--images", str(image), "--geometries", str(geometry),
                      "--checkpoint", str(work / f"fold{fold}.ckpt"), "--loss-csv", str(work / f"fold{fold}.csv"),
                      "--out", str(model), "--threads", str(threads), "--slice-model", slice_model,
                      *(["--settings", settings] if settings else []))
            thinslice("infer", "--model", str(model), "--geometry", str(geometry), str(image), str(out),
                       "--threads", str(threads))
        else:
            thinslice("upsample", "--image", str(image), "--geometry", str(geometry), "--method", method,
                      "--out", str(out))
        predicted = np.asarray(nib.load(out).dataobj)
        if predicted.shape != truth.shape:
            raise SystemExit(f"{method}: output of shape {predicted.shape}, expected {truth.shape}")
        scores[method] = (held_out_psnr(predicted, truth, axis, every), time.perf_counter() - start)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", help="a real scan (NIfTI), e.g. a prepared input of the workflow")
    parser.add_argument("--thickness", type=float, help="slice thickness in mm (default: the geometry record's, "
                                                         "else thinslice prepare's default)")
    parser.add_argument("--every", type=int, default=2, help="keep every k-th slice and predict xk (default 2)")
    parser.add_argument("--settings", help="SR training settings (JSON) for sr_self")
    parser.add_argument("--slice-model", choices=SLICE_MODELS, default=DEFAULT_SLICE_MODEL,
                        help="the slice model sr_self's pairs are simulated with (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args()
    img = nib.load(a.scan)
    data = np.asarray(img.dataobj, dtype=np.float32)
    record = Path(a.scan.removesuffix(".gz").removesuffix(".nii") + ".json")
    geometry = Geometry.load(record) if record.exists() else None
    axis = geometry.slice_axis if geometry else int(np.argmax(img.header.get_zooms()[:3]))
    thickness = a.thickness or (geometry.thickness_mm if geometry else None)
    if a.every < 2 or data.shape[axis] < 2 * a.every:
        raise SystemExit(f"{a.scan}: --every must be at least 2, with 2 kept slices in every fold "
                         f"({data.shape[axis]} slices)")
    said = f"{thickness:g} mm thick" if thickness else "no thickness given (thinslice prepare's default)"
    print(f"{a.scan}: {data.shape[axis]} slices along axis {axis}, {said}; one kept in {a.every}, the others "
          f"predicted (x{a.every}), sr_self with the {a.slice_model} slice model, {a.threads} threads")
    print("| fold | " + " | ".join(f"{m} (dB)" for m in METHODS) + " | sr_self time (s) | thickness used (mm) |")
    print("|---" * (len(METHODS) + 3) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for fold in range(a.every):
            s = fold_scores(data, img.affine, axis, thickness, a.every, fold, Path(tmp), a.threads, a.settings,
                            a.slice_model)
            print(f"| {fold}, {fold + a.every}, ... kept | "
                  + " | ".join(f"{s[m][0]:.2f}" for m in METHODS)
                  + f" | {s['sr_self'][1]:.0f} | {s['thickness']:.3g} |", flush=True)


if __name__ == "__main__":
    main()
