"""thinslice: reduce the slice spacing of MR scans without high-resolution ground truth."""

__version__ = "0.1.0"
