"""Reading .mid files into notes on the grid, and writing notes back as a .mid file (mido does the bytes)."""

from __future__ import annotations

import io
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rnngen.errors import RnngenError, first_line
from rnngen.midi.codec import STEPS_PER_QUARTER, Note, canonical, struck_again
from rnngen.midi.parts import Part

DRUM_CHANNEL = 9  # MIDI channel 10, counted from 1
TICKS_PER_STEP_OUT = 40  # written files use 12 * 40 = 480 ticks per quarter, the common resolution
DEFAULT_QPM = 120.0


@dataclass
class Piece:
    """A MIDI file as notes on the grid, plus the first tempo it asked for (None: none given).
    Each note's `part` indexes `parts` (read with parts=False: one part, everything merged)."""

    notes: list[Note]
    qpm: float | None = None
    parts: list[Part] = field(default_factory=lambda: [Part()])


class MidiError(RnngenError):
    """A MIDI file that cannot be used; the message says why (loaders skip such files)."""



def read_midi(source: Path | str | bytes, steps_per_quarter: int = STEPS_PER_QUARTER,
              drums: bool = False, parts: bool = False) -> Piece:
    """A MIDI file (path, `-` for stdin, or bytes) as notes on the grid; MidiError says why not.
    With `parts`, each track is a part (each channel, where a track has notes on several: a type 0
    file), named after its track and playing its channel's first program; else one merged part."""
    mid = _open(source)
    tpb = mid.ticks_per_beat
    raw, skipped_drums, tempo, found = [], 0, None, {}
    programs = _first_programs(mid)
    for index, track in enumerate(mid.tracks):
        notes, drum_count, first_tempo = _track_notes(track, drums)
        skipped_drums += drum_count
        if first_tempo is not None and (tempo is None or first_tempo[0] < tempo[0]):
            tempo = first_tempo
        channels = {n[4] for n in notes}
        for *note, channel in notes:
            key = (index, channel) if parts else (0, 0)
            if key not in found:
                name = _track_name(track) if len(channels) == 1 else ""
                found[key] = Part(name, programs.get((index, channel), programs.get(channel, 0)),
                                  channel == DRUM_CHANNEL)
            raw.append((*note, key))
    order = {key: i for i, key in enumerate(sorted(found))}  # parts in track order, then channel order
    raw = [(*note, order[key]) for *note, key in raw]
    if not raw:
        if skipped_drums:
            raise MidiError("it has drum notes only (channel 10); train with --drums to keep them")
        raise MidiError("it has no notes")
    notes = []
    for start, end, pitch, velocity, part in raw:
        on = _to_steps(start, tpb, steps_per_quarter)
        notes.append(Note(on, pitch, max(1, _to_steps(end, tpb, steps_per_quarter) - on), velocity, part))
    qpm = 60_000_000 / tempo[1] if tempo is not None and tempo[1] > 0 else None
    return Piece(canonical(notes), qpm, [found[key] for key in sorted(found)] if parts else [Part()])


def time_signature(source: Path | str | bytes) -> tuple[float, int, int] | None:
    """(the beat it starts at, numerator, denominator) of a file's earliest time signature, or None;
    MidiError where the file cannot be read."""
    mid, first = _open(source), None
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature":
                if first is None or tick < first[0]:
                    first = (tick, msg.numerator, msg.denominator)
                break
    return None if first is None else (first[0] / mid.ticks_per_beat, first[1], first[2])


def _open(source: Path | str | bytes):
    """The file as mido reads it, or MidiError saying why it cannot be used."""
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
        raise MidiError(f"the file is damaged ({first_line(e)})") from None
    if mid.type == 2:
        raise MidiError("type 2 MIDI files (independent sequences) are not supported")
    tpb = mid.ticks_per_beat
    if not 0 < tpb < 0x8000:
        raise MidiError("the file counts time in SMPTE frames, not beats; it is not supported")
    return mid


def _first_programs(mid) -> dict:
    """The first program change of each (track, channel), and of each channel in any track (type 1
    files often set every channel's program in their first track)."""
    out: dict = {}
    for index, track in enumerate(mid.tracks):
        for msg in track:
            if msg.type == "program_change":
                out.setdefault((index, msg.channel), msg.program)
                out.setdefault(msg.channel, msg.program)
    return out


def _track_name(track) -> str:
    for msg in track:
        if msg.type == "track_name":
            return msg.name.strip()
    return ""


def _read_bytes(source: Path | str | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
    except OSError as e:
        raise MidiError(f"cannot read it: {e.strerror or e}") from None



def _to_steps(tick: int, tpb: int, spq: int) -> int:
    """Ticks to the nearest grid step, in integers (halves round up, the same on every machine)."""
    return (2 * tick * spq + tpb) // (2 * tpb)


def _track_notes(track, drums: bool):
    """(notes as (start, end, pitch, velocity, channel) in ticks, drum notes skipped, (tick, first tempo))."""
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
            notes.append((start, tick, msg.note, velocity, msg.channel))
    for (channel, pitch), starts in sounding.items():  # never closed: the track's end closes them
        notes += [(start, tick, pitch, velocity, channel) for start, velocity in starts]
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


def parts_midi_bytes(notes: Sequence[Note], parts: Sequence[Part], order: Sequence[int],
                     steps_per_quarter: int = STEPS_PER_QUARTER, qpm: float = DEFAULT_QPM) -> bytes:
    """A type 1 MIDI file: a tempo track, then one track per part that has notes (`note.part`
    indexes `parts`), in `order`, each named, on its own channel with its program; drums on channel 10."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=steps_per_quarter * TICKS_PER_STEP_OUT)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="rnngen", time=0),
                                      mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm), time=0),
                                      mido.MetaMessage("end_of_track", time=0)]))
    notes = struck_again(notes)
    used = [i for i in order if any(n.part == i for n in notes)]
    melodic = iter([c for c in range(16) if c != DRUM_CHANNEL] * 2)  # more than 15 parts share channels
    for index in used:
        part = parts[index]
        channel = DRUM_CHANNEL if part.drums else next(melodic)
        mid.tracks.append(_part_track([n for n in notes if n.part == index], part, channel))
    buffer = io.BytesIO()
    mid.save(file=buffer)
    return buffer.getvalue()


def _part_track(notes: Sequence[Note], part: Part, channel: int):
    import mido

    per_step = TICKS_PER_STEP_OUT
    events = sorted([(n.onset * per_step, 1, n.pitch, n.velocity) for n in notes]
                    + [((n.onset + n.dur) * per_step, 0, n.pitch, 0) for n in notes])  # offs first at a tick
    track = mido.MidiTrack()
    # A role shared by program has no name of its own: the track is named for what it plays.
    track.append(mido.MetaMessage("track_name", name=part.name or part.label(), time=0))
    track.append(mido.Message("program_change", channel=channel, program=part.program, time=0))
    now = 0
    for tick, on, pitch, velocity in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, channel=channel, note=pitch, velocity=velocity, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track
