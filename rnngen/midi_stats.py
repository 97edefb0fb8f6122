"""Musical statistics of MIDI pieces, for `rnngen stats` and benchmarks/midi_quality.py.

Everything is measured on the grid the codec uses (notes as `Note` tuples), so generated pieces
and a training corpus are compared on the same footing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from rnngen.midi.codec import STEPS_PER_QUARTER, Note

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Natural minor uses the notes of its relative major, so major and harmonic minor cover both modes.
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 11)}


def note_name(pitch: int) -> str:
    return f"{PITCH_CLASSES[pitch % 12]}{pitch // 12 - 1}"


def best_scale(notes: Sequence[Note]) -> tuple[str, float]:
    """The major or (harmonic) minor scale holding the most notes: ("G major", share of notes)."""
    counts = pitch_class_counts(notes)
    total = sum(counts) or 1
    best = ("C major", -1)
    for mode, steps in SCALES.items():
        for tonic in range(12):
            inside = sum(counts[(tonic + s) % 12] for s in steps)
            if inside > best[1]:
                best = (f"{PITCH_CLASSES[tonic]} {mode}", inside)
    return best[0], best[1] / total


def pitch_class_counts(notes: Sequence[Note]) -> list[int]:
    counts = [0] * 12
    for n in notes:
        counts[n.pitch % 12] += 1
    return counts


def sounding(notes: Sequence[Note]) -> tuple[int, int]:
    """(note-steps, steps where at least one note sounds): their ratio is the mean polyphony."""
    if not notes:
        return 0, 0
    change = [0] * (max(n.onset + n.dur for n in notes) + 1)
    for n in notes:
        change[n.onset] += 1
        change[n.onset + n.dur] -= 1
    counts = list(accumulate(change))
    return sum(counts), sum(1 for c in counts if c > 0)


@dataclass
class Stats:
    """Statistics of a set of pieces. Per-piece figures (range, scale share) are means over pieces;
    rates (notes per beat, polyphony) and the pitch-class histogram pool every note."""

    files: int = 0
    notes: int = 0
    beats: float = 0.0
    lowest: int = 127
    highest: int = 0
    mean_low: float = 0.0
    mean_high: float = 0.0
    notes_per_beat: float = 0.0
    polyphony: float = 0.0
    scale_share: float = 0.0
    pitch_classes: list[float] = field(default_factory=lambda: [0.0] * 12)  # shares, summing to 1
    key: str = ""  # the best-fitting scale, when there is one piece


def measure(pieces: Sequence[Sequence[Note]], steps_per_quarter: int = STEPS_PER_QUARTER) -> Stats:
    pieces = [p for p in pieces if p]
    s = Stats(files=len(pieces))
    if not pieces:
        return s
    counts, note_steps, busy_steps, shares = [0] * 12, 0, 0, []
    for notes in pieces:
        pitches = [n.pitch for n in notes]
        s.notes += len(notes)
        s.beats += max(n.onset + n.dur for n in notes) / steps_per_quarter
        s.lowest, s.highest = min(s.lowest, min(pitches)), max(s.highest, max(pitches))
        s.mean_low += min(pitches) / len(pieces)
        s.mean_high += max(pitches) / len(pieces)
        for pc, c in enumerate(pitch_class_counts(notes)):
            counts[pc] += c
        a, b = sounding(notes)
        note_steps, busy_steps = note_steps + a, busy_steps + b
        key, share = best_scale(notes)
        shares.append(share)
    s.notes_per_beat = s.notes / s.beats
    s.polyphony = note_steps / max(1, busy_steps)
    s.scale_share = sum(shares) / len(shares)
    s.pitch_classes = [c / s.notes for c in counts]
    s.key = key if len(pieces) == 1 else ""
    return s


def histogram_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Total variation distance between two pitch-class histograms: 0 same, 1 disjoint."""
    return 0.5 * sum(abs(x - y) for x, y in zip(a, b))


def histogram_line(shares: Sequence[float]) -> str:
    return "  ".join(f"{name} {100 * x:.1f}%" for name, x in zip(PITCH_CLASSES, shares))


def report(s: Stats, given: int) -> str:
    """`rnngen stats` output: one figure per line."""
    lines = [
        f"files decoded    {s.files} of {given}",
        f"notes            {s.notes:,} in {s.beats:,.1f} beats",
        f"pitch range      {note_name(s.lowest)}-{note_name(s.highest)} ({s.lowest}-{s.highest}); "
        f"per file {s.mean_low:.1f}-{s.mean_high:.1f} on average",
        f"notes per beat   {s.notes_per_beat:.2f}",
        f"polyphony        {s.polyphony:.2f} notes sounding at once (mean over time with sound)",
        f"in scale         {100 * s.scale_share:.1f}% of notes in the best-fitting major/minor scale"
        + (f" ({s.key})" if s.key else " (mean over files)"),
        f"pitch classes    {histogram_line(s.pitch_classes)}",
    ]
    return "\n".join(lines)


@dataclass
class PartStats:
    """One part (by name, else program) over a set of pieces."""

    label: str
    files: int = 0
    notes: int = 0
    lowest: int = 127
    highest: int = 0
    pitch_sum: int = 0

    @property
    def mean_pitch(self) -> float:
        return self.pitch_sum / max(1, self.notes)


def measure_parts(pieces) -> list[PartStats]:
    """Per part, pooled over pieces (read with parts: `.notes` and `.parts`) by the part's label:
    the chorales' Soprano of every file is one row. Highest mean pitch first."""
    rows: dict[str, PartStats] = {}
    for piece in pieces:
        seen = set()
        for n in piece.notes:
            label = piece.parts[n.part].label()
            row = rows.setdefault(label, PartStats(label))
            row.notes, row.pitch_sum = row.notes + 1, row.pitch_sum + n.pitch
            row.lowest, row.highest = min(row.lowest, n.pitch), max(row.highest, n.pitch)
            seen.add(label)
        for label in seen:
            rows[label].files += 1
    return sorted(rows.values(), key=lambda r: -r.mean_pitch)


def parts_report(parts: Sequence[PartStats]) -> str:
    """The per-part lines of `rnngen stats`."""
    width = max([len(p.label) for p in parts] + [4])
    lines = [f"parts            {len(parts)}, by mean pitch:"]
    for p in parts:
        lines.append(f"  {p.label:<{width}}  {p.notes:>7,} notes in {p.files} file{'s' * (p.files != 1)}, "
                     f"{note_name(p.lowest)}-{note_name(p.highest)} ({p.lowest}-{p.highest}), "
                     f"mean pitch {p.mean_pitch:.1f}")
    return "\n".join(lines)
