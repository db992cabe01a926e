"""The slice-profile estimate against the profile a scan was simulated with: ch2 (1 mm) blurred
with a Gaussian of FWHM 1/2, 1 and 3/2 of the slice spacing along each axis and sampled every
4 mm (46 to 55 slices) and every 8 mm (23 to 28 slices: mostly too few for the 16-sample
windows, so the 8-sample ones).

    python bench/slice_profile.py resources/ch2.nii.gz     (make bench-profile)
"""

import sys

import nibabel as nib
import numpy as np

from thinslice.degrade import degrade
from thinslice.normalize import foreground_mask
from thinslice.slice_profile import estimate_fwhm

RELATIVE_FWHMS = (0.5, 1.0, 1.5)
SPACINGS = (4, 8)


def main(path: str) -> None:
    hr = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    print("| slice axis | spacing (mm) | " + " | ".join(f"FWHM {f:g} x spacing" for f in RELATIVE_FWHMS) + " |")
    print("|---|---|" + "---|" * len(RELATIVE_FWHMS))
    for spacing in SPACINGS:
        for axis in (2, 0, 1):
            spacings = [1.0, 1.0, 1.0]
            spacings[axis] = float(spacing)
            found = []
            for fwhm in RELATIVE_FWHMS:
                lr = degrade(hr, axis, spacing, "gaussian", fwhm * spacing, 1.0)
                found.append(estimate_fwhm(lr, foreground_mask(lr), axis, spacings))
            print(f"| {axis} | {spacing} | " + " | ".join("-" if f is None else f"{f:.2f}" for f in found) + " |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
