"""MIDI parts: tracks and channels read as parts, written back one track each, the part tokens and
their grammar, --parts, and checkpoints from before parts sampling exactly as they did."""

from __future__ import annotations

import io
import random

import mido
import pytest
import torch

from rnngen import checkpoint
from rnngen.codec import codec_from_dict
from rnngen.errors import RnngenError
from rnngen.midi import Grammar, MidiCodec, Note, midi_bytes, read_midi, sample_tokens, struck_again
from rnngen.midi.corpus import parts_table
from rnngen.midi.files import parts_midi_bytes
from rnngen.midi.kind import written_parts
from rnngen.midi.parts import Part, PartTable
from tests.conftest import TINY, tiny_model
from tests.test_midi import STEP, assert_canonical, invoke, melody, note, write

OLD_CODEC = {"type": "midi", "steps_per_quarter": 12, "max_dur": 48, "max_shift": 48, "velocity_bins": 8,
             "drums": False}


def voice(channel, low, seed, name=None, program=None):
    """A track: its name and program change, then a line of notes between `low` and `low + 12`."""
    rng = random.Random(seed)
    events = [(0, mido.MetaMessage("track_name", name=name))] if name else []
    if program is not None:
        events.append((0, mido.Message("program_change", channel=channel, program=program)))
    for i in range(16):
        events += note(i * 12 * STEP, 12 * STEP, low + rng.randrange(12), channel=channel)
    return events


def quartet(path, seed=0):
    return write(path, [[(0, mido.MetaMessage("set_tempo", tempo=500_000))],
                        voice(0, 67, seed, "Soprano", 0), voice(1, 60, seed + 1, "Alto", 52),
                        voice(2, 53, seed + 2, "Tenor", 52), voice(3, 41, seed + 3, "Bass", 32)])


def cells(notes, parts):
    return sorted((n.onset, n.pitch, n.dur, parts[n.part].name) for n in notes)


def test_tracks_round_trip_with_their_names_programs_and_channels(tmp_path):
    piece = read_midi(quartet(tmp_path / "q.mid"), parts=True)
    assert [(p.name, p.program) for p in piece.parts] == [("Soprano", 0), ("Alto", 52), ("Tenor", 52), ("Bass", 32)]
    codec = MidiCodec(parts=PartTable.fit([piece]))
    assert [r.name for r in codec.parts.roles] == ["Bass", "Tenor", "Alto", "Soprano"]  # lowest first
    notes = codec.decode(codec.encode(codec.notes_of(piece)))
    assert cells(notes, codec.parts.roles) == cells(piece.notes, piece.parts)
    data = parts_midi_bytes(notes, written_parts(codec), codec.parts.written_order())
    mid = mido.MidiFile(file=io.BytesIO(data))
    assert mid.type == 1
    tracks = [t for t in mid.tracks if any(m.type == "note_on" for m in t)]
    assert [t.name for t in tracks] == ["Soprano", "Alto", "Tenor", "Bass"]  # a score's order
    assert [[m.program for m in t if m.type == "program_change"] for t in tracks] == [[0], [52], [52], [32]]
    assert len({m.channel for t in tracks for m in t if m.type == "note_on"}) == 4
    back = read_midi(data, parts=True)
    assert cells(back.notes, back.parts) == cells(piece.notes, piece.parts)


def test_a_drum_part_is_written_on_channel_10(tmp_path):
    drums = [e for i in range(8) for e in note(i * 6 * STEP, 3 * STEP, 36 + i % 3, channel=9)]
    path = write(tmp_path / "d.mid", [voice(0, 60, 1, "Piano", 0), [(0, mido.MetaMessage("track_name", name="Kit"))]
                                      + drums])
    assert len(read_midi(path, parts=True).parts) == 1  # without --drums they are skipped, as before
    piece = read_midi(path, drums=True, parts=True)
    assert [p.drums for p in piece.parts] == [False, True]
    codec = MidiCodec(drums=True, parts=PartTable.fit([piece]))
    assert codec.parts.roles[-1].drums  # drums last
    assert codec.fixed_parts() == {len(codec.parts) - 1}
    notes = codec.decode(codec.encode(codec.notes_of(piece)))
    data = parts_midi_bytes(notes, written_parts(codec), codec.parts.written_order())
    mid = mido.MidiFile(file=io.BytesIO(data))
    channels = [{m.channel for m in t if m.type == "note_on"} for t in mid.tracks if t.name in ("Piano", "Kit")]
    assert channels == [{0}, {9}]


def test_a_type_0_file_has_a_part_per_channel(tmp_path):
    path = write(tmp_path / "t0.mid", [voice(0, 70, 1, program=40) + voice(1, 50, 2, program=42)
                                       + [(0, mido.MetaMessage("track_name", name="Song"))]], type=0)
    piece = read_midi(path, parts=True)
    assert [(p.name, p.program) for p in piece.parts] == [("", 40), ("", 42)]
    assert {n.part for n in piece.notes} == {0, 1}
    codec = MidiCodec(parts=PartTable.fit([piece]))
    assert [r.program for r in codec.parts.roles] == [42, 40]
    assert len(read_midi(path).notes) == len(piece.notes)  # merged: the same notes, one part


def test_roles_shared_by_program_are_written_as_named_tracks(tmp_path):
    path = write(tmp_path / "t0.mid", [voice(0, 70, 1, program=40) + voice(1, 50, 2, program=42)], type=0)
    piece = read_midi(path, parts=True)  # parts with no name: roles by program
    codec = MidiCodec(parts=PartTable.fit([piece]))
    data = parts_midi_bytes(codec.decode(codec.encode(codec.notes_of(piece))), written_parts(codec),
                            codec.parts.written_order())
    tracks = [t for t in mido.MidiFile(file=io.BytesIO(data)).tracks if any(m.type == "note_on" for m in t)]
    assert [t.name for t in tracks] == ["program 40", "program 42"]
    back = read_midi(data, parts=True)
    assert [(p.name, p.program) for p in back.parts] == [("program 40", 40), ("program 42", 42)]
    assert [codec.parts.role_of(p) for p in back.parts] == [codec.parts.role_of(p) for p in piece.parts]


def test_one_part_pieces_cost_no_part_tokens_and_satb_chords_none_after_the_first():
    codec = MidiCodec(parts=PartTable([Part("B"), Part("T"), Part("A"), Part("S")]))
    chord = [Note(t, p + 12 * r, 12, 88, r) for t in (0, 12, 24) for r, p in enumerate((40, 45, 48, 52))]
    tokens = codec.encode(chord)
    parts = [t for t in tokens if t >= codec.part0]
    assert len(parts) == 3  # the first chord names A, T and S once; after that each voice is expected
    one = [Note(t, p, 6, 88, 0) for t in (0, 6) for p in (60, 64, 67)]
    assert codec.encode(one) == MidiCodec().encode(one)


SATB = [Part("Bass"), Part("Tenor"), Part("Alto"), Part("Soprano")]


def opening_without_the_bass() -> list[Note]:
    """Three chords of four voices, the first without its bass (a pickup in the upper voices)."""
    voices = [(r, p + 12 * r) for r, p in enumerate((40, 45, 48, 52))]
    return [Note(t, p, 12, 88, r) for t in (0, 12, 24) for r, p in voices if t or r]


def test_an_ensemble_expects_its_lowest_voice_at_every_chord():
    ensemble = MidiCodec(parts=PartTable(SATB, named_only=True, ensemble=True))
    tokens = ensemble.encode(opening_without_the_bass())
    assert [ensemble.token_name(t) for t in tokens if t >= ensemble.part0] == ["PART_1"]  # only the pickup
    assert ensemble.decode(tokens) == opening_without_the_bass()
    grammar, last = Grammar(ensemble, batch=1), None
    for t in tokens[1:]:
        assert grammar(last)[0, t], ensemble.token_name(t)
        last = torch.tensor([t])
    # a table of the previous format has no ensemble: the bass, not yet used, is named where it enters
    previous = MidiCodec.from_dict({**OLD_CODEC, "parts": [r.to_dict() for r in SATB], "named_only": True})
    assert not previous.parts.ensemble and previous.parts.ranges is None
    assert previous.to_dict() == {**OLD_CODEC, "parts": [r.to_dict() for r in SATB], "named_only": True}
    tokens = previous.encode(opening_without_the_bass())
    assert [previous.token_name(t) for t in tokens if t >= previous.part0] == ["PART_1", "PART_2", "PART_3",
                                                                             "PART_0"]
    assert previous.decode(tokens) == opening_without_the_bass()


def test_samples_keep_every_part_inside_its_range():
    ranges = [(40, 50), (48, 60), (55, 67), (60, 72)]
    codec = MidiCodec(parts=PartTable(SATB, named_only=True, ensemble=True, ranges=ranges))
    assert MidiCodec.from_dict(codec.to_dict()).parts.ranges == ranges
    for damaged in ([[40, 50]] * 3, [40, 50, 55, 60], [[50, 40]] * 4, [[40, 128]] * 4, [[40, "50"]] * 4):
        with pytest.raises(RnngenError, match="ranges are damaged"):
            MidiCodec.from_dict({**codec.to_dict(), "ranges": damaged})
    model = tiny_model(vocab=codec.vocab_size).eval()
    with torch.no_grad():  # part tokens often, and high notes: every rule at a range's edge is met
        model.head.bias[codec.part0:] = 2.0
        model.head.bias[100:128] = 3.0
    rows = sample_tokens(model, codec, [codec.bos], length=300, batch=48, temperature=1.5, seed=2)
    seen = set()
    for row in rows:
        assert_canonical(codec, [codec.bos] + row)
        notes = codec.decode([codec.bos] + row)
        assert all(ranges[n.part][0] <= n.pitch <= ranges[n.part][1] for n in notes)
        seen |= {(n.part, n.pitch) for n in notes}
    assert {r for r, _ in seen} == {0, 1, 2, 3} and (3, 72) in seen and (0, 40) in seen
    unbounded = sample_tokens(model, MidiCodec(parts=PartTable(SATB)), [codec.bos], 300, 8, 1.5, seed=2)
    assert max(n.pitch for row in unbounded for n in codec.decode([codec.bos] + row)) > 72  # the mask did it


def test_the_grammar_accepts_what_the_encoder_writes_with_parts():
    codec = MidiCodec(parts=PartTable([Part(str(i)) for i in range(5)]))
    rng = random.Random(1)
    notes = [Note(rng.randrange(0, 200), rng.randrange(0, 128), rng.randrange(1, 60), rng.randrange(1, 128),
                  rng.randrange(5)) for _ in range(400)] + [Note(300, 127, 2, 40, 2), Note(300, 127, 2, 40, 4)]
    tokens = codec.encode(notes)
    assert_canonical(codec, tokens)
    grammar, last = Grammar(codec, batch=1), None
    for t in tokens[1:]:
        assert grammar(last)[0, t], codec.token_name(t)
        last = torch.tensor([t])


def test_every_sample_with_parts_decodes_and_is_canonical():
    roles = [Part("Bass", 32), Part("Tenor"), Part("Alto"), Part("Soprano"), Part("Kit", 0, True)]
    codec = MidiCodec(drums=True, parts=PartTable(roles))
    model = tiny_model(vocab=codec.vocab_size).eval()
    with torch.no_grad():  # part tokens often, so that the grammar's part rules are exercised
        model.head.bias[codec.part0:] = 2.0
    rows = sample_tokens(model, codec, [codec.bos], length=200, batch=48, temperature=1.5, seed=4)
    seen = set()
    for row in rows:
        assert codec.bos not in row and codec.eos not in row[:-1]
        assert_canonical(codec, [codec.bos] + row)
        notes = codec.decode([codec.bos] + row)
        seen |= {n.part for n in notes}
        if notes:
            data = parts_midi_bytes(notes, roles, codec.parts.written_order())
            back = read_midi(data, drums=True, parts=True)
            assert cells(back.notes, back.parts) == cells(struck_again(notes), roles)
    assert seen == set(range(5))


def test_checkpoints_from_before_parts_sample_exactly_as_before(tmp_path):
    codec = codec_from_dict(dict(OLD_CODEC))
    assert codec.parts is None and codec.vocab_size == 234 and codec.to_dict() == OLD_CODEC
    torch.manual_seed(0)
    model = tiny_model(vocab=234, layers=1)
    ckpt = checkpoint.make(model, codec, {"val_loss": 1.0})
    ckpt["codec"] = dict(OLD_CODEC)  # exactly what a checkpoint of the old format holds
    checkpoint.save(ckpt, tmp_path / "old.pt")
    result = invoke("sample", tmp_path / "old.pt", "-n", 150, "-s", 3, "-t", 1.2, "-o", tmp_path / "x.mid", "-q",
                    "--precision", "fp32")
    assert result.exit_code == 0, result.stderr
    # the single-stream path of before parts: grammar-masked sampling, decode, one piano track
    model = checkpoint.build_model(checkpoint.load(tmp_path / "old.pt"))
    old = MidiCodec()
    row = sample_tokens(model, old, [old.bos], 150, 1, 1.2, seed=3, precision="fp32")[0]
    expected = midi_bytes(old.decode([old.bos] + row), 12, 120.0, 0)
    assert (tmp_path / "x.mid").read_bytes() == expected
    assert mido.MidiFile(tmp_path / "x.mid").type == 0


def test_parts_options_through_the_cli(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(4):
        quartet(corpus / f"q{i}.mid", seed=i)
    write(corpus / "other.mid", [voice(0, 60, 9, "Flute", 73)])
    out = tmp_path / "satb.pt"
    result = invoke("train", corpus, *TINY, "--max-steps", 2, "--parts", "Soprano, Alto,Tenor,Bass", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert "skipped" in result.stderr and "other.mid" in result.stderr  # no part it keeps
    codec = codec_from_dict(checkpoint.load(out)["codec"])
    assert codec.parts_setting() == "Soprano,Alto,Tenor,Bass" and codec.vocab_size == 238
    assert codec.parts.ensemble and [r.name for r in codec.parts.roles] == ["Bass", "Tenor", "Alto", "Soprano"]
    for (low, high), bottom in zip(codec.parts.ranges, (41, 53, 60, 67)):  # each voice's range in training
        assert bottom <= low <= high <= bottom + 11
    sample = invoke("sample", out, "-n", 200, "-s", 1, "-f", corpus / "q0.mid", "--no-echo", "-o", tmp_path / "s.mid")
    assert sample.exit_code == 0, sample.stderr
    names = [t.name for t in mido.MidiFile(tmp_path / "s.mid").tracks if any(m.type == "note_on" for m in t)]
    assert set(names) <= {"Soprano", "Alto", "Tenor", "Bass"} and names
    ranges = {r.name: codec.parts.ranges[i] for i, r in enumerate(codec.parts.roles)}
    for t in mido.MidiFile(tmp_path / "s.mid").tracks:
        assert all(ranges[t.name][0] <= m.note <= ranges[t.name][1] for m in t if m.type == "note_on")
    merged = invoke("train", corpus, *TINY, "--max-steps", 2, "--parts", "merge", "--out", tmp_path / "m.pt", "-q")
    assert merged.exit_code == 0, merged.stderr
    assert codec_from_dict(checkpoint.load(tmp_path / "m.pt")["codec"]).to_dict() == OLD_CODEC
    grown = invoke("train", corpus, *TINY, "--max-steps", 2, "--init-from", tmp_path / "m.pt", "--parts", "tracks",
                   "--out", tmp_path / "g.pt", "-q")
    assert grown.exit_code == 0, grown.stderr  # a model from before parts learns parts: ids added after its own
    assert codec_from_dict(checkpoint.load(tmp_path / "g.pt")["codec"]).num_parts == 5
    previous = checkpoint.load(out)
    del previous["codec"]["ensemble"], previous["codec"]["ranges"]  # a parts model of the previous format
    checkpoint.save(previous, tmp_path / "previous.pt")
    renewed = invoke("train", corpus, *TINY, "--max-steps", 2, "--init-from", tmp_path / "previous.pt",
                     "--parts", "Soprano,Alto,Tenor,Bass", "--out", tmp_path / "r.pt", "-q")
    assert renewed.exit_code == 0, renewed.stderr  # fine-tuned, it learns the ensemble and the ranges
    assert codec_from_dict(checkpoint.load(tmp_path / "r.pt")["codec"]).to_dict() == codec.to_dict()
    bad = invoke("train", corpus, "--parts", "tracks,Bass")
    assert bad.exit_code == 2 and "--parts" in bad.stderr
    again = invoke("train", "--resume", tmp_path / "satb.last.pt", "--parts", "merge", "--max-steps", 3)
    assert again.exit_code == 1 and "--parts cannot change" in again.stderr


def test_stats_report_each_part(tmp_path):
    result = invoke("stats", quartet(tmp_path / "q.mid"))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "parts            4, by mean pitch:" in lines
    rows = [line.split()[0] for line in lines[lines.index("parts            4, by mean pitch:") + 1:]]
    assert rows == ["Soprano", "Alto", "Tenor", "Bass"]
    assert "16 notes in 1 file" in result.stdout and "mean pitch" in result.stdout


def test_parts_table_fits_names_the_corpus_agrees_on(tmp_path):
    pieces = [read_midi(quartet(tmp_path / f"q{i}.mid", i), parts=True) for i in range(5)]
    pieces.append(read_midi(write(tmp_path / "x.mid", [voice(0, 80, 1, "Oboe", 68)]), parts=True))
    table = parts_table(None, pieces)
    assert [r.label() for r in table.roles] == ["Bass", "Tenor", "Alto", "Soprano", "program 68"]
    assert table.role_of(Part("soprano\rOboe 1", 5)) == 3  # a name's first line, case ignored
    assert table.role_of(Part("Cor anglais", 68)) == 4  # an unknown name: its program's role
    assert table.role_of(Part("Trumpet", 56)) == 1  # nor its program: the nearest program (Tenor's 52)
    assert PartTable.from_dict(table.to_dict()).roles == table.roles
