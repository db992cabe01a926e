"""Cohort scale: SR training memory and time against the number of subjects, inference time
per subject, and the peak memory of inference on a large scan, with and without the uncertainty map.

    python bench/scale.py resources/ch2.nii.gz            (make bench-scale)
    python bench/scale.py resources/ch2.nii.gz --subjects 1 8 --steps 100 --no-inference

Subjects are 256x256x40 scans at 4 mm slices and 1 mm in-plane, made from ch2 (1 mm) blurred
along z with a Gaussian of FWHM 4 mm, each shifted, flipped and scaled by its own seed. Each
command runs as its own process; its memory is polled from /proc: the peak resident set (what
`top` shows, page cache of memory-mapped pair files included) and the peak anonymous memory
(the process's own allocations, which the OS cannot reclaim). The pair files are the disk
that training's pairs take while it runs, as train-sr reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from thinslice.degrade import degrade
from thinslice.geometry import output_shape
from thinslice.prepare import prepare

SHAPE = (256, 256, 40)


def subject(lr: np.ndarray, seed: int) -> np.ndarray:
    """One 256x256x40 thick-slice scan cut from `lr`, the 1 mm volume degraded to 4 mm slices."""
    rng = np.random.default_rng(seed)
    out = np.zeros(SHAPE, np.float32)
    x0, y0 = (int(rng.integers(0, SHAPE[a] - lr.shape[a] + 1)) for a in (0, 1))
    z0 = int(rng.integers(0, lr.shape[2] - SHAPE[2] + 1))
    out[x0:x0 + lr.shape[0], y0:y0 + lr.shape[1]] = lr[..., z0:z0 + SHAPE[2]]
    if rng.random() < 0.5:
        out = out[::-1].copy()
    return out * float(rng.uniform(0.8, 1.2))


def measured(command: list[str]) -> dict:
    """Run `command`; its wall time (s), peak resident and anonymous memory (MB) and output."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"VmRSS": 0, "RssAnon": 0}

    def poll() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in peak:
                        peak[key] = max(peak[key], int(value.split()[0]))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            time.sleep(0.05)

    start = time.perf_counter()
    watcher = threading.Thread(target=poll)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{err}")
    return {"seconds": time.perf_counter() - start, "rss_mb": peak["VmRSS"] / 1024, "anon_mb": peak["RssAnon"] / 1024,
            "output": out}


def shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def thinslice(*args: str) -> list[str]:
    return [sys.executable, "-m", "thinslice", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("truth", help="the 1 mm volume the subjects are made from (resources/ch2.nii.gz)")
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--steps", type=int, default=300, help="SR training steps per cohort size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--large", type=int, nargs=3, default=[512, 512, 200], metavar=("X", "Y", "Z"),
                        help="shape of the large scan for the inference memory row")
    parser.add_argument("--no-inference", action="store_true", help="the training table alone")
    a = parser.parse_args()
    hr = np.asarray(nib.load(a.truth).dataobj, dtype=np.float32)
    lr = degrade(hr, 2, 4, "gaussian", 4.0, 1.0)
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images, geometries = [], []
        for i in range(max(a.subjects)):
            path = work / f"sub{i:03d}.nii.gz"
            nib.save(nib.Nifti1Image(subject(lr, i), affine), path)
            image, geometry = work / f"sub{i:03d}_lr.nii.gz", work / f"sub{i:03d}.json"
            with contextlib.redirect_stdout(io.StringIO()):   # one line per subject about its slice profile
                prepare(path, image, geometry, work / f"sub{i:03d}_mask.nii.gz", factor=4)
            images.append(str(image))
            geometries.append(str(geometry))
        settings = work / "settings.json"
        settings.write_text(json.dumps({"steps": a.steps, "checkpoint_every": a.steps}))
        print(f"SR training (self pairs, {a.steps} steps, {a.threads} threads), subjects of {shape_text(SHAPE)}:")
        print("| subjects | input data (MB) | pair files (MB) | wall time (s) | peak resident (MB) | peak anonymous (MB) |")
        print("|---|---|---|---|---|---|")
        model = work / "sr.pt"
        for n in a.subjects:
            m = measured(thinslice("train-sr", "--source", "self", "--images", *images[:n],
                                   "--geometries", *geometries[:n], "--settings", str(settings),
                                   "--checkpoint", str(work / f"sr{n}.ckpt"), "--loss-csv", str(work / "loss.csv"),
                                   "--threads", str(a.threads), "--device", "cpu", "--out", str(model)))
            data_mb = n * np.prod(SHAPE) * 4 / 2**20
            pairs_mb = re.search(r"in (\d+) MB of files", m["output"]).group(1)   # train-sr says so
            print(f"| {n} | {data_mb:.0f} | {pairs_mb} | {m['seconds']:.0f} | {m['rss_mb']:.0f} | {m['anon_mb']:.0f} |",
                  flush=True)
        if a.no_inference:
            return
        print(f"\nInference (x4, {a.threads} threads):")
        print("| scan | output | uncertainty map | wall time (s) | peak resident (MB) | peak anonymous (MB) |")
        print("|---|---|---|---|---|---|")
        large = work / "large.nii.gz"
        reps = [-(-n // s) for n, s in zip(a.large, SHAPE)]
        tiled = np.tile(subject(lr, 0), reps)[:a.large[0], :a.large[1], :a.large[2]]
        nib.save(nib.Nifti1Image(np.ascontiguousarray(tiled), affine), large)
        for scan, shape in ((images[0], SHAPE), (str(large), a.large)):
            for uncertainty in (False, True):
                extra = ["--uncertainty", str(work / "spread.nii.gz")] if uncertainty else []
                m = measured(thinslice("infer", "--model", str(model), scan, str(work / "out.nii.gz"), *extra,
                                       "--threads", str(a.threads), "--device", "cpu"))
                print(f"| {shape_text(shape)} | {shape_text(output_shape(shape, 2, 4))} | "
                      f"{'yes' if uncertainty else 'no'} | {m['seconds']:.0f} | {m['rss_mb']:.0f} | "
                      f"{m['anon_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
