"""Pictures: piano rolls of MIDI files and loss curves of training runs, as PNG, SVG or PDF files.

matplotlib comes from the `plot` extra and is imported only when a picture is drawn, so
`import rnngen.plot` works on a plain install. Figures are built as `matplotlib.figure.Figure`
objects on an Agg canvas and never through pyplot: no window, no global figure state, no
backend to choose, whatever MPLBACKEND or the display say.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rnngen.errors import RnngenError, install_hint

INSTALL_HINT = f"plot needs the optional packages: {install_hint('plot')}"
FORMATS = (".png", ".svg", ".pdf")
LN2 = math.log(2)
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def _matplotlib():
    """matplotlib's Figure and Agg canvas, or the one line that says how to install them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RnngenError(INSTALL_HINT) from None
    return Figure, FigureCanvasAgg


def require() -> None:
    """Fail now, in one line, if pictures cannot be drawn later."""
    _matplotlib()


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise RnngenError(f"cannot draw {out.suffix or 'a file without an extension'}: "
                          f"name the picture .png, .svg or .pdf")
    return out


def _save(fig, canvas_type, out: Path) -> Path:
    canvas_type(fig)  # attaches the Agg canvas to the figure
    try:
        fig.savefig(out, dpi=120)
    except OSError as e:
        raise RnngenError(f"cannot write {out}: {e.strerror or e}") from None
    return out


# --------------------------------------------------------------------------------------------------
# piano rolls


@dataclass
class Part:
    """The notes of one (track, channel) pair, in beats."""

    name: str
    starts: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    pitches: list[int] = field(default_factory=list)


@dataclass
class Roll:
    """What a piano roll shows of one file."""

    title: str
    parts: list[Part]
    beats: float  # the end of the last note
    bar_beats: float | None  # a bar's length from the first time signature; None: no bar lines
    bar_start: float  # where that time signature starts counting bars


def read_roll(source: str | Path | bytes, title: str | None = None) -> Roll:
    """A MIDI file as rnngen reads it with parts and drums (`midi.files.read_midi`): one part per
    track, or per channel of a track that has several, named after its track where it has a name."""
    from rnngen.midi.codec import STEPS_PER_QUARTER
    from rnngen.midi.files import MidiError, read_midi, time_signature

    if isinstance(source, (bytes, bytearray)):
        data, title = bytes(source), title or "MIDI"
    else:
        title = title or Path(source).name
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise RnngenError(f"cannot read {source}: {e.strerror or e}") from None
    try:
        signature = time_signature(data)
    except MidiError as e:
        raise RnngenError(f"cannot draw {title}: it is not a readable MIDI file ({e})") from None
    try:
        piece = read_midi(data, drums=True, parts=True)
    except MidiError:  # readable, but no notes: an empty panel
        return Roll(title, [], 0.0, None, 0.0)
    parts = [Part(_label(i, part, piece.parts)) for i, part in enumerate(piece.parts)]
    for note in piece.notes:
        part = parts[note.part]
        part.starts.append(note.onset / STEPS_PER_QUARTER)
        part.lengths.append(note.dur / STEPS_PER_QUARTER)
        part.pitches.append(note.pitch)
    end = max((n.onset + n.dur for n in piece.notes), default=0) / STEPS_PER_QUARTER
    if signature is None:
        return Roll(title, parts, end, None, 0.0)
    start, numerator, denominator = signature
    return Roll(title, parts, end, numerator * 4 / denominator, start)


def _label(index: int, part, every: list) -> str:
    """The track's name where it tells the part apart, else 'part N'; drums say so."""
    names = [p.name for p in every]
    label = part.name if part.name and names.count(part.name) == 1 else f"part {index + 1}"
    return f"{label} (drums)" if part.drums else label


def note_name(pitch: int) -> str:
    """MIDI pitch as a name with octave, middle C (60) being C4."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def piano_roll(midi_files: list[str | Path | bytes], out: str | Path) -> Path:
    """Draw one piano roll per file, stacked as subplots of one figure: time in beats across, pitch
    up, one colour per part, bar lines from the file's first time signature (none: no bar lines)."""
    out = _check_out(out)
    if not midi_files:
        raise RnngenError("no MIDI files to draw")
    rolls = [read_roll(f) for f in midi_files]  # every file read before drawing, so errors come first
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=(12, 3.2 * len(rolls) + 0.4), layout="constrained")
    axes = fig.subplots(len(rolls), 1, squeeze=False)[:, 0]
    for ax, roll in zip(axes, rolls):
        _draw_roll(ax, roll)
    return _save(fig, Canvas, out)


def _draw_roll(ax, roll: Roll) -> None:
    ax.set_title(roll.title, loc="left", fontsize=10)
    ax.set_xlabel("beats")
    ax.set_ylabel("pitch")
    pitches = [p for part in roll.parts for p in part.pitches]
    if not pitches:
        ax.text(0.5, 0.5, "no notes", transform=ax.transAxes, ha="center", va="center")
        ax.set_yticks([])
        return
    cycle = _colours()
    for i, part in enumerate(roll.parts):
        ax.barh(part.pitches, part.lengths, left=part.starts, height=0.8, align="center",
                color=cycle[i % len(cycle)], edgecolor="none", label=part.name)
    low, high = min(pitches) - 2, max(pitches) + 2
    ax.set_ylim(low - 0.5, high + 0.5)
    ax.set_xlim(0, max(roll.beats, 1.0))
    cs = [p for p in range(low, high + 1) if p % 12 == 0] or [low + (high - low) // 2]
    ax.set_yticks(cs, [note_name(p) for p in cs])
    if roll.bar_beats:
        bars = []
        beat = roll.bar_start
        while beat <= roll.beats:
            bars.append(beat)
            beat += roll.bar_beats
        ax.vlines(bars, low - 0.5, high + 0.5, colors="0.75", linewidths=0.6, zorder=0)
    ax.legend(loc="upper right", fontsize=7, ncols=min(len(roll.parts), 6), frameon=False)


def _colours() -> list:
    """18 distinct colours: a part keeps its colour across subplots when files list parts alike."""
    from matplotlib import colormaps

    return list(colormaps["tab10"].colors) + list(colormaps["Dark2"].colors)


# --------------------------------------------------------------------------------------------------
# loss curves


@dataclass
class Run:
    """One `rnngen train --log` file: training loss at every logged step, validation where measured."""

    name: str
    steps: list[int]
    elapsed: list[float]  # seconds
    loss: list[float]  # nats per token
    val_steps: list[int]
    val_elapsed: list[float]
    val_loss: list[float]


def read_log(path: str | Path) -> Run:
    """A JSON-lines log as written by `rnngen train --log`; a damaged one is one RnngenError line.
    Blank lines are skipped, so a log cut off by Ctrl-C mid-line still reads up to its last record."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RnngenError(f"cannot read the log {path}: {getattr(e, 'strerror', None) or e}") from None
    run = Run(path.stem, [], [], [], [], [], [])
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step, elapsed, loss = int(record["step"]), float(record.get("elapsed", math.nan)), float(record["loss"])
            val = record.get("val_loss")
            val = None if val is None else float(val)
        except (ValueError, TypeError, KeyError, AttributeError):
            if number == len(lines):  # the last line of a run that was stopped while writing it
                break
            raise RnngenError(f"{path} line {number} is not a training record "
                              f"(a JSON object with step and loss, as `rnngen train --log` writes)") from None
        run.steps.append(step)
        run.elapsed.append(elapsed)
        run.loss.append(loss)
        if val is not None:
            run.val_steps.append(step)
            run.val_elapsed.append(elapsed)
            run.val_loss.append(val)
    if not run.steps:
        raise RnngenError(f"{path} has no training records")
    return run


def loss_curves(logs: list[str | Path], out: str | Path) -> Path:
    """Training (solid) and validation (dashed, dots) loss of one or more runs, against steps on the
    left and elapsed time on the right, in nats per token with bits on a second axis; the legend
    names each run by its log's file stem."""
    out = _check_out(out)
    if not logs:
        raise RnngenError("no training logs to draw")
    runs = [read_log(p) for p in logs]
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    longest = max((t for r in runs for t in r.elapsed if t == t), default=0.0)  # t == t: not NaN
    minutes = longest > 300
    scale = 60.0 if minutes else 1.0
    colours = _colours()
    for i, run in enumerate(runs):
        colour = colours[i % len(colours)]
        by_step.plot(run.steps, run.loss, color=colour, linewidth=1.2, label=f"{run.name} train")
        by_time.plot([t / scale for t in run.elapsed], run.loss, color=colour, linewidth=1.2)
        if run.val_loss:
            by_step.plot(run.val_steps, run.val_loss, color=colour, linestyle="--", marker="o", markersize=3,
                         label=f"{run.name} validation")
            by_time.plot([t / scale for t in run.val_elapsed], run.val_loss, color=colour, linestyle="--",
                         marker="o", markersize=3)
    by_step.set_xlabel("step")
    by_time.set_xlabel("elapsed (minutes)" if minutes else "elapsed (seconds)")
    by_step.set_ylabel("loss (nats per token)")
    by_step.set_title("loss over steps", loc="left", fontsize=10)
    by_time.set_title("loss over time", loc="left", fontsize=10)
    for ax in (by_step, by_time):
        ax.grid(True, color="0.9")
    bits = by_time.secondary_yaxis("right", functions=(lambda n: n / LN2, lambda b: b * LN2))
    bits.set_ylabel("bits per token")
    by_step.legend(fontsize=8, frameon=False)
    return _save(fig, Canvas, out)
