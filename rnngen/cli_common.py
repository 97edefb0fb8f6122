"""What the commands share: the Typer app, the choices and options used by several commands, the
checks that turn a bad value into a usage error (exit 2), and the wrapper that turns rnngen's own
errors into one line (exit 1). torch is never imported here, so that `rnngen --help` answers at once."""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from rnngen.errors import RnngenError, UsageError

app = typer.Typer(
    name="rnngen",
    help="Train character-level and MIDI recurrent networks (LSTM, GRU, RNN), and sample from them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    """--version: the installed package's version, read from its metadata (torch is not imported)."""
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("rnngen")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from rnngen import __version__ as number
    typer.echo(f"rnngen {number}")
    raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print rnngen's version and exit.")] = False,
) -> None:
    pass


class Cell(str, Enum):
    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"


class Kind(str, Enum):
    auto = "auto"
    text = "text"
    midi = "midi"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class StepPrecision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    int8 = "int8"


class Format(str, Enum):
    text = "text"
    jsonl = "jsonl"


# Options shared by several commands.
def _check_device(value: str) -> str:
    """A device that is unknown or missing is a usage error (exit 2), found before any work starts."""
    from rnngen.device import resolve_device

    try:
        resolve_device(value)
    except RnngenError as e:
        raise typer.BadParameter(str(e)) from None
    return value


DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", callback=_check_device)]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", "-s", help="Random seed: same seed, same result.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace output files that are already there; without it, a command refuses to.")]
SoundfontOpt = Annotated[Optional[str], typer.Option(
    help="A General MIDI SoundFont (.sf2/.sf3). (default: $RNNGEN_SOUNDFONT, else the one the audio extra ships)",
    show_default=False)]
TagOpt = Annotated[Optional[list[str]], typer.Option(
    help="A tagged model: generate in this style. Repeatable: the tags take the batch's samples in turn "
         "(-b 4 --tag a --tag b: a, b, a, b). (default: each sample's tag drawn by its share of the training data)",
    show_default=False)]


def err(message: str) -> None:
    from rich.markup import escape

    from rnngen.report import stderr_console

    stderr_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def friendly(command):
    """Turn rnngen's own errors into one line on stderr and exit 1; a closed stdout ends quietly."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RnngenError as e:
            err(str(e))
            raise typer.Exit(2 if isinstance(e, UsageError) else 1) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            err("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _silence_stdout() -> None:
    """After a reader closed the pipe, point stdout at devnull so the exit-time flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _unescape(value):
    """A callback: backslash escapes in an option's value (or each of a repeated option's values)."""
    if value is None:
        return None
    return [unescape(v) for v in value] if isinstance(value, list) else unescape(value)


def unescape(text: str) -> str:
    r"""Backslash escapes typed on a command line (\n, \t, \\) become the characters."""
    out, i = [], 0
    table = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "0": "\0"}
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _check(test, rule: str):
    """A callback that refuses a value failing `test` (exit 2, naming the option and the rule)."""
    def callback(value):
        if value is not None and not test(value):
            raise typer.BadParameter(f"must be {rule}, not {value:g}")
        return value

    return callback


positive = _check(lambda v: v > 0, "above 0")
at_least_one = _check(lambda v: v >= 1, "at least 1")
non_negative = _check(lambda v: v >= 0, "at least 0")
rate = _check(lambda v: 0 <= v < 1, "in [0, 1)")
share = _check(lambda v: 0 < v < 1, "between 0 and 1")


def _parts_option(value: Optional[str]) -> Optional[str]:
    from rnngen.midi.parts import parts_setting  # the rule lives beside the part table

    try:
        return parts_setting(value)
    except RnngenError as e:
        raise typer.BadParameter(str(e)) from None


def _seconds(value: Optional[str]) -> Optional[float]:
    """--max-time as seconds."""
    from rnngen.config import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return positive(seconds)


def _plain(params: dict) -> dict:
    """The parsed parameters, with choices as their plain values."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in params.items()}
