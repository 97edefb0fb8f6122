"""The kinds of data rnngen trains on, behind one interface, so that the commands never ask
`if kind == ...`. A kind (rnngen/text.py, rnngen/midi/kind.py) has:

    name, default_length                  "text" / "midi", and -n when it is not given
    default_temperature                   -t when it is not given
    load_corpus(sources, files, options, cfg, codec | None) -> Corpus
                                           the training and validation ids (codec None: a new one)
    load_eval(files, codec) -> ids         held-out data for `rnngen eval`
    sample(codec, cfg, sampling)           prime, generate and write the samples

Its codec has kind, unit ("char" / "event"), vocab_size, encode, decode, to_dict and describe, and
`rnngen.codec.codec_from_dict` makes it from a checkpoint. A new kind of data is a codec, a module
with the functions above, and a line in KINDS.
"""

from __future__ import annotations

from rnngen.midi.kind import KIND as MIDI
from rnngen.text import KIND as TEXT

KINDS = {TEXT.name: TEXT, MIDI.name: MIDI}


def kind_named(name: str):
    return KINDS[name]


def kind_of(codec):
    return KINDS[codec.kind]

