"""A stand-in for ECLARE's `run-eclare` with its command line and its output convention.

Like ECLARE it takes the axis of largest voxel size as the slice axis, upsamples it by
r = slice spacing / finest in-plane spacing into r sub-slices that tile each LR slice
(first centre (r-1)/(2r) of a slice before the LR centre: the affine ECLARE writes), and
writes <name>_eclare.nii.gz into --out-dir. Its "super-resolution" is linear interpolation
of the LR slices at the sub-slice centres (extrapolated at both ends). With the variable
FAKE_ECLARE_ARGV set, it writes its arguments there as JSON; FAKE_ECLARE_FAIL makes it fail.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--in-fpath", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--relative-slice-thickness", type=float)
    p.add_argument("--relative-slice-profile-type", default="gaussian")
    p.add_argument("--n-patches", type=int, default=1000000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--gpu-id", type=int, default=-1)
    a = p.parse_args()
    if os.environ.get("FAKE_ECLARE_ARGV"):
        Path(os.environ["FAKE_ECLARE_ARGV"]).write_text(json.dumps(sys.argv[1:]))
    if os.environ.get("FAKE_ECLARE_FAIL"):
        print("fake run-eclare: failing on purpose", file=sys.stderr)
        return 3
    img = nib.load(a.in_fpath)
    lr = np.asarray(img.dataobj, dtype=np.float32)
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    axis = int(np.argmax(zooms))
    r = round(float(zooms[axis] / np.delete(zooms, axis).min()))
    n = lr.shape[axis]
    pos = (np.arange(n * r) + 0.5) / r - 0.5  # sub-slice centres in LR slice units
    lo = np.clip(np.floor(pos).astype(int), 0, n - 2)
    w = (pos - lo).reshape([-1 if d == axis else 1 for d in range(3)])
    hr = (1 - w) * np.take(lr, lo, axis=axis) + w * np.take(lr, lo + 1, axis=axis)
    affine = img.affine.copy()
    affine[:3, 3] -= affine[:3, axis] * (r - 1) / (2 * r)
    affine[:3, axis] /= r
    out = Path(a.out_dir) / Path(a.in_fpath).name.replace(".nii", "_eclare.nii")
    nib.save(nib.Nifti1Image(hr.astype(np.float32), affine), out)
    print(f"fake run-eclare: x{r} along axis {axis} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
