"""thinslice: reduce the slice spacing of MR scans without high-resolution ground truth.

`thinslice.upsample(image, model=...)` upsamples one scan from Python (see thinslice.api);
the workflow and the `thinslice` command line do the rest.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # imported on first use: `python -m thinslice` and the workflow's steps do not pay for them
    if name == "upsample":
        from .api import upsample

        return upsample
    if name == "ThinsliceError":
        from .errors import ThinsliceError

        return ThinsliceError
    raise AttributeError(f"module 'thinslice' has no attribute {name!r}")
