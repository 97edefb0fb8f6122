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
"""

from __future__ import annotations

import io
import random
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from rnngen.codec import compact_dtype
from rnngen.data import writable_folder
from rnngen.errors import RnngenError

STEPS_PER_QUARTER = 12
MAX_DUR = 48
MAX_SHIFT = 48
VELOCITY_BINS = 8
DEFAULT_VELOCITY = 88  # the velocity in force before any VEL token: mezzo-forte, bin 5 of 8
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 1
TICKS_PER_STEP_OUT = 40  # written files use 12 * 40 = 480 ticks per quarter, the common resolution
DEFAULT_QPM = 120.0

# Token categories, as `MidiCodec.category` holds them.
PITCH, DUR, SHIFT, VEL, BOS, EOS = range(6)


class Note(NamedTuple):
    onset: int  # grid steps from the start of the piece
    pitch: int  # 0..127
    dur: int  # grid steps, at least 1
    velocity: int  # 1..127


@dataclass
class Piece:
    """A MIDI file as notes on the grid, plus the first tempo it asked for (None: none given)."""

    notes: list[Note]
    qpm: float | None = None


class MidiError(RnngenError):
    """A MIDI file that cannot be used; the message says why (loaders skip such files)."""


# --------------------------------------------------------------------------------------------------
# the codec


class MidiCodec:
    kind = "midi"

    def __init__(self, steps_per_quarter: int = STEPS_PER_QUARTER, max_dur: int = MAX_DUR,
                 max_shift: int = MAX_SHIFT, velocity_bins: int = VELOCITY_BINS, drums: bool = False):
        for name, value in [("steps_per_quarter", steps_per_quarter), ("max_dur", max_dur),
                            ("max_shift", max_shift), ("velocity_bins", velocity_bins)]:
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
                raise RnngenError(f"the checkpoint's MIDI settings are damaged ({name} = {value!r})")
        self.steps_per_quarter, self.max_dur, self.max_shift = steps_per_quarter, max_dur, max_shift
        self.velocity_bins, self.drums = velocity_bins, bool(drums)
        # Id layout: PITCH_0..127, DUR_1..max_dur, SHIFT_1..max_shift, VEL_0..bins-1, BOS, EOS.
        self.dur0 = 128
        self.shift0 = self.dur0 + max_dur
        self.vel0 = self.shift0 + max_shift
        self.bos = self.vel0 + velocity_bins
        self.eos = self.bos + 1
        self.default_bin = self.velocity_bin(DEFAULT_VELOCITY)
        cats = [PITCH] * 128 + [DUR] * max_dur + [SHIFT] * max_shift + [VEL] * velocity_bins + [BOS, EOS]
        vals = list(range(128)) + list(range(1, max_dur + 1)) + list(range(1, max_shift + 1)) \
            + list(range(velocity_bins)) + [0, 0]
        self.category = torch.tensor(cats)  # (V,) the kind of each id
        self.value = torch.tensor(vals)  # (V,) its pitch, steps or velocity bin
        self._cats, self._vals = cats, vals

    @property
    def vocab_size(self) -> int:
        return self.eos + 1

    def to_dict(self) -> dict:
        return {"type": "midi", "steps_per_quarter": self.steps_per_quarter, "max_dur": self.max_dur,
                "max_shift": self.max_shift, "velocity_bins": self.velocity_bins, "drums": self.drums}

    @classmethod
    def from_dict(cls, d: dict) -> MidiCodec:
        return cls(d.get("steps_per_quarter", STEPS_PER_QUARTER), d.get("max_dur", MAX_DUR),
                   d.get("max_shift", MAX_SHIFT), d.get("velocity_bins", VELOCITY_BINS), d.get("drums", False))

    def describe(self) -> str:
        drums = ", drums kept" if self.drums else ""
        return f"midi, {self.steps_per_quarter} steps per quarter, {self.vocab_size} events{drums}"

    # -- velocity bins -------------------------------------------------------------------------

    def velocity_bin(self, velocity: int) -> int:
        return min(self.velocity_bins - 1, max(0, velocity) * self.velocity_bins // 128)

    def bin_velocity(self, b: int) -> int:
        """The middle of a bin, so that a decoded velocity falls back into its own bin."""
        return max(1, min(127, int((b + 0.5) * 128 / self.velocity_bins)))

    # -- tokens --------------------------------------------------------------------------------

    def token_name(self, token: int) -> str:
        cat, val = self._cats[token], self._vals[token]
        return ("PITCH", "DUR", "SHIFT", "VEL", "BOS", "EOS")[cat] + (f"_{val}" if cat < BOS else "")

    def _repeat(self, first: int, steps: int, most: int) -> list[int]:
        """`steps` as tokens of at most `most` each, the full ones first: 60 -> [48, 12]."""
        full, rest = divmod(steps, most)
        return [first + most - 1] * full + ([first + rest - 1] if rest else [])

    def encode(self, notes: Sequence[Note]) -> list[int]:
        """One piece as BOS ... EOS, from any notes (sorted and merged as `canonical` does)."""
        tokens, now, vel = [self.bos], 0, self.default_bin
        for note in canonical(notes):
            if note.onset > now:
                tokens += self._repeat(self.shift0, note.onset - now, self.max_shift)
                now = note.onset
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
        now, vel = 0, self.bin_velocity(self.default_bin)
        pitch, dur = None, 0  # the note being read

        def finish() -> None:
            nonlocal pitch, dur
            if pitch is not None and dur > 0:
                notes.append(Note(now, pitch, dur, vel))
            pitch, dur = None, 0

        for i, token in enumerate(tokens):
            cat, val = self._cats[token], self._vals[token]
            if cat == DUR:
                if pitch is not None:
                    dur += val
                continue
            finish()
            if cat == PITCH:
                pitch = val
            elif cat == SHIFT:
                now += val
            elif cat == VEL:
                vel = self.bin_velocity(val)
            elif cat == EOS or (cat == BOS and i > 0):
                break
        finish()
        return canonical(notes)


def canonical(notes: Sequence[Note]) -> list[Note]:
    """Notes in (onset, pitch) order, one per (onset, pitch): the longest (and loudest) wins.

    Merging all channels onto one instrument makes a doubled voice (a horn playing the soprano
    line, two voices in unison) into the same key struck twice at once, which one instrument
    cannot play; the encoder keeps one of them.
    """
    best: dict[tuple[int, int], Note] = {}
    for n in notes:
        key = (n.onset, n.pitch)
        old = best.get(key)
        if old is None or (n.dur, n.velocity) > (old.dur, old.velocity):
            best[key] = n
    return [best[k] for k in sorted(best)]


def struck_again(notes: Sequence[Note]) -> list[Note]:
    """Notes as one keyboard plays them: a key struck again while it still sounds ends its earlier
    note there. Tokens keep overlaps of one pitch (voices merged from several channels have them);
    a file written with them would leave it to each player to guess which note an off ends."""
    notes = canonical(notes)
    next_onset: dict[int, int] = {}
    out = []
    for n in reversed(notes):  # latest first: the next onset of each pitch is known when we get there
        later = next_onset.get(n.pitch)
        out.append(n._replace(dur=later - n.onset) if later is not None and later < n.onset + n.dur else n)
        next_onset[n.pitch] = n.onset
    return out[::-1]


def transposed(notes: Sequence[Note], semitones: int) -> list[Note] | None:
    """The notes moved by `semitones`, or None when a pitch would leave 0..127."""
    if not notes:
        return None
    low, high = min(n.pitch for n in notes), max(n.pitch for n in notes)
    if low + semitones < 0 or high + semitones > 127:
        return None
    return [n._replace(pitch=n.pitch + semitones) for n in notes]


# --------------------------------------------------------------------------------------------------
# reading and writing .mid files


def read_midi(source: Path | str | bytes, steps_per_quarter: int = STEPS_PER_QUARTER,
              drums: bool = False) -> Piece:
    """A MIDI file (path, `-` for stdin, or bytes) as notes on the grid; MidiError says why not."""
    import mido

    data = _read_bytes(source)
    if not data:
        raise MidiError("the file is empty")
    if data[:4] != b"MThd":
        raise MidiError("not a MIDI file (it does not start with MThd)")
    try:
        # clip=False rejects data bytes above 127, a sign of a damaged file.
        mid = mido.MidiFile(file=io.BytesIO(data), clip=False)
    except EOFError:
        raise MidiError("the file is truncated") from None
    except Exception as e:  # mido raises many kinds on damaged input; any of them means "unreadable"
        raise MidiError(f"the file is damaged ({_first_line(e)})") from None
    if mid.type == 2:
        raise MidiError("type 2 MIDI files (independent sequences) are not supported")
    tpb = mid.ticks_per_beat
    if not 0 < tpb < 0x8000:
        raise MidiError("the file counts time in SMPTE frames, not beats; it is not supported")

    raw, skipped_drums, tempo = [], 0, None
    for track in mid.tracks:
        notes, drum_count, first_tempo = _track_notes(track, drums)
        raw += notes
        skipped_drums += drum_count
        if first_tempo is not None and (tempo is None or first_tempo[0] < tempo[0]):
            tempo = first_tempo
    if not raw:
        if skipped_drums:
            raise MidiError("it has drum notes only (channel 10); train with --drums to keep them")
        raise MidiError("it has no notes")
    notes = []
    for start, end, pitch, velocity in raw:
        on = _to_steps(start, tpb, steps_per_quarter)
        notes.append(Note(on, pitch, max(1, _to_steps(end, tpb, steps_per_quarter) - on), velocity))
    qpm = 60_000_000 / tempo[1] if tempo is not None and tempo[1] > 0 else None
    return Piece(canonical(notes), qpm)


def _read_bytes(source: Path | str | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
    except OSError as e:
        raise MidiError(f"cannot read it: {e.strerror or e}") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:120] if lines else type(e).__name__


def _to_steps(tick: int, tpb: int, spq: int) -> int:
    """Ticks to the nearest grid step, in integers (halves round up, the same on every machine)."""
    return (2 * tick * spq + tpb) // (2 * tpb)


def _track_notes(track, drums: bool):
    """(notes as (start, end, pitch, velocity) in ticks, drum notes skipped, (tick, first tempo))."""
    notes, drum_count, tempo = [], 0, None
    sounding: dict[tuple[int, int], deque] = {}  # (channel, pitch) -> onsets, oldest first
    tick = 0
    for msg in track:
        tick += msg.time
        kind = msg.type
        if kind == "set_tempo":
            if tempo is None:
                tempo = (tick, msg.tempo)
            continue
        if kind not in ("note_on", "note_off"):
            continue
        if msg.channel == DRUM_CHANNEL and not drums:
            drum_count += kind == "note_on" and msg.velocity > 0
            continue
        key = (msg.channel, msg.note)
        if kind == "note_on" and msg.velocity > 0:
            sounding.setdefault(key, deque()).append((tick, msg.velocity))
        elif sounding.get(key):  # note_off, or note_on with velocity 0: first in, first out
            start, velocity = sounding[key].popleft()
            notes.append((start, tick, msg.note, velocity))
    for (_, pitch), starts in sounding.items():  # never closed: the track's end closes them
        notes += [(start, tick, pitch, velocity) for start, velocity in starts]
    return notes, drum_count, tempo


def midi_bytes(notes: Sequence[Note], steps_per_quarter: int = STEPS_PER_QUARTER, qpm: float = DEFAULT_QPM,
               program: int = 0) -> bytes:
    """A type 0 MIDI file with one tempo, one instrument on channel 1, and the notes (a note whose
    key is struck again before it ends is cut there, see `struck_again`)."""
    import mido

    per_step = TICKS_PER_STEP_OUT
    events = []  # (tick, 0 for off / 1 for on, pitch, velocity)
    for n in struck_again(notes):
        events.append((n.onset * per_step, 1, n.pitch, n.velocity))
        events.append(((n.onset + n.dur) * per_step, 0, n.pitch, 0))
    events.sort()  # at one tick, offs before ons: a key released and struck again sounds twice
    track = mido.MidiTrack([
        mido.MetaMessage("track_name", name="rnngen", time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm), time=0),
        mido.Message("program_change", channel=0, program=program, time=0),
    ])
    now = 0
    for tick, on, pitch, velocity in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, channel=0, note=pitch, velocity=velocity, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=0, ticks_per_beat=steps_per_quarter * per_step)
    mid.tracks.append(track)
    buffer = io.BytesIO()
    mid.save(file=buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# corpora


def read_pieces(files: Sequence[Path | str], steps_per_quarter: int = STEPS_PER_QUARTER,
                drums: bool = False) -> tuple[list[Piece], list[str]]:
    """Every readable MIDI file; the others are listed on stderr, one line each, and skipped."""
    pieces, names = [], []
    for f in files:
        try:
            pieces.append(read_midi(f, steps_per_quarter, drums))
            names.append(str(f))
        except MidiError as e:
            print(f"skipped {'standard input' if str(f) == '-' else f}: {e}", file=sys.stderr)
    if not pieces:
        shown = f"the {len(files)} files given" if len(files) != 1 else str(files[0])
        raise RnngenError(f"no usable MIDI files: none of {shown} could be read (see the lines above)")
    return pieces, names


def _ids(codec: MidiCodec, pieces: Sequence[Sequence[Note]]) -> torch.Tensor:
    tokens = [t for notes in pieces for t in codec.encode(notes)]
    return torch.tensor(tokens, dtype=compact_dtype(codec.vocab_size))  # (N,)


def load_midi_corpus(files: Sequence[Path | str], val_frac: float, seed: int, codec: MidiCodec | None = None,
                     drums: bool | None = None, transpose: int = 0):
    """(codec, train_ids, val_ids, names). Validation holds out whole pieces, a seeded choice of
    about `val_frac` of them; `transpose` adds copies of each training piece moved by up to that
    many semitones either way (validation stays as written)."""
    if codec is None:
        codec = MidiCodec(drums=bool(drums))
    elif not isinstance(codec, MidiCodec):
        raise RnngenError(f"the model to continue from is a {codec.kind} model, but the data is MIDI")
    elif drums is not None and drums != codec.drums:
        raise RnngenError(f"--drums cannot change here: the model was trained "
                          f"{'with' if codec.drums else 'without'} drums")
    pieces, names = read_pieces(files, codec.steps_per_quarter, codec.drums)
    if len(pieces) < 2:
        raise RnngenError("MIDI training needs at least two readable files: validation holds out whole pieces")
    rng = random.Random(seed)
    n_val = min(len(pieces) - 1, max(1, round(val_frac * len(pieces))))
    val_index = set(rng.sample(range(len(pieces)), n_val))
    val = [p.notes for i, p in enumerate(pieces) if i in val_index]
    train = []
    for i, p in enumerate(pieces):
        if i in val_index:
            continue
        train.append(p.notes)
        for k in range(-transpose, transpose + 1):
            moved = transposed(p.notes, k) if k else None
            if moved is not None:
                train.append(moved)
    # The trainer reads the corpus as long contiguous streams; shuffling the pieces keeps the
    # transposed copies of one piece away from each other.
    rng.shuffle(train)
    return codec, _ids(codec, train), _ids(codec, val), names


def load_midi_ids(files: Sequence[str | Path], codec: MidiCodec) -> torch.Tensor:
    """Held-out MIDI files (folders searched) as one id tensor, for `rnngen eval`."""
    from rnngen.data import expand_sources

    pieces, _ = read_pieces(expand_sources([str(f) for f in files]), codec.steps_per_quarter, codec.drums)
    return _ids(codec, [p.notes for p in pieces])


# --------------------------------------------------------------------------------------------------
# sampling


# Grammar states: what the last token was.
START, AFTER_VEL, AFTER_PITCH, AFTER_DUR, AFTER_FULL_DUR, AFTER_SHIFT, AFTER_FULL_SHIFT, DONE = range(8)


class Grammar:
    """The `mask` for `generate()`: which tokens may come next in each row, so that every sample is
    a well-formed, canonical piece (what `encode` would write for its own notes).

    Per row it keeps the state (the last token's kind), the highest pitch of the current chord and
    the velocity bin in force. Rules: a PITCH is followed by DURs; DUR and SHIFT repeat only after a
    full-size token; inside a chord pitches rise; VEL only where it changes the velocity and a PITCH
    can follow; EOS only after a complete note; after EOS only EOS; BOS never.
    """

    def __init__(self, codec: MidiCodec, batch: int, device: torch.device | str = "cpu"):
        V, c = codec.vocab_size, codec
        self.codec, self.device = codec, torch.device(device)
        pitch, dur = slice(0, 128), slice(c.dur0, c.shift0)
        shift, vel, eos = slice(c.shift0, c.vel0), slice(c.vel0, c.bos), c.eos
        table = torch.zeros(8, V, dtype=torch.bool)
        for state in (START, AFTER_SHIFT):
            table[state, pitch] = table[state, vel] = True
        table[START, shift] = True
        table[AFTER_FULL_SHIFT] = table[AFTER_SHIFT]
        table[AFTER_FULL_SHIFT, shift] = True
        table[AFTER_VEL, pitch] = True
        table[AFTER_PITCH, dur] = True
        table[AFTER_DUR, pitch] = table[AFTER_DUR, vel] = table[AFTER_DUR, shift] = True
        table[AFTER_DUR, eos] = True
        table[AFTER_FULL_DUR] = table[AFTER_DUR]
        table[AFTER_FULL_DUR, dur] = True
        table[DONE, eos] = True
        self.table = table.to(self.device)  # (8, V)
        self.category, self.value = c.category.to(self.device), c.value.to(self.device)  # (V,)
        self.pitches = torch.arange(128, device=self.device)
        self.bins = torch.arange(c.velocity_bins, device=self.device)
        self.state = torch.full((batch,), START, device=self.device)  # (B,)
        self.chord_top = torch.full((batch,), -1, device=self.device)  # (B,) -1: no note at this onset yet
        self.vel = torch.full((batch,), c.default_bin, device=self.device)  # (B,)

    def feed(self, tokens: Sequence[int]) -> None:
        """Advance every row through the same tokens (the prime)."""
        for t in tokens:
            self.advance(torch.full_like(self.state, int(t)))

    def advance(self, tokens: torch.Tensor) -> None:
        c = self.codec
        tokens = tokens.to(self.device)
        cat, val = self.category[tokens], self.value[tokens]  # (B,)
        done = self.state == DONE
        new = torch.full_like(self.state, START)
        new = torch.where(cat == VEL, AFTER_VEL, new)
        new = torch.where(cat == PITCH, AFTER_PITCH, new)
        new = torch.where(cat == DUR, torch.where(val == c.max_dur, AFTER_FULL_DUR, AFTER_DUR), new)
        new = torch.where(cat == SHIFT, torch.where(val == c.max_shift, AFTER_FULL_SHIFT, AFTER_SHIFT), new)
        new = torch.where((cat == EOS) | done, DONE, new)
        self.chord_top = torch.where(cat == PITCH, val, self.chord_top)
        self.chord_top = torch.where((cat == SHIFT) | (cat == BOS), -1, self.chord_top)
        self.vel = torch.where(cat == VEL, val, torch.where(cat == BOS, c.default_bin, self.vel))
        self.state = new

    def allowed(self) -> torch.Tensor:
        c = self.codec
        mask = self.table[self.state].clone()  # (B, V)
        mask[:, :128] &= self.pitches > self.chord_top[:, None]  # (B, 128) chords rise
        mask[:, c.vel0:c.bos] &= (self.bins != self.vel[:, None]) & (self.chord_top < 127)[:, None]
        return mask

    def __call__(self, last: torch.Tensor | None) -> torch.Tensor:
        if last is not None:
            self.advance(last)
        return self.allowed()


def sample_tokens(model, codec: MidiCodec, prime: Sequence[int], length: int, batch: int = 1,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  seed: int = 0, device: torch.device | None = None, precision: str = "auto") -> list[list[int]]:
    """Each row's sampled tokens (the prime not included), up to and including its EOS."""
    from rnngen.sample import generate

    device = device or next(model.parameters()).device
    grammar = Grammar(codec, batch, device)
    grammar.feed(prime)
    steps = []
    ended = torch.zeros(batch, dtype=torch.bool, device=device)
    for tokens in generate(model, list(prime), length, batch, temperature, top_k, top_p, seed, device,
                           mask=grammar, precision=precision):
        steps.append(tokens)
        ended |= tokens == codec.eos
        if bool(ended.all()):  # every row finished its piece: no need to run to `length`
            break
    rows = torch.stack(steps, dim=1).tolist()  # (B, T)
    return [row[: row.index(codec.eos) + 1] if codec.eos in row else row for row in rows]


def sample_midi(model, codec: MidiCodec, *, length: int, num_samples: int, temperature: float, top_k, top_p,
                seed: int, prime_file: str | None, out: str | None, device: torch.device, quiet: bool,
                prime_text: str | None, qpm: float | None = None, program: int | None = None,
                echo: bool = True, model_name: str = "sample", precision: str = "auto") -> None:
    """`rnngen sample` for a MIDI model: write one .mid file per sample (or MIDI bytes to stdout)."""
    if prime_text is not None:
        raise RnngenError("this is a MIDI model: a prime must be a .mid file given with -f, not text with -p")
    targets = output_paths(out, num_samples, f"{model_name}-{seed}")  # checked before the work
    prime, primer = [codec.bos], None
    if prime_file is not None:
        try:
            primer = read_midi(prime_file, codec.steps_per_quarter, codec.drums)
        except MidiError as e:
            raise RnngenError(f"the primer {prime_file} cannot be used: {e}") from None
        prime = codec.encode(primer.notes)[:-1]  # the piece so far: everything but its EOS
    rows = sample_tokens(model, codec, prime, length, num_samples, temperature, top_k, top_p, seed, device,
                         precision)
    tempo = qpm or (primer.qpm if primer is not None and primer.qpm else DEFAULT_QPM)
    pieces = [codec.decode(prime + row) for row in rows]
    if primer is not None and not echo:
        pieces = [_continuation(notes, len(codec.decode(prime))) for notes in pieces]
    files = [midi_bytes(notes, codec.steps_per_quarter, tempo, program or 0) for notes in pieces]
    if targets is None:  # -o -
        sys.stdout.buffer.write(files[0])
        sys.stdout.buffer.flush()
        if num_samples > 1 and not quiet:
            print(f"wrote sample 1 of {num_samples} to stdout (stdout holds one file; use -o FOLDER/ for all)",
                  file=sys.stderr)
        return
    for path, data, notes, row in zip(targets, files, pieces, rows):
        try:
            path.write_bytes(data)
        except OSError as e:
            raise RnngenError(f"cannot write {path}: {e.strerror or e}") from None
        if not quiet:
            beats = max((n.onset + n.dur for n in notes), default=0) / codec.steps_per_quarter
            given = f" ({len(primer.notes)} from the primer)" if primer is not None and echo else ""
            end = "" if row and row[-1] == codec.eos else f", cut at -n {length}"
            print(f"wrote {path}: {len(notes)} notes{given}, {beats:g} beats at {tempo:g} qpm{end}",
                  file=sys.stderr)


def _continuation(notes: list[Note], given: int) -> list[Note]:
    """The notes after the primer's first `given`, moved to start at 0 (for --no-echo). The
    grammar puts every new note after the primer's in (onset, pitch) order: later, or higher in
    the primer's last chord."""
    new = notes[given:]
    start = min((n.onset for n in new), default=0)
    return [n._replace(onset=n.onset - start) for n in new]


def output_paths(out: str | None, count: int, default_stem: str) -> list[Path] | None:
    """Where samples go: None for stdout (`-`); a file, numbered files, or files in a folder.

    No `-o`: the current folder, named after the model and seed, so that a file's name says how to
    make it again. A folder (existing, or a path ending in /) gets sample.mid or sample-1.mid ...;
    `x.mid` with several samples gets x-1.mid, x-2.mid ...
    """
    if out == "-":
        if sys.stdout.isatty():
            raise RnngenError("refusing to write binary MIDI to a terminal; pipe it (-o - | ...) or give -o FILE.mid")
        return None
    if out is None:
        base = Path(f"{default_stem}.mid")
    elif out.endswith(("/", "\\")) or Path(out).is_dir():
        folder = Path(out).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RnngenError(f"cannot make the folder {out}: {e.strerror or e}") from None
        base = folder / "sample.mid"
    else:
        base = Path(out).expanduser()
    writable_folder(base, "--out")
    if count == 1:
        return [base]
    width = len(str(count))
    return [base.with_name(f"{base.stem}-{i:0{width}d}{base.suffix}") for i in range(1, count + 1)]
