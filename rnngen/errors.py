"""The one exception type that reaches the user as a sentence instead of a traceback."""


class RnngenError(Exception):
    """A failure the user can act on; the CLI prints it on one line and exits 1."""
