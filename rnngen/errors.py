"""The one exception type that reaches the user as a sentence instead of a traceback."""


class RnngenError(Exception):
    """A failure the user can act on; the CLI prints it on one line and exits 1."""


class UsageError(RnngenError):
    """A command line that cannot work, found only once a file was read (e.g. a tag the model does
    not have): one line, and exit 2 like the usage errors the parser finds."""


def install_hint(extra: str) -> str:
    """How to install an optional extra: from the package index, or in a source checkout."""
    return f'pip install "rnngen[{extra}]" (or pip install -e ".[{extra}]" in a checkout)'


def first_line(e: BaseException, width: int = 120) -> str:
    """What a library's exception says, cut to one line: the part of it worth showing a user."""
    lines = str(e).strip().splitlines()
    return lines[0][:width] if lines else type(e).__name__
