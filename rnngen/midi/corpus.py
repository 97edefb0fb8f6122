"""MIDI corpora: many files read into pieces (the unreadable ones listed and skipped), split into
training and validation pieces, and encoded as one id tensor."""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from rnngen.codec import compact_dtype
from rnngen.errors import RnngenError
from rnngen.midi.codec import STEPS_PER_QUARTER, MidiCodec, Note, transposed
from rnngen.midi.cache import read_pieces_cached
from rnngen.midi.files import MidiError, Piece, read_midi


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
                     drums: bool | None = None, transpose: int = 0, cache_dir: Path | str | None = None):
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
    pieces, names = read_pieces_cached(files, codec.steps_per_quarter, codec.drums, cache_dir)
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

    pieces, _ = read_pieces_cached(expand_sources([str(f) for f in files]), codec.steps_per_quarter, codec.drums)
    return _ids(codec, [p.notes for p in pieces])
