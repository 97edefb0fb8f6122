"""`rnngen render` and `rnngen plot`: hear MIDI through a General MIDI SoundFont, and see pieces as piano
rolls and training runs as loss curves. They need the `audio` and `plot` extras, which the commands
name when they are missing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rnngen.cli_common import ForceOpt, SoundfontOpt, app, friendly

@app.command()
@friendly
def render(
    pieces: Annotated[list[Path], typer.Argument(help="MIDI files to render.", show_default=False)],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="A .wav or .flac file (one piece), or a folder. (default: beside each piece, as .wav)", show_default=False)] = None,
    soundfont: SoundfontOpt = None,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No messages on stderr.")] = False,
) -> None:
    """Render MIDI files to audio (.wav or .flac) with a General MIDI SoundFont."""
    from rnngen.audio import render_file

    targets = _audio_targets(pieces, out, force)
    for piece, target in zip(pieces, targets):
        audio = render_file(piece, target, soundfont)
        if not quiet:
            typer.echo(f"wrote {target}: {audio.seconds:.1f} s of audio", err=True)


def _audio_targets(pieces: list[Path], out: str | None, force: bool) -> list[Path]:
    from rnngen.audio import FORMATS
    from rnngen.data import writable_file

    if out is not None and not out.endswith(("/", "\\")) and not Path(out).is_dir():
        if len(pieces) > 1:
            raise typer.BadParameter("several pieces need a folder to go to (end it with /)", param_hint="--out")
        targets = [Path(out)]
    else:
        folder = Path(out) if out is not None else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        targets = [(folder or p.parent) / f"{p.stem}.wav" for p in pieces]
    if len(set(targets)) < len(targets):
        raise typer.BadParameter("two pieces have the same name and would go to one file; render them "
                                 "to different folders", param_hint="--out")
    for target in targets:
        if target.suffix.lower() not in FORMATS:
            raise typer.BadParameter(f"{target} is not a .wav or .flac file", param_hint="--out")
        writable_file(target, "--out", force)
    return targets


@app.command()
@friendly
def plot(
    files: Annotated[list[Path], typer.Argument(help="MIDI files (piano rolls), or --log files of training runs (loss curves).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The picture: .png, .svg or .pdf.")],
    force: ForceOpt = False,
) -> None:
    """Draw MIDI files as piano rolls, or training logs (rnngen train --log) as loss curves."""
    from rnngen import plot as drawing
    from rnngen.data import writable_file

    writable_file(out, "--out", force)

    logs = [f.suffix.lower() in (".jsonl", ".json", ".log") for f in files]
    if any(logs) and not all(logs):
        raise typer.BadParameter("give MIDI files or training logs, not both", param_hint="FILES")
    path = drawing.loss_curves(files, out) if all(logs) else drawing.piano_roll(files, out)
    typer.echo(f"wrote {path}", err=True)
