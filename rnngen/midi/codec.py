"""MIDI as a stream of note events: the MIDI codec, reading and writing .mid files, the corpus
loader, and grammar-masked sampling. The model, trainer and `generate()` are the text ones.

The representation is a single stream of tempo-relative events on a grid of 12 steps per quarter
note (so 16ths and 8th/16th triplets land on the grid; Magenta's performance/PerformanceRNN and
"Music Transformer" event vocabularies are the inspiration):

    BOS  [VEL_b] PITCH_p DUR_d ...  SHIFT_s  [VEL_b] PITCH_p DUR_d ...  EOS

- A note is `[VEL] PITCH DUR`. Every note carries its own duration, so no note can hang and
  overlapping notes of one pitch need no bookkeeping, unlike note-on/note-off vocabularies.
- Notes with no SHIFT between them start together (a chord). Inside a chord pitches rise strictly:
  that fixes one order for every chord, and at sampling time it forbids the same key twice at once.
- `DUR_d` / `SHIFT_s` hold 1..48 steps (a whole note in 4/4); a longer value is repeated tokens,
  the full 48s first (`DUR_48 DUR_12` is 60 steps). 48 keeps the vocabulary under 256 ids, so
  corpora are stored as one byte per event (see `compact_dtype`), and a chorale's longest common
  values (half, dotted half, whole notes) are still one token.
- `VEL_b` (8 bins) appears only when the velocity changes from the one in force (mezzo-forte,
  bin 5, at the start). Files with constant velocity therefore cost no VEL tokens at all.
- Time is counted in ticks and beats, never seconds: tempo and time-signature changes cannot move
  a note off the grid, and output files carry one tempo chosen at sampling time.
- Parts (rnngen.midi.parts): a codec with a table of P part roles has P more ids, `PART_k`, after
  EOS. A chord is written part by part in role order (lowest voice first), pitches rising within
  each part, which again fixes one spelling of every chord. Like VEL, `PART_k` is written only where
  it says something: where a note's part is not the one `RoleCursor` expects (the next part the
  piece has used, or of the ensemble, see there). So a one-part piece costs what it did before
  parts, and a four-part chorale pays for its parts only where a voice rests. A note is
  `[PART] [VEL] PITCH DUR`. A codec without a table (`--parts merge`, and every checkpoint from
  before parts) has exactly the ids and behaviour of the single stream above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from rnngen.errors import RnngenError
from rnngen.midi.parts import PartTable

STEPS_PER_QUARTER = 12
MAX_DUR = 48
MAX_SHIFT = 48
VELOCITY_BINS = 8
DEFAULT_VELOCITY = 88  # the velocity in force before any VEL token: mezzo-forte, bin 5 of 8

# Token categories, as `MidiCodec.category` holds them.
PITCH, DUR, SHIFT, VEL, BOS, EOS, PART = range(7)


class Note(NamedTuple):
    onset: int  # grid steps from the start of the piece
    pitch: int  # 0..127
    dur: int  # grid steps, at least 1
    velocity: int  # 1..127
    part: int = 0  # the part's role in the codec's table (or its index in a file's parts)


class MidiCodec:
    kind, unit = "midi", "event"

    def __init__(self, steps_per_quarter: int = STEPS_PER_QUARTER, max_dur: int = MAX_DUR,
                 max_shift: int = MAX_SHIFT, velocity_bins: int = VELOCITY_BINS, drums: bool = False,
                 parts: PartTable | None = None):
        for name, value in [("steps_per_quarter", steps_per_quarter), ("max_dur", max_dur),
                            ("max_shift", max_shift), ("velocity_bins", velocity_bins)]:
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
                raise RnngenError(f"the checkpoint's MIDI settings are damaged ({name} = {value!r})")
        self.steps_per_quarter, self.max_dur, self.max_shift = steps_per_quarter, max_dur, max_shift
        self.velocity_bins, self.drums, self.parts = velocity_bins, bool(drums), parts
        # Id layout: PITCH_0..127, DUR_1..max_dur, SHIFT_1..max_shift, VEL_0..bins-1, BOS, EOS, PART_0..P-1.
        self.dur0 = 128
        self.shift0 = self.dur0 + max_dur
        self.vel0 = self.shift0 + max_shift
        self.bos = self.vel0 + velocity_bins
        self.eos = self.bos + 1
        self.part0 = self.eos + 1
        self.num_parts = len(parts) if parts is not None else 0
        self.default_bin = self.velocity_bin(DEFAULT_VELOCITY)
        cats = [PITCH] * 128 + [DUR] * max_dur + [SHIFT] * max_shift + [VEL] * velocity_bins + [BOS, EOS] \
            + [PART] * self.num_parts
        vals = list(range(128)) + list(range(1, max_dur + 1)) + list(range(1, max_shift + 1)) \
            + list(range(velocity_bins)) + [0, 0] + list(range(self.num_parts))
        self.category = torch.tensor(cats)  # (V,) the kind of each id
        self.value = torch.tensor(vals)  # (V,) its pitch, steps or velocity bin
        self._cats, self._vals = cats, vals

    @property
    def vocab_size(self) -> int:
        return self.part0 + self.num_parts

    def to_dict(self) -> dict:
        d = {"type": "midi", "steps_per_quarter": self.steps_per_quarter, "max_dur": self.max_dur,
             "max_shift": self.max_shift, "velocity_bins": self.velocity_bins, "drums": self.drums}
        return d if self.parts is None else {**d, **self.parts.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> MidiCodec:
        """A checkpoint's codec; one from before parts (no "parts" key) is the single stream it was."""
        parts = PartTable.from_dict(d) if "parts" in d else None
        return cls(d.get("steps_per_quarter", STEPS_PER_QUARTER), d.get("max_dur", MAX_DUR),
                   d.get("max_shift", MAX_SHIFT), d.get("velocity_bins", VELOCITY_BINS), d.get("drums", False),
                   parts)

    def describe(self) -> str:
        drums = ", drums kept" if self.drums else ""
        parts = ""
        if self.parts is not None:
            ranges = self.parts.ranges or [None] * self.num_parts
            roles = [r.label() + (f" {span[0]}-{span[1]}" if span else "") for r, span in zip(self.parts.roles, ranges)]
            parts = f", {self.num_parts} parts ({', '.join(roles)})"
        return f"midi, {self.steps_per_quarter} steps per quarter, {self.vocab_size} events{drums}{parts}"

    def notes_of(self, piece, strict: bool = True) -> list[Note]:
        """A read piece's notes with each part replaced by its role (`PartTable.role_of`); parts
        with no role (strict, with named parts only) are left out. Without parts: one merged part."""
        if self.parts is None:
            return [n._replace(part=0) for n in piece.notes]
        roles = [self.parts.role_of(p, strict) for p in piece.parts]
        return [n._replace(part=roles[n.part]) for n in piece.notes if roles[n.part] is not None]

    def parts_setting(self) -> str:
        """The --parts value this codec was made with."""
        if self.parts is None:
            return "merge"
        return ",".join(self.parts.roles[i].name for i in self.parts.written_order()) if self.parts.named_only \
            else "tracks"

    def fixed_parts(self) -> frozenset[int]:
        """Roles that transposition leaves alone: drums, where a pitch is an instrument."""
        roles = self.parts.roles if self.parts is not None else []
        return frozenset(i for i, r in enumerate(roles) if r.drums)

    def cursor(self) -> RoleCursor:
        """A piece's expected parts at its start: every role of an ensemble, else none yet."""
        return RoleCursor(range(self.num_parts) if self.parts is not None and self.parts.ensemble else ())

    # -- velocity bins -------------------------------------------------------------------------

    def velocity_bin(self, velocity: int) -> int:
        return min(self.velocity_bins - 1, max(0, velocity) * self.velocity_bins // 128)

    def bin_velocity(self, b: int) -> int:
        """The middle of a bin, so that a decoded velocity falls back into its own bin."""
        return max(1, min(127, int((b + 0.5) * 128 / self.velocity_bins)))

    # -- tokens --------------------------------------------------------------------------------

    def token_name(self, token: int) -> str:
        cat, val = self._cats[token], self._vals[token]
        return ("PITCH", "DUR", "SHIFT", "VEL", "BOS", "EOS", "PART")[cat] + ("" if cat in (BOS, EOS) else f"_{val}")

    def _repeat(self, first: int, steps: int, most: int) -> list[int]:
        """`steps` as tokens of at most `most` each, the full ones first: 60 -> [48, 12]."""
        full, rest = divmod(steps, most)
        return [first + most - 1] * full + ([first + rest - 1] if rest else [])

    def encode(self, notes: Sequence[Note]) -> list[int]:
        """One piece as BOS ... EOS, from any notes (sorted and merged as `canonical` does)."""
        tokens, now, vel, roles = [self.bos], 0, self.default_bin, self.cursor()
        top = max(0, self.num_parts - 1)  # a codec without parts puts every note in part 0
        if any(n.part > top for n in notes):
            notes = [n._replace(part=min(n.part, top)) for n in notes]
        for note in canonical(notes):
            if note.onset > now:
                tokens += self._repeat(self.shift0, note.onset - now, self.max_shift)
                now = note.onset
                roles.new_onset()
            if note.part != roles.next():
                tokens.append(self.part0 + note.part)
            roles.played(note.part)
            b = self.velocity_bin(note.velocity)
            if b != vel:
                tokens.append(self.vel0 + b)
                vel = b
            tokens.append(note.pitch)
            tokens += self._repeat(self.dur0, note.dur, self.max_dur)
        tokens.append(self.eos)
        return tokens

    def decode(self, tokens: Sequence[int]) -> list[Note]:
        """The notes of one piece: up to its EOS (a leading BOS is skipped). Lenient, so that any
        token sequence decodes: an unfinished note at the end (PITCH with no DUR) is dropped."""
        notes: list[Note] = []
        now, vel, roles, part = 0, self.bin_velocity(self.default_bin), self.cursor(), None
        pitch, dur, role = None, 0, 0  # the note being read

        def finish() -> None:
            nonlocal pitch, dur
            if pitch is not None and dur > 0:
                notes.append(Note(now, pitch, dur, vel, role))
            pitch, dur = None, 0

        for i, token in enumerate(tokens):
            cat, val = self._cats[token], self._vals[token]
            if cat == DUR:
                if pitch is not None:
                    dur += val
                continue
            finish()
            if cat == PITCH:
                pitch, role, part = val, (roles.next() if part is None else part), None
                roles.played(role)
            elif cat == SHIFT:
                now += val
                roles.new_onset()
            elif cat == VEL:
                vel = self.bin_velocity(val)
            elif cat == PART:
                part = val
            elif cat == EOS or (cat == BOS and i > 0):
                break
        finish()
        return canonical(notes)


class RoleCursor:
    """The part a note plays when no PART token names it: inside a chord, the next part (in role
    order) that the piece has used so far, or the same part when there is none; at a new onset,
    the first part used. So a chord of the parts in play (the chorales' SATB) needs no PART token,
    and a one-part piece never needs one, as before parts; PART appears only where a note departs
    from that. For an ensemble (`started` every role) the parts count as used from the start: each
    chord begins in the lowest voice, so a piece that opens without its bass still expects the bass
    at the next chord, where a model would otherwise have to bring it back by a PART token. The
    grammar (rnngen.midi.grammar) keeps the same count, batched."""

    def __init__(self, started=()) -> None:
        self.used: set[int] = set(started)
        self.chord_part = -1  # the part of the last note at this onset; -1: none yet

    def next(self) -> int:
        later = [r for r in self.used if r > self.chord_part]
        return min(later) if later else max(self.chord_part, 0)

    def played(self, role: int) -> None:
        self.used.add(role)
        self.chord_part = role

    def new_onset(self) -> None:
        self.chord_part = -1


def canonical(notes: Sequence[Note]) -> list[Note]:
    """Notes in (onset, part, pitch) order, one per (onset, part, pitch): the longest (and loudest) wins.

    Merging all channels onto one instrument makes a doubled voice (a horn playing the soprano
    line, two voices in unison) into the same key struck twice at once, which one instrument
    cannot play; the encoder keeps one of them. Two parts in unison stay two notes.
    """
    best: dict[tuple[int, int, int], Note] = {}
    for n in notes:
        key = (n.onset, n.part, n.pitch)
        old = best.get(key)
        if old is None or (n.dur, n.velocity) > (old.dur, old.velocity):
            best[key] = n
    return [best[k] for k in sorted(best)]


def struck_again(notes: Sequence[Note]) -> list[Note]:
    """Notes as one keyboard plays them: a key struck again while it still sounds ends its earlier
    note there. Tokens keep overlaps of one pitch (voices merged from several channels have them);
    a file written with them would leave it to each player to guess which note an off ends."""
    notes = canonical(notes)
    next_onset: dict[tuple[int, int], int] = {}  # (part, pitch) -> onset: each part is its own keyboard
    out = []
    for n in reversed(notes):  # latest first: the next onset of each pitch is known when we get there
        later = next_onset.get((n.part, n.pitch))
        out.append(n._replace(dur=later - n.onset) if later is not None and later < n.onset + n.dur else n)
        next_onset[(n.part, n.pitch)] = n.onset
    return out[::-1]


def transposed(notes: Sequence[Note], semitones: int, fixed: frozenset[int] = frozenset()) -> list[Note] | None:
    """The notes moved by `semitones`, or None when a pitch would leave 0..127. Notes of the
    `fixed` parts (drums: a pitch is an instrument there) stay where they are."""
    moving = [n.pitch for n in notes if n.part not in fixed]
    if not moving:
        return None
    if min(moving) + semitones < 0 or max(moving) + semitones > 127:
        return None
    return [n if n.part in fixed else n._replace(pitch=n.pitch + semitones) for n in notes]
