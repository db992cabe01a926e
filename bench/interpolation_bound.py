"""What interpolating thick slices can reach: ch2 (1 mm) blurred along z with a Gaussian slice
profile of FWHM 2, 4 and 6 mm (the ch2-z2/-z4/-z6 protocols), scored as the benchmark scores
methods (PSNR over the truth's foreground). A method that only interpolates the thick slices
gives back at best this blurred truth. Beside it: cubic interpolation of the simulated slices
(every FWHM-th plane of the blurred truth, as in the benchmark), and the same cubic volume with
the profile partly undone by a classical deconvolution (Landweber iterations of the known
profile along z, no learning): how much of a learned method's gain over cubic a linear
deblurring of the interpolated volume already gives.

    python bench/interpolation_bound.py resources/ch2.nii.gz
"""

import sys

import nibabel as nib
import numpy as np

from thinslice.degrade import blur
from thinslice.interpolate import upsample
from thinslice.metrics import TRUTH_FRACTION, psnr
from thinslice.normalize import above_fraction

DEBLUR_ITERATIONS = 5


def deblurred(data: np.ndarray, fwhm: float) -> np.ndarray:
    """Landweber iterations x <- x + B(y - Bx) from x = y, B the Gaussian profile along z: each
    frequency's gain moves from 1 towards the inverse of the profile's; few iterations leave
    those the profile nearly removes alone."""
    estimate = data.copy()
    for _ in range(DEBLUR_ITERATIONS):
        estimate += blur(data - blur(estimate, 2, "gaussian", fwhm, 1.0), 2, "gaussian", fwhm, 1.0)
    return estimate


def main(path: str) -> None:
    truth = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    print(f"| slice profile FWHM (mm) | blurred truth (dB) | cubic (dB) | cubic, deblurred ({DEBLUR_ITERATIONS} iterations) (dB) |")
    print("|---|---|---|---|")
    for fwhm in (2.0, 4.0, 6.0):
        blurred = blur(truth, 2, "gaussian", fwhm, 1.0)   # the simulated acquisition's profile
        r = int(fwhm)
        n = (truth.shape[2] - 1) // r * r + 1              # the planes the slices span
        fg = above_fraction(truth[..., :n], TRUTH_FRACTION)
        cubic = upsample(blurred[..., :n:r], 2, r, "cubic")
        scores = [psnr(v, truth[..., :n], fg) for v in (blurred[..., :n], cubic, deblurred(cubic, fwhm))]
        print(f"| {fwhm:g} | " + " | ".join(f"{s:.2f}" for s in scores) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
