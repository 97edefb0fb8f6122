"""MIDI, one module a layer: the codec (notes <-> event ids), .mid files (bytes <-> notes), corpora
(many files -> ids), the sampling grammar, and the MIDI kind that ties them to the commands."""

from rnngen.midi.codec import (DEFAULT_VELOCITY, MAX_DUR, MAX_SHIFT, STEPS_PER_QUARTER, VELOCITY_BINS, MidiCodec,
                               Note, canonical, struck_again, transposed)
from rnngen.midi.corpus import load_midi_corpus, load_midi_ids, read_pieces
from rnngen.midi.files import DEFAULT_QPM, DRUM_CHANNEL, MidiError, Piece, midi_bytes, read_midi
from rnngen.midi.grammar import Grammar, sample_tokens
from rnngen.output import output_paths

__all__ = ["DEFAULT_QPM", "DEFAULT_VELOCITY", "DRUM_CHANNEL", "MAX_DUR", "MAX_SHIFT", "STEPS_PER_QUARTER",
           "VELOCITY_BINS", "Grammar", "MidiCodec", "MidiError", "Note", "Piece", "canonical", "load_midi_corpus",
           "load_midi_ids", "midi_bytes", "output_paths", "read_midi", "read_pieces", "sample_tokens",
           "struck_again", "transposed"]
