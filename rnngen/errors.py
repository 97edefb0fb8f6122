"""The one exception type that reaches the user as a sentence instead of a traceback."""


class RnngenError(Exception):
    """A failure the user can act on; the CLI prints it on one line and exits 1."""


def first_line(e: BaseException, width: int = 120) -> str:
    """What a library's exception says, cut to one line: the part of it worth showing a user."""
    lines = str(e).strip().splitlines()
    return lines[0][:width] if lines else type(e).__name__
