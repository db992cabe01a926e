"""Training throughput alone and beside one busy process (make bench-contention).

Trains `thinslice train-sr --source self` for a few hundred steps on a prepared scan,
first alone, then beside `python -c 'while True: pass'`, at each thread count asked for,
and prints a Markdown table. On a machine with c cores, a busy neighbour takes 1/c of them:
training beside it should be at most c/(c-1) slower, never several times slower.

    python bench/contention.py results/ch2-z4/input/ch2.nii.gz results/ch2-z4/input/ch2.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_seconds(image: str, geometry: str, steps: int, threads: int, busy: bool) -> float:
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "settings.json").write_text(json.dumps({"steps": steps}))
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "thinslice", "train-sr", "--source", "self",
                            "--images", image, "--geometries", geometry,
                            "--settings", str(t / "settings.json"), "--threads", str(threads),
                            "--checkpoint", str(t / "sr.ckpt"), "--loss-csv", str(t / "loss.csv"),
                            "--out", str(t / "sr.pt")], check=True, stderr=subprocess.DEVNULL)
            return time.perf_counter() - start
    finally:
        if neighbour:
            neighbour.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image", help="a prepared LR volume (results/<run>/input/<subject>.nii.gz)")
    p.add_argument("geometry", help="its geometry record")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    a = p.parse_args()
    print("| threads | alone (s) | beside a busy process (s) | slowdown | steps/s alone | steps/s beside |")
    print("|---|---|---|---|---|---|")
    for n in a.threads:
        alone = train_seconds(a.image, a.geometry, a.steps, n, busy=False)
        beside = train_seconds(a.image, a.geometry, a.steps, n, busy=True)
        print(f"| {n} | {alone:.1f} | {beside:.1f} | {beside / alone:.2f}x | {a.steps / alone:.1f} "
              f"| {a.steps / beside:.1f} |", flush=True)


if __name__ == "__main__":
    main()
