"""MIDI corpora: many files read into pieces (the unreadable ones listed and skipped), split into
training and validation pieces, and encoded as one id tensor."""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from rnngen.codec import compact_dtype
from rnngen.errors import RnngenError
from rnngen.midi.codec import STEPS_PER_QUARTER, MidiCodec, Note, transposed
from rnngen.midi.cache import gc_paused, read_pieces_cached
from rnngen.midi.files import MidiError, Piece, read_midi
from rnngen.midi.parts import PartTable, name_key, parts_setting


def read_pieces(files: Sequence[Path | str], steps_per_quarter: int = STEPS_PER_QUARTER,
                drums: bool = False, parts: bool = False) -> tuple[list[Piece], list[str]]:
    """Every readable MIDI file; the others are listed on stderr, one line each, and skipped."""
    pieces, names = [], []
    for f in files:
        try:
            pieces.append(read_midi(f, steps_per_quarter, drums, parts))
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


def parts_table(setting: str | None, pieces: Sequence[Piece]) -> PartTable | None:
    """The part roles a new model gets from `--parts`: None for `merge`, names given, else fitted."""
    setting = (setting or "tracks").strip()
    if setting == "merge":
        return None
    if setting == "tracks":
        return PartTable.fit(pieces)
    return PartTable.named(parts_setting(setting).split(","), pieces)


def _codec_for(codec: MidiCodec | None, drums: bool | None, parts: str | None, grow: bool) -> MidiCodec | None:
    """The codec to continue (checked against the options), or None when a new one is to be fitted:
    `grow` (fine-tuning) lets a model from before parts learn parts, with ids added after its own, and
    one from before ensembles and ranges learn those (`PartTable.renewed`)."""
    if codec is None or (grow and isinstance(codec, MidiCodec) and codec.parts is None
                         and parts is not None and parts.strip() != "merge"):
        return None
    if not isinstance(codec, MidiCodec):
        raise RnngenError(f"the model to continue from is a {codec.kind} model, but the data is MIDI")
    if drums is not None and drums != codec.drums:
        raise RnngenError(f"--drums cannot change here: the model was trained "
                          f"{'with' if codec.drums else 'without'} drums")
    if parts is not None and _names(parts) != _names(codec.parts_setting()):
        raise RnngenError(f"--parts cannot change here: the model was trained with --parts {codec.parts_setting()}")
    if grow and codec.parts is not None and codec.parts.ranges is None:  # a table from before ranges learns them
        return MidiCodec(codec.steps_per_quarter, codec.max_dur, codec.max_shift, codec.velocity_bins, codec.drums,
                         codec.parts.renewed())
    return codec


def _names(setting: str) -> set[str]:
    return {name_key(n) for n in setting.split(",")}


def _role_notes(codec: MidiCodec, pieces: list[Piece], names: list[str]):
    """(each piece's notes by role, the names of the pieces that have any): a piece left with no
    notes (no part the model keeps) is listed on stderr and has [] here."""
    out = []
    for piece, name in zip(pieces, names):
        out.append(codec.notes_of(piece))
        if not out[-1]:
            print(f"skipped {name}: none of its parts is one of --parts {codec.parts_setting()}", file=sys.stderr)
    return out, [n for n, notes in zip(names, out) if notes]


class MidiCorpus(NamedTuple):
    codec: MidiCodec
    train_ids: torch.Tensor  # (N,)
    val_ids: torch.Tensor  # (M,)
    names: list[str]  # the files trained on or held out
    read: list[str]  # every file read, those left with no notes too: the split is drawn over these, so a
    # checkpoint records them and a resumed run that reads them again holds out the very same files
    held_out: list[str]  # the validation files


@gc_paused()  # millions of notes and tokens, no cycles: 10,000 chorales load in 22 s rather than 56
def load_midi_corpus(files: Sequence[Path | str], val_frac: float, seed: int, codec: MidiCodec | None = None,
                     drums: bool | None = None, transpose: int = 0, parts: str | None = None, grow: bool = False,
                     cache_dir: Path | str | None = None) -> MidiCorpus:
    """The codec, the training and validation ids and the files behind them. Validation holds out
    whole pieces, a seeded choice of about `val_frac` of the files read; `transpose` adds copies of
    each training piece moved by up to that many semitones either way (validation stays as written)."""
    base = codec
    codec = _codec_for(codec, drums, parts, grow)
    merged = codec.parts is None if codec is not None else (parts or "").strip() == "merge"
    keep_drums = codec.drums if codec is not None else bool(drums if base is None else base.drums)
    pieces, names = read_pieces_cached(files, STEPS_PER_QUARTER if base is None else base.steps_per_quarter,
                                       keep_drums, cache_dir, parts=not merged)
    if codec is None:
        settings = {} if base is None else {k: v for k, v in base.to_dict().items() if k != "type"}
        codec = MidiCodec(**{**settings, "drums": keep_drums, "parts": parts_table(parts, pieces)})
    if len(pieces) < 2:
        raise RnngenError("MIDI training needs at least two readable files: validation holds out whole pieces")
    # Held out among the files read, before parts are chosen, so that the same files are held out
    # whatever --parts keeps (a file left with no part it keeps drops out of its side of the split).
    rng = random.Random(seed)
    n_val = min(len(pieces) - 1, max(1, round(val_frac * len(pieces))))
    val_index = set(rng.sample(range(len(pieces)), n_val))
    read = names
    notes, names = _role_notes(codec, pieces, read)
    held_out = [n for i, (n, p) in enumerate(zip(read, notes)) if i in val_index and p]
    val = [p for i, p in enumerate(notes) if i in val_index and p]
    pieces = [p for i, p in enumerate(notes) if i not in val_index and p]
    if not val or not pieces:
        raise RnngenError("MIDI training needs at least two usable files: validation holds out whole pieces")
    if codec.parts is not None and codec.parts.ranges is None and (base is None or grow):
        codec.parts.fit_ranges(pieces)  # as written: transposed copies do not widen a voice
    train, fixed = [], codec.fixed_parts()
    for p in pieces:
        train.append(p)
        for k in range(-transpose, transpose + 1):
            moved = transposed(p, k, fixed) if k else None
            if moved is not None:
                train.append(moved)
    # The trainer reads the corpus as long contiguous streams; shuffling the pieces keeps the
    # transposed copies of one piece away from each other.
    rng.shuffle(train)
    return MidiCorpus(codec, _ids(codec, train), _ids(codec, val), names, read, held_out)


@gc_paused()
def load_midi_ids(files: Sequence[str | Path], codec: MidiCodec) -> torch.Tensor:
    """Held-out MIDI files (folders searched) as one id tensor, for `rnngen eval`."""
    from rnngen.data import expand_sources

    pieces, names = read_pieces_cached(expand_sources([str(f) for f in files]), codec.steps_per_quarter, codec.drums,
                                       parts=codec.parts is not None)
    return _ids(codec, [notes for notes in _role_notes(codec, pieces, names)[0] if notes])
