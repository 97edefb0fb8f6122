"""Random and mutated bytes end in a clean result or rnngen's own error, never another exception."""

import io

import mido
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnngen.codec import TextCodec
from rnngen.data import decode_text
from rnngen.errors import RnngenError
from rnngen.midi import MidiCodec, read_midi
from rnngen.midi.parts import PartTable

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def valid_midi() -> bytes:
    mid = mido.MidiFile(type=1, ticks_per_beat=96)
    for channel, pitches in ((0, [60, 64, 67]), (9, [36, 38])):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
        for p in pitches:
            track.append(mido.Message("note_on", note=p, velocity=80, channel=channel, time=0))
            track.append(mido.Message("note_off", note=p, velocity=0, channel=channel, time=48))
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


VALID = valid_midi()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


def read_and_round_trip(data: bytes) -> None:
    try:
        piece = read_midi(data)
    except RnngenError:
        return
    codec = MidiCodec()
    tokens = codec.encode(piece.notes)
    assert codec.encode(codec.decode(tokens)) == tokens
    with_parts = read_midi(data, drums=True, parts=True)  # the same bytes read as parts, drums kept
    codec = MidiCodec(drums=True, parts=PartTable.fit([with_parts]))
    tokens = codec.encode(codec.notes_of(with_parts))
    assert codec.encode(codec.decode(tokens)) == tokens


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_as_midi(data):
    read_and_round_trip(data)


@FUZZ
@given(st.binary(max_size=256).map(lambda tail: b"MThd" + tail))
def test_random_bytes_behind_a_midi_header(data):
    read_and_round_trip(data)


@FUZZ
@given(mutated())
def test_mutated_midi_files(data):
    read_and_round_trip(data)


@FUZZ
@given(st.one_of(st.binary(max_size=512), st.text(max_size=200).map(lambda t: t.encode("utf-8"))))
def test_random_bytes_as_text(data):
    try:
        text = decode_text(data, "fuzz")
    except RnngenError:
        return
    assert "\r" not in text
    if text:
        codec = TextCodec.fit(text)
        assert codec.decode(codec.encode_corpus(text).tolist()) == text
