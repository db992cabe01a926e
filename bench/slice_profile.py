"""The slice-profile estimate against the profile a scan was simulated with: ch2 (1 mm) blurred
with a Gaussian of FWHM 2, 4 and 6 mm along each axis and sampled every 4 mm.

    python bench/slice_profile.py resources/ch2.nii.gz     (make bench-profile)
"""

import sys

import nibabel as nib
import numpy as np

from thinslice.degrade import degrade
from thinslice.normalize import foreground_mask
from thinslice.slice_profile import estimate_fwhm

FWHMS = (2.0, 4.0, 6.0)


def main(path: str) -> None:
    hr = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    print("| slice axis | " + " | ".join(f"FWHM {f:g} mm" for f in FWHMS) + " |")
    print("|---|" + "---|" * len(FWHMS))
    for axis in (2, 0, 1):
        spacings = [1.0, 1.0, 1.0]
        spacings[axis] = 4.0
        found = []
        for fwhm in FWHMS:
            lr = degrade(hr, axis, 4, "gaussian", fwhm, 1.0)
            found.append(estimate_fwhm(lr, foreground_mask(lr), axis, spacings))
        print(f"| {axis} | " + " | ".join("-" if f is None else f"{f:.2f}" for f in found) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
