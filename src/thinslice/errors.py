"""One exception type for problems a user can fix; the CLI prints it as one line."""


class ThinsliceError(Exception):
    """Bad input or configuration. The message names the file or key and the fix."""
