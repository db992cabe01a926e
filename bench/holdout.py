"""Held-out real slices: how well each method predicts slices that were really acquired.

Every second slice of a real scan is dropped (fold 0 keeps the even slices, fold 1 the odd
ones): the spacing doubles, the slices keep their thickness. Each method upsamples the kept
slices x2 and is scored on the dropped ones: PSNR over the brightest 40% of their voxels, peak
their largest value. No simulation: real noise, real slice profile, real anatomy, but twice
the scan's own spacing.

    python bench/holdout.py results/knee-demo/input/knee_echo1.nii.gz     (make bench-holdout)
    python bench/holdout.py scan.nii.gz --thickness 3 --settings sr.json  (an SR variant)

The slice axis and thickness come from the geometry record beside a prepared input
(`<name>.json`), else the axis of largest spacing and --thickness.
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

METHODS = ["linear", "cubic", "sr_self"]


def thinslice(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "thinslice", *args], check=True, stdout=subprocess.DEVNULL)


def held_out_psnr(out: np.ndarray, truth: np.ndarray, axis: int) -> float:
    """PSNR of `out` on the odd slices along `axis` (the dropped ones), over the brightest 40% of them."""
    held = np.take(truth, range(1, truth.shape[axis], 2), axis=axis)
    region = held >= np.quantile(held, 0.6)
    return psnr(np.take(out, range(1, out.shape[axis], 2), axis=axis), held, region, peak=held[region].max())


def fold_scores(data: np.ndarray, affine: np.ndarray, axis: int, thickness: float, fold: int, work: Path,
                threads: int, settings: str | None) -> dict:
    """Keep the slices fold, fold+2, ... of `data`; each method's PSNR on the slices in between."""
    kept = np.take(data, range(fold, data.shape[axis], 2), axis=axis)
    sparse = affine.copy()
    sparse[:3, 3] += fold * affine[:3, axis]   # origin at the first kept slice, twice the spacing
    sparse[:3, axis] *= 2
    truth = np.take(data, range(fold, fold + 2 * kept.shape[axis] - 1), axis=axis)
    scan, image, geometry, mask = (work / f"fold{fold}_{n}" for n in ("scan.nii.gz", "input.nii.gz", "input.json",
                                                                        "mask.nii.gz"))
    nib.save(nib.Nifti1Image(kept, sparse), scan)
    thinslice("prepare", "--input", str(scan), "--slice-axis", str(axis), "--thickness", str(thickness),
              "--factor", "2", "--out-image", str(image), "--out-geometry", str(geometry), "--out-mask", str(mask))
    scores = {}
    for method in METHODS:
        out = work / f"fold{fold}_{method}.nii.gz"
        start = time.perf_counter()
        if method == "sr_self":
            model = work / f"fold{fold}_sr_self.pt"
            thinslice("train-sr", "--source", "self", "--images", str(image), "--geometries", str(geometry),
                      "--checkpoint", str(work / f"fold{fold}.ckpt"), "--loss-csv", str(work / f"fold{fold}.csv"),
                      "--out", str(model), "--threads", str(threads), *(["--settings", settings] if settings else []))
            thinslice("infer", "--model", str(model), "--geometry", str(geometry), str(image), str(out),
                       "--threads", str(threads))
        else:
            thinslice("upsample", "--image", str(image), "--geometry", str(geometry), "--method", method,
                      "--out", str(out))
        predicted = np.asarray(nib.load(out).dataobj)
        if predicted.shape != truth.shape:
            raise SystemExit(f"{method}: output of shape {predicted.shape}, expected {truth.shape}")
        scores[method] = (held_out_psnr(predicted, truth, axis), time.perf_counter() - start)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", help="a real scan (NIfTI), e.g. a prepared input of the workflow")
    parser.add_argument("--thickness", type=float, help="slice thickness in mm (default: the geometry record's)")
    parser.add_argument("--settings", help="SR training settings (JSON) for sr_self")
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args()
    img = nib.load(a.scan)
    data = np.asarray(img.dataobj, dtype=np.float32)
    record = Path(a.scan.removesuffix(".gz").removesuffix(".nii") + ".json")
    geometry = Geometry.load(record) if record.exists() else None
    axis = geometry.slice_axis if geometry else int(np.argmax(img.header.get_zooms()[:3]))
    thickness = a.thickness or (geometry.thickness_mm if geometry else None)
    if not thickness:
        raise SystemExit(f"{a.scan}: no geometry record beside it; give --thickness")
    print(f"{a.scan}: {data.shape[axis]} slices along axis {axis}, {thickness:g} mm thick; every second one "
          f"dropped and predicted (x2), {a.threads} threads")
    print("| fold | " + " | ".join(f"{m} (dB)" for m in METHODS) + " | sr_self time (s) |")
    print("|---" * (len(METHODS) + 2) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for fold in (0, 1):
            s = fold_scores(data, img.affine, axis, thickness, fold, Path(tmp), a.threads, a.settings)
            print(f"| {'even' if fold == 0 else 'odd'} slices kept | "
                  + " | ".join(f"{s[m][0]:.2f}" for m in METHODS) + f" | {s['sr_self'][1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
