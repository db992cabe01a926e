"""Which frequencies along the slice axis a method restores: for each method of a benchmark run,
the share of the ground truth's power its output gives back (the transfer: the real part of the
output's cross-spectrum with the truth over the truth's power; 1 is all of it, 0 none) and its
error's power over the truth's, in bands of the thick slices' Nyquist frequency (half a cycle per
slice spacing). Below that frequency the slices hold the anatomy, blurred by their profile;
above it they hold none of it, and what a method restores there comes from what it has learned.
Lines along the slice axis with at least 90% of their voxels in the truth's foreground are
windowed (Hann) and their spectra summed. The outputs must lie on the truth's grid, as the
benchmark's do (at ratios that are not integers too: their truth is on the output grid).

    python bench/transfer.py results/ch2-z6 cubic sr_self sr_supervised     (after make bench)
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from thinslice.geometry import Geometry
from thinslice.metrics import TRUTH_FRACTION
from thinslice.normalize import above_fraction

SUBJECT = "ch2"                          # the benchmark runs' one subject
BANDS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)   # band edges in multiples of the slices' Nyquist frequency


def spectra(volume: np.ndarray, axis: int, lines: np.ndarray) -> np.ndarray:
    """The Fourier transforms of the selected lines along `axis`, mean removed, Hann windowed."""
    rows = np.moveaxis(volume, axis, -1).reshape(-1, volume.shape[axis])[lines].astype(np.float64)
    rows -= rows.mean(axis=1, keepdims=True)
    return np.fft.rfft(rows * np.hanning(rows.shape[1]), axis=1)


def main(run: str, methods: list[str]) -> None:
    run = Path(run)
    geometry = Geometry.load(run / "input" / f"{SUBJECT}.json")
    axis, ratio = geometry.slice_axis, geometry.ratio   # slice spacing / output spacing
    truth = np.asarray(nib.load(run / "truth" / f"{SUBJECT}.nii.gz").dataobj, np.float32)
    outputs = {m: np.asarray(nib.load(run / m / f"{SUBJECT}.nii.gz").dataobj, np.float32) for m in methods}
    others = [a for a in range(3) if a != axis]
    for method, output in outputs.items():
        if [output.shape[a] for a in others] != [truth.shape[a] for a in others] or \
                abs(output.shape[axis] - truth.shape[axis]) >= ratio:
            sys.exit(f"{method}: output {output.shape} is not on the truth's grid {truth.shape}")
    n = min(v.shape[axis] for v in [truth, *outputs.values()])
    truth, *cropped = (np.take(v, np.arange(n), axis=axis) for v in [truth, *outputs.values()])
    inside = np.moveaxis(above_fraction(truth, TRUTH_FRACTION), axis, -1).reshape(-1, n).mean(axis=1) >= 0.9
    reference = spectra(truth, axis, inside)
    power = np.abs(reference) ** 2
    # frequency of each bin in multiples of the slices' Nyquist, 1 / (2 * ratio) cycles per voxel
    nyquists = np.fft.rfftfreq(n) * 2 * ratio
    bands = [(lo, min(hi, ratio)) for lo, hi in zip(BANDS, BANDS[1:] + (float(ratio),)) if lo < ratio]
    print(f"{run.name}: {int(inside.sum())} lines along axis {axis}, transfer (error power / truth power)")
    print("| method | " + " | ".join(f"{lo:g}-{hi:g} x Nyquist" for lo, hi in bands) + " |")
    print("|---|" + "---|" * len(bands))
    for method, output in zip(methods, cropped):
        estimate = spectra(output, axis, inside)
        cells = []
        for lo, hi in bands:
            in_band = (nyquists > lo) & (nyquists <= hi)
            total = power[:, in_band].sum()
            transfer = (estimate[:, in_band] * reference[:, in_band].conj()).real.sum() / total
            error = (np.abs(estimate[:, in_band] - reference[:, in_band]) ** 2).sum() / total
            cells.append(f"{transfer:.2f} ({error:.2f})")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
