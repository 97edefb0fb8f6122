"""MIDI mode: the codec's round trips, the parser's rules, grammar-masked sampling, the CLI, bad files.

Every MIDI file is built here with mido; no test needs a trained model or the network.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import mido
import pytest
import torch
from typer.testing import CliRunner

from rnngen.cli import app
from rnngen.codec import codec_from_dict
from rnngen.data import detect_kind
from rnngen.errors import RnngenError
from rnngen.midi import (Grammar, MidiCodec, Note, load_midi_corpus, midi_bytes, output_paths, read_midi,
                         sample_tokens, struck_again)
from rnngen.midi_stats import best_scale, measure
from tests.conftest import TINY, tiny_model

runner = CliRunner()
TPB = 480  # 40 ticks per grid step
STEP = TPB // 12


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def note(tick, length, pitch, velocity=80, channel=0, off_as_note_on=False):
    """(tick, message) pairs for one note; the off can be a note_on with velocity 0."""
    off = (mido.Message("note_on", channel=channel, note=pitch, velocity=0) if off_as_note_on
           else mido.Message("note_off", channel=channel, note=pitch, velocity=64))
    return [(tick, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)), (tick + length, off)]


def track(events):
    """A track from (absolute tick, message) pairs; equal ticks keep the order given."""
    out, now = mido.MidiTrack(), 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        out.append(msg.copy(time=tick - now))
        now = tick
    return out


def write(path: Path, tracks, type=1, tpb=TPB) -> Path:
    mid = mido.MidiFile(type=type, ticks_per_beat=tpb)
    mid.tracks.extend(track(t) for t in tracks)
    mid.save(path)
    return path


def grid(notes):
    return [(n.onset, n.pitch, n.dur) for n in notes]


def melody(seed: int, n: int = 40):
    """A little random piece: chords and single notes on the grid, as events for one track."""
    rng = random.Random(seed)
    events, tick = [], 0
    for _ in range(n):
        for pitch in rng.sample(range(55, 80), rng.choice([1, 1, 2, 3])):
            events += note(tick, rng.choice([3, 6, 12, 24]) * STEP, pitch, velocity=rng.choice([60, 90, 110]))
        tick += rng.choice([3, 6, 12]) * STEP
    return events


@pytest.fixture
def folder(tmp_path) -> Path:
    """Five small MIDI files, enough for a tiny training run."""
    corpus = tmp_path / "midi"
    corpus.mkdir()
    for i in range(5):
        write(corpus / f"piece{i}.mid", [[(0, mido.MetaMessage("set_tempo", tempo=600_000))], melody(i)])
    return corpus


@pytest.fixture(scope="module")
def midi_model(tmp_path_factory) -> Path:
    """A MIDI checkpoint after three steps: as good as untrained, which is what the grammar must survive."""
    tmp = tmp_path_factory.mktemp("model")
    corpus = tmp / "midi"
    corpus.mkdir()
    for i in range(5):
        write(corpus / f"piece{i}.mid", [[(0, mido.MetaMessage("set_tempo", tempo=600_000))], melody(i)])
    out = tmp / "m.pt"
    result = invoke("train", corpus, *TINY, "--max-steps", 3, "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    return out


# --------------------------------------------------------------------------------------------------
# reading and the round trip


def test_round_trip_keeps_every_note_on_the_grid(tmp_path):
    conductor = [(0, mido.MetaMessage("set_tempo", tempo=500_000)),
                 (0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
                 (4 * TPB, mido.MetaMessage("set_tempo", tempo=300_000)),  # faster from beat 4 on
                 (6 * TPB, mido.MetaMessage("time_signature", numerator=3, denominator=4))]
    upper = (note(0, TPB, 72) + note(0, TPB, 76) + note(0, TPB, 79)  # a chord
             + note(TPB, TPB, 60) + note(TPB + TPB // 2, TPB, 60)  # one pitch overlapping itself
             + note(5 * TPB, TPB // 3, 67, off_as_note_on=True)  # a triplet eighth, off as velocity 0
             + note(7 * TPB + TPB // 4, 3 * TPB, 64, velocity=30))  # long and soft, after the changes
    lower = note(0, 2 * TPB, 48, channel=1) + note(2 * TPB, 5 * TPB, 43, channel=2)
    path = write(tmp_path / "a.mid", [conductor, upper, lower])

    piece = read_midi(path)
    expected = [(0, 48, 24), (0, 72, 12), (0, 76, 12), (0, 79, 12), (12, 60, 12), (18, 60, 12),
                (24, 43, 60), (60, 67, 4), (87, 64, 36)]
    assert grid(piece.notes) == expected
    assert piece.qpm == pytest.approx(120)

    codec = MidiCodec()
    tokens = codec.encode(piece.notes)
    assert grid(codec.decode(tokens)) == expected
    assert [codec.token_name(t) for t in tokens[:6]] == ["BOS", "PITCH_48", "DUR_24", "PITCH_72", "DUR_12",
                                                          "PITCH_76"]
    assert "DUR_48" in [codec.token_name(t) for t in tokens]  # 60 steps: DUR_48 DUR_12
    # Velocity only where it changes; decoded velocities stay in their bins.
    assert [codec.token_name(t) for t in tokens].count("VEL_1") == 1
    assert [codec.velocity_bin(n.velocity) for n in codec.decode(tokens)] == \
           [codec.velocity_bin(n.velocity) for n in piece.notes]
    # Written and read again: the same notes, one tempo, one program; as on a keyboard, the
    # second strike of 60 ends the first one there.
    data = midi_bytes(codec.decode(tokens), qpm=90, program=19)
    assert grid(read_midi(data).notes) == [(12, 60, 6) if n == (12, 60, 12) else n for n in expected]
    mid = mido.MidiFile(file=io.BytesIO(data))
    messages = [m for t in mid.tracks for m in t]
    assert [m.tempo for m in messages if m.type == "set_tempo"] == [mido.bpm2tempo(90)]
    assert [m.program for m in messages if m.type == "program_change"] == [19]


def test_type_0_off_grid_ticks_and_unclosed_notes(tmp_path):
    tpb = 96  # 8 ticks per step: ticks off the grid round to the nearest step
    events = [(0, mido.Message("note_on", channel=3, note=60, velocity=70)),
              (45, mido.Message("note_off", channel=3, note=60)),  # 5.6 steps -> 6
              (50, mido.Message("note_on", channel=0, note=64, velocity=70)),  # 6.25 -> 6
              (50, mido.Message("note_on", channel=0, note=67, velocity=70)),  # never closed
              (98, mido.Message("note_off", channel=0, note=64)),  # 12.25 -> 12
              (200, mido.MetaMessage("end_of_track"))]  # closes 67 at 25 steps
    path = write(tmp_path / "t0.mid", [events], type=0, tpb=tpb)
    assert grid(read_midi(path).notes) == [(0, 60, 6), (6, 64, 6), (6, 67, 19)]


def test_doubled_voices_merge_into_one_note(tmp_path):
    # Two tracks playing the same line (as the chorales' horn doubles the soprano) are one key.
    line = note(0, TPB, 67) + note(TPB, TPB, 69)
    path = write(tmp_path / "d.mid", [line, note(0, 2 * TPB, 67, channel=1) + note(TPB, TPB, 69, channel=1)])
    assert grid(read_midi(path).notes) == [(0, 67, 24), (12, 69, 12)]


def test_drums_skipped_by_default_and_kept_on_request(tmp_path):
    path = write(tmp_path / "dr.mid", [note(0, TPB, 60) + note(0, TPB // 4, 36, channel=9)])
    assert grid(read_midi(path).notes) == [(0, 60, 12)]
    assert grid(read_midi(path, drums=True).notes) == [(0, 36, 3), (0, 60, 12)]


@pytest.mark.parametrize("name, content, reason", [
    ("empty.mid", b"", "empty"),
    ("random.mid", bytes(random.Random(1).randrange(256) for _ in range(300)), "not a midi file"),
    ("text.mid", b"just some text\n" * 10, "not a midi file"),
])
def test_unreadable_bytes_say_why(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RnngenError, match=f"(?i){reason}"):
        read_midi(path)


def test_truncated_type_2_and_drums_only_files_say_why(tmp_path):
    good = write(tmp_path / "g.mid", [melody(0)])
    with pytest.raises(RnngenError, match="truncated"):
        read_midi(good.read_bytes()[:-20])
    with pytest.raises(RnngenError, match="type 2"):
        read_midi(write(tmp_path / "t2.mid", [melody(0)], type=2))
    with pytest.raises(RnngenError, match="drum"):
        read_midi(write(tmp_path / "drums.mid", [note(0, TPB, 36, channel=9)]))
    with pytest.raises(RnngenError, match="no notes"):
        read_midi(write(tmp_path / "silent.mid", [[(0, mido.MetaMessage("set_tempo", tempo=500_000))]]))


def test_codec_settings_travel_as_plain_data():
    codec = MidiCodec(drums=True)
    d = codec.to_dict()
    assert d["type"] == "midi" and codec.vocab_size <= 256
    assert all(isinstance(v, (str, int, float, bool)) for v in d.values())
    again = codec_from_dict(d)
    assert isinstance(again, MidiCodec) and again.to_dict() == d and again.vocab_size == codec.vocab_size
    assert "12 steps per quarter" in again.describe()
    with pytest.raises(RnngenError):
        codec_from_dict({**d, "max_dur": -3})


# --------------------------------------------------------------------------------------------------
# the corpus


def test_corpus_holds_out_whole_files_and_transposes_training_only(folder):
    files = sorted(folder.iterdir())
    codec, train, val, names, *_ = load_midi_corpus(files, val_frac=0.2, seed=1)
    assert train.dtype == torch.uint8 and train.dim() == 1 and len(names) == 5
    assert (val == codec.bos).sum() == 1 and (val == codec.eos).sum() == 1  # one whole piece
    assert val[0] == codec.bos and val[-1] == codec.eos
    assert (train == codec.bos).sum() == 4
    pieces = {tuple(codec.encode(read_midi(f).notes)) for f in files}
    assert tuple(val.tolist()) in pieces
    _, train2, val2, *_ = load_midi_corpus(files, val_frac=0.2, seed=1, transpose=2)
    assert torch.equal(val2, val)
    assert (train2 == codec.bos).sum() == 4 * 5  # each piece at -2..+2 semitones


def test_corpus_skips_bad_files_and_fails_when_none_are_left(tmp_path, folder, capsys):
    (folder / "empty.mid").write_bytes(b"")
    (folder / "README.txt").write_text("not music")
    names = load_midi_corpus(sorted(folder.iterdir()), val_frac=0.2, seed=1).names
    err = capsys.readouterr().err.splitlines()
    assert len(names) == 5 and len(err) == 2
    assert any("empty.mid" in line and "empty" in line for line in err)
    with pytest.raises(RnngenError, match="no usable MIDI files"):
        load_midi_corpus([folder / "empty.mid", folder / "README.txt"], val_frac=0.1, seed=1)


def test_auto_kind_goes_by_the_majority(folder):
    (folder / "README.txt").write_text("not music")
    assert detect_kind(sorted(folder.iterdir())) == "midi"
    assert detect_kind([folder / "README.txt", folder / "piece0.mid"]) == "text"


# --------------------------------------------------------------------------------------------------
# grammar and sampling


def assert_canonical(codec: MidiCodec, tokens: list[int]) -> None:
    """Tokens that decode, and that are exactly what the encoder writes for what they decode to."""
    notes = codec.decode(tokens)
    again = codec.encode(notes)
    if tokens[-1] == codec.eos:
        assert again == tokens
    else:  # cut by the length limit: a prefix of the full encoding, up to an unfinished note
        assert tokens[: len(again) - 1] == again[:-1]


def test_the_grammar_accepts_what_the_encoder_writes(tmp_path):
    codec = MidiCodec()
    rng = random.Random(0)
    notes = [Note(rng.randrange(0, 400), rng.randrange(0, 128), rng.randrange(1, 130), rng.randrange(1, 128))
             for _ in range(300)] + [Note(500, 127, 2, 40), Note(500, 126, 1, 90)]
    tokens = codec.encode(notes)
    grammar = Grammar(codec, batch=1)
    last = None
    for t in tokens[1:]:
        assert grammar(last)[0, t], codec.token_name(t)
        last = torch.tensor([t])
    assert not grammar(last)[0, codec.bos]


def test_every_sample_of_an_untrained_model_decodes():
    codec = MidiCodec()
    model = tiny_model(vocab=codec.vocab_size).eval()
    rows = sample_tokens(model, codec, [codec.bos], length=120, batch=40, temperature=1.5, seed=3)
    assert len(rows) == 40
    for row in rows:
        assert codec.bos not in row
        assert codec.eos not in row[:-1]
        assert_canonical(codec, [codec.bos] + row)
        notes = codec.decode([codec.bos] + row)
        if notes:  # and the file written from it reads back note for note
            assert grid(read_midi(midi_bytes(notes)).notes) == grid(struck_again(notes))


def test_eos_ends_a_row_and_all_finished_rows_stop_early():
    codec = MidiCodec()
    model = tiny_model(vocab=codec.vocab_size).eval()
    with torch.no_grad():  # a model that loves EOS: rows end as soon as the grammar lets them
        model.head.bias[codec.eos] = 50.0
    rows = sample_tokens(model, codec, [codec.bos], length=500, batch=8, seed=0)
    for row in rows:
        assert row[-1] == codec.eos and len(row) < 500
        assert len(codec.decode([codec.bos] + row)) >= 1


def test_output_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_paths("x.mid", 1, "m-1") == [Path("x.mid")]
    assert output_paths("x.mid", 3, "m-1") == [Path("x-1.mid"), Path("x-2.mid"), Path("x-3.mid")]
    assert output_paths(None, 1, "bach-7") == [Path("bach-7.mid")]
    paths = output_paths("new/", 12, "m-1")
    assert paths[0] == Path("new/sample-01.mid") and len(paths) == 12 and Path("new").is_dir()
    with pytest.raises(RnngenError, match="does not exist"):
        output_paths("missing/x.mid", 1, "m")


# --------------------------------------------------------------------------------------------------
# the command line


def test_train_sample_eval_and_info_through_the_cli(tmp_path, midi_model, folder):
    info = invoke("info", midi_model)
    assert info.exit_code == 0 and "midi, 12 steps per quarter" in info.stdout and "nats/event" in info.stdout

    out = tmp_path / "many"
    result = invoke("sample", midi_model, "-b", 32, "-n", 120, "-s", 5, "-t", 1.5, "--qpm", 96, "--program", 40,
                    "-o", f"{out}/")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    files = sorted(out.iterdir())
    assert len(files) == 32 and files[0].name == "sample-01.mid"
    assert result.stderr.count("wrote ") == 32
    for f in files:
        mid = mido.MidiFile(f)  # any MIDI reader opens it
        messages = [m for t in mid.tracks for m in t]
        assert [m.tempo for m in messages if m.type == "set_tempo"] == [mido.bpm2tempo(96)]
        assert [m.program for m in messages if m.type == "program_change"] == [40]
        assert read_midi(f).notes

    again = invoke("sample", midi_model, "-b", 32, "-n", 120, "-s", 5, "-t", 1.5, "--qpm", 96, "--program", 40,
                   "-o", f"{tmp_path}/again/", "-q")
    assert again.exit_code == 0 and again.stderr == ""
    assert (tmp_path / "again" / "sample-07.mid").read_bytes() == (out / "sample-07.mid").read_bytes()

    ev = invoke("eval", midi_model, folder, "--device", "cpu")
    assert ev.exit_code == 0, ev.stderr
    assert "nats/event" in ev.stdout and float(ev.stdout.split()[0]) > 0


def test_sample_to_stdout_numbered_files_and_the_default_name(tmp_path, midi_model, monkeypatch):
    piped = invoke("sample", midi_model, "-n", 60, "-s", 1, "-o", "-")
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout_bytes.startswith(b"MThd")
    assert mido.MidiFile(file=io.BytesIO(piped.stdout_bytes)).tracks

    one = invoke("sample", midi_model, "-n", 60, "-s", 1, "-o", tmp_path / "one.mid", "-q")
    assert one.exit_code == 0 and (tmp_path / "one.mid").read_bytes() == piped.stdout_bytes

    result = invoke("sample", midi_model, "-n", 60, "-b", 3, "-s", 1, "-o", tmp_path / "x.mid", "-q")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("x*.mid")) == ["x-1.mid", "x-2.mid", "x-3.mid"]

    monkeypatch.chdir(tmp_path)
    result = invoke("sample", midi_model, "-n", 60, "-s", 4)
    assert result.exit_code == 0 and "m-4.mid" in result.stderr
    assert (tmp_path / "m-4.mid").exists()


def test_sample_never_replaces_a_file_and_numbers_on_in_a_folder(tmp_path, midi_model, monkeypatch):
    out = tmp_path / "out"
    assert invoke("sample", midi_model, "-n", 40, "-s", 1, "-b", 2, "-o", f"{out}/", "-q").exit_code == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    again = invoke("sample", midi_model, "-n", 40, "-s", 2, "-b", 2, "-o", f"{out}/")
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sample-1.mid", "sample-2.mid", "sample-3.mid", "sample-4.mid"]
    assert all((out / name).read_bytes() == data for name, data in first.items())
    assert f"wrote {out / 'sample-3.mid'}" in again.stderr and f"wrote {out / 'sample-4.mid'}" in again.stderr
    assert "sample-1" not in again.stderr
    assert invoke("sample", midi_model, "-n", 40, "-s", 3, "-o", out, "-q").exit_code == 0  # a folder, no slash
    assert (out / "sample-5.mid").exists()

    def refused(result, path, before):
        assert_one_line_error(result, "--force")
        assert path.read_bytes() == before

    mine = tmp_path / "mine.mid"
    mine.write_bytes(b"MThd mine")
    refused(invoke("sample", midi_model, "-n", 40, "-s", 1, "-o", mine), mine, b"MThd mine")
    result = invoke("sample", midi_model, "-n", 40, "-s", 1, "-o", mine, "--force", "-q")
    assert result.exit_code == 0 and read_midi(mine).notes
    (tmp_path / "x-2.mid").write_bytes(b"MThd two")
    refused(invoke("sample", midi_model, "-n", 40, "-s", 1, "-b", 3, "-o", tmp_path / "x.mid"), tmp_path / "x-2.mid",
            b"MThd two")
    assert not (tmp_path / "x-1.mid").exists()  # refused before any was written
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m-4.mid").write_bytes(b"MThd four")  # the default name: model and seed
    refused(invoke("sample", midi_model, "-n", 40, "-s", 4), tmp_path / "m-4.mid", b"MThd four")


def test_numbering_in_a_folder_goes_on_after_any_sample_there(tmp_path):
    folder = tmp_path / "f"
    assert output_paths(f"{folder}/", 1, "m") == [folder / "sample.mid"]
    (folder / "sample.mid").write_bytes(b"")
    assert output_paths(str(folder), 2, "m") == [folder / "sample-2.mid", folder / "sample-3.mid"]
    (folder / "sample-12.wav").write_bytes(b"")  # any extension: an --audio file counts
    assert output_paths(str(folder), 1, "m") == [folder / "sample-13.mid"]
    assert output_paths(f"{tmp_path / 'g'}/", 10, "m")[0] == tmp_path / "g" / "sample-01.mid"


def test_text_options_and_file_names_are_usage_errors_for_a_midi_model(tmp_path, midi_model, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even the default file
    for args, match in [(["--format", "jsonl"], "--format jsonl"), (["--stop", "x"], "--stop"),
                        (["--separator", "--"], "--separator"), (["-o", "chorale.txt"], "chorale.mid"),
                        (["-o", "song"], "song.mid")]:
        assert_one_line_error(invoke("sample", midi_model, "-n", 20, "-s", 1, *args), match, code=2)
    assert list(tmp_path.iterdir()) == []


def test_primer_is_continued_with_its_tempo(tmp_path, midi_model):
    primer = write(tmp_path / "primer.mid", [[(0, mido.MetaMessage("set_tempo", tempo=750_000))], melody(9, 12)])
    out = tmp_path / "cont.mid"
    result = invoke("sample", midi_model, "-f", primer, "-n", 80, "-s", 2, "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    given, continued = read_midi(primer), read_midi(out)
    assert continued.qpm == pytest.approx(80)
    assert {n[:2] for n in given.notes} <= {n[:2] for n in continued.notes}  # (onset, pitch)
    assert len(continued.notes) > len(given.notes)
    alone = tmp_path / "alone.mid"
    result = invoke("sample", midi_model, "-f", primer, "-n", 80, "-s", 2, "-o", alone, "-q", "--no-echo")
    assert result.exit_code == 0, result.stderr
    new = read_midi(alone).notes
    assert len(new) == len(continued.notes) - len(given.notes) and new[0].onset == 0


def test_bad_files_are_listed_and_skipped_in_training(tmp_path, folder):
    good = (folder / "piece0.mid").read_bytes()
    (folder / "truncated.mid").write_bytes(good[: len(good) // 2])
    (folder / "random.mid").write_bytes(bytes(random.Random(2).randrange(256) for _ in range(200)))
    (folder / "zero.mid").write_bytes(b"")
    write(folder / "type2.mid", [melody(0)], type=2)
    write(folder / "drums.mid", [note(0, TPB, 36, channel=9)])
    result = invoke("train", folder, *TINY, "--max-steps", 2, "--out", tmp_path / "m.pt")
    assert result.exit_code == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 5
    assert "truncated" in result.stderr and "type 2" in result.stderr and "drum" in result.stderr


def assert_one_line_error(result, match, code=1):
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert not isinstance(result.exception, (TypeError, AttributeError, ValueError))
    lines = [line for line in result.stderr.splitlines() if not line.startswith("skipped")]
    assert len(lines) == 1 and match.lower() in lines[0].lower(), result.stderr


def test_nothing_usable_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mid").write_bytes(b"MThd\x00\x00")
    (bad / "b.mid").write_bytes(b"")
    result = invoke("train", bad, "--max-steps", 2, "--out", tmp_path / "m.pt")
    assert_one_line_error(result, "no usable midi files")
    assert result.stderr.count("skipped") == 2
    text_only = tmp_path / "text"
    text_only.mkdir()
    (text_only / "notes.txt").write_text("no music here")
    assert_one_line_error(invoke("train", text_only, "--kind", "midi", "--out", tmp_path / "m.pt"),
                          "no usable midi files")


def test_mixing_text_and_midi_is_a_clear_error(tmp_path, midi_model, corpus):
    text_model = tmp_path / "text.pt"
    assert invoke("train", corpus, *TINY, "--max-steps", 2, "--out", text_model, "-q").exit_code == 0
    primer = write(tmp_path / "p.mid", [melody(1, 5)])
    assert_one_line_error(invoke("sample", text_model, "-f", primer), "is a MIDI file")
    assert_one_line_error(invoke("sample", text_model, "--qpm", 100), "text model", code=2)
    assert_one_line_error(invoke("sample", midi_model, "-p", "ROMEO:", "-o", tmp_path / "x.mid"), "-f", code=2)
    assert_one_line_error(invoke("sample", midi_model, "-f", corpus, "-o", tmp_path / "x.mid"), "not a MIDI file")
    assert not (tmp_path / "x.mid").exists()
    result = invoke("sample", midi_model, "--program", 200)
    assert result.exit_code == 2 and "--program" in result.stderr


# --------------------------------------------------------------------------------------------------
# statistics


def test_stats_of_a_known_piece(tmp_path):
    # C major triads, four beats, one each beat: every note in C major, three at a time.
    events = []
    for beat, root in enumerate([60, 65, 67, 60]):
        for p in (root, root + 4, root + 7):
            events += note(beat * TPB, TPB, p)
    path = write(tmp_path / "c.mid", [events])
    notes = read_midi(path).notes
    s = measure([notes])
    assert s.notes == 12 and s.notes_per_beat == pytest.approx(3.0)
    assert s.polyphony == pytest.approx(3.0) and s.scale_share == pytest.approx(1.0)
    assert (s.lowest, s.highest) == (60, 74)
    assert best_scale(notes)[0] == "C major"

    result = invoke("stats", path, tmp_path / "nothing.mid")
    assert result.exit_code == 1  # a missing file is an error, not a skip
    (tmp_path / "junk.mid").write_bytes(b"junk")
    result = invoke("stats", path, tmp_path / "junk.mid")
    assert result.exit_code == 0, result.stderr
    assert "files decoded    1 of 2" in result.stdout and "notes per beat   3.00" in result.stdout
    assert "skipped" in result.stderr and "100.0% of notes" in result.stdout


def test_stats_prints_track_names_without_control_characters(tmp_path):
    name = lambda text: [(0, mido.MetaMessage("track_name", name=text))]  # noqa: E731
    path = write(tmp_path / "n.mid", [name("Sop\rrano") + melody(1, 8), name("Al\x00to\tII") + melody(2, 8)])
    result = invoke("stats", path)
    assert result.exit_code == 0, result.stderr
    assert not any(ch in result.stdout for ch in "\r\x00\t")
    rows = result.stdout.split("by mean pitch:\n")[1].splitlines()
    assert sorted(row.split("  ")[1] for row in rows) == ["Al to II", "Sop rano"]
    assert len({row.index(" notes in ") for row in rows}) == 1  # the columns line up


def test_transposed_run_resumes_with_its_settings(tmp_path, folder):
    out = tmp_path / "t.pt"
    first = invoke("train", folder, *TINY, "--max-steps", 2, "--transpose", 1, "--out", out)
    assert first.exit_code == 0, first.stderr
    assert "train / " in first.stderr
    resumed = invoke("train", "--resume", tmp_path / "t.last.pt", "--max-steps", 3)
    assert resumed.exit_code == 0, resumed.stderr
    # The same pieces, the same copies: the resumed run reads the corpus exactly as the first did.
    assert first.stderr.split("events, vocabulary")[0].split("on 5 files:")[1] == \
        resumed.stderr.split("events, vocabulary")[0].split("on 5 files:")[1]
    assert_one_line_error(invoke("train", "--resume", tmp_path / "t.last.pt", "--max-steps", 4, "--transpose", 2),
                          "cannot change")
