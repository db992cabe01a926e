"""Problems a user can fix, the one-line message each gets, and the exit statuses."""

from __future__ import annotations

import errno

# Exit statuses of the `thinslice` command (documented in the README).
OK = 0
INTERNAL_ERROR = 1   # a bug: the traceback is printed (or written to the --log file)
USAGE_ERROR = 2      # bad command line (argparse's own status)
INPUT_ERROR = 3      # bad input data or settings: ThinsliceError
FILE_ERROR = 4       # a file or folder cannot be read or written: disk full, read-only, permissions


class ThinsliceError(Exception):
    """Bad input or configuration. The message names the file or key and the fix."""


_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it, or write the results to another disk",
    errno.EDQUOT: "the disk quota is used up: free space, or write the results elsewhere",
    errno.EROFS: "the file system is read-only: write the results to a writable folder",
    errno.EACCES: "permission denied: make the folder writable for this user, or choose another",
    errno.EPERM: "operation not permitted: make the folder writable for this user, or choose another",
    errno.ENOTDIR: "a file stands where a folder is needed: move or rename that file",
    errno.EISDIR: "a folder stands where a file is needed: move or rename that folder",
    errno.EEXIST: "a file stands where a folder is needed: move or rename that file",
    errno.ENOENT: "no such file or folder: check the path",
}


def file_error_message(exc: OSError) -> str:
    """One line for a failed file operation: the path, what happened and the fix."""
    where = f"{exc.filename}: " if exc.filename else ""
    fix = _FIXES.get(exc.errno)
    what = exc.strerror or str(exc)
    return f"{where}{what}" + (f" ({fix})" if fix else "")
