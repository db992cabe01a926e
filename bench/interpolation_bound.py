"""What an interpolator of thick slices can reach at best: ch2 (1 mm) blurred along z with a
Gaussian slice profile of FWHM 2, 4 and 6 mm (the ch2-z2/-z4/-z6 protocols) and scored against
itself as the benchmark scores methods (PSNR over the truth's foreground). A method that only
interpolates the thick slices gives back at best this blurred truth.

    python bench/interpolation_bound.py resources/ch2.nii.gz
"""

import sys

import nibabel as nib
import numpy as np

from thinslice.degrade import blur
from thinslice.metrics import TRUTH_FRACTION, psnr
from thinslice.normalize import above_fraction


def main(path: str) -> None:
    truth = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    print("| slice profile FWHM (mm) | PSNR of the blurred truth (dB) |")
    print("|---|---|")
    for fwhm in (2.0, 4.0, 6.0):
        blurred = blur(truth, 2, "gaussian", fwhm, 1.0)   # the simulated acquisition's profile
        print(f"| {fwhm:g} | {psnr(blurred, truth, above_fraction(truth, TRUTH_FRACTION)):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
