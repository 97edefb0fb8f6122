"""Pictures: piano rolls of MIDI files built here with mido, loss curves of logs written here, real PNG
files checked for size and content; the one-line errors, also without the `plot` extra."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import mido
import pytest

from rnngen import plot
from rnngen.errors import RnngenError

TPB = 480
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # the first two part colours (tab10)


def two_part_file(path: Path, signature: tuple[int, int] | None = (3, 4), type_1: bool = True) -> Path:
    """Soprano and bass, 6 beats: on two named tracks (type 1) or two channels of one track (type 0)."""
    def part(channel: int, pitches: list[int]) -> list[mido.Message]:
        msgs = []
        for p in pitches:
            msgs += [mido.Message("note_on", channel=channel, note=p, velocity=80),
                     mido.Message("note_off", channel=channel, note=p, velocity=0, time=2 * TPB)]
        return msgs

    meta = [mido.MetaMessage("set_tempo", tempo=500_000)]
    if signature:
        meta.append(mido.MetaMessage("time_signature", numerator=signature[0], denominator=signature[1]))
    soprano, bass = part(0, [72, 74, 76]), part(1, [48, 43, 36])
    if type_1:
        mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
        mid.tracks.append(mido.MidiTrack(meta))
        mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="Soprano")] + soprano))
        mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="Bass")] + bass))
    else:  # the two parts interleaved on one track, each note_off at the same ticks
        merged = []
        for i in range(3):
            merged += [soprano[2 * i], bass[2 * i].copy(time=0), soprano[2 * i + 1], bass[2 * i + 1].copy(time=0)]
        mid = mido.MidiFile(type=0, ticks_per_beat=TPB)
        mid.tracks.append(mido.MidiTrack(meta + merged))
    mid.save(path)
    return path


def pixels(path: Path):
    """(height, width, RGB rows as a set of colours) of a PNG file."""
    image = pytest.importorskip("matplotlib.image")
    np = pytest.importorskip("numpy")
    rgb = (image.imread(path)[:, :, :3] * 255).round().astype(np.int32)  # (H, W, 3)
    packed = np.unique((rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2])  # one int per colour
    return rgb.shape[0], rgb.shape[1], {(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in packed}


def block(monkeypatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


# --------------------------------------------------------------------------------------------------
# reading parts (mido only)


def test_parts_are_tracks_with_their_names(tmp_path):
    roll = plot.read_roll(two_part_file(tmp_path / "a.mid"))
    assert [p.name for p in roll.parts] == ["Soprano", "Bass"]
    assert roll.parts[0].pitches == [72, 74, 76] and roll.parts[0].starts == [0, 2, 4]
    assert roll.parts[1].lengths == [2, 2, 2]
    assert roll.beats == 6 and roll.bar_beats == 3 and roll.bar_start == 0


def test_parts_are_channels_of_one_track(tmp_path):
    roll = plot.read_roll(two_part_file(tmp_path / "a.mid", signature=(6, 8), type_1=False))
    assert [p.name for p in roll.parts] == ["part 1", "part 2"]
    assert roll.parts[1].pitches == [48, 43, 36]
    assert roll.bar_beats == 3  # 6/8: six eighths, three quarter-note beats


def test_no_time_signature_means_no_bar_lines(tmp_path):
    assert plot.read_roll(two_part_file(tmp_path / "a.mid", signature=None)).bar_beats is None


def test_drum_channel_is_named(tmp_path):
    mid = mido.MidiFile(type=0, ticks_per_beat=TPB)
    mid.tracks.append(mido.MidiTrack([mido.Message("note_on", channel=9, note=36, velocity=90),
                                      mido.Message("note_off", channel=9, note=36, time=TPB)]))
    out = io.BytesIO()
    mid.save(file=out)
    roll = plot.read_roll(out.getvalue())
    assert [p.name for p in roll.parts] == ["part 1 (drums)"]


def test_unreadable_midi_is_one_line(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    with pytest.raises(RnngenError, match="cannot draw bad.mid: it is not a readable MIDI file") as e:
        plot.read_roll(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(RnngenError, match="cannot read .*missing.mid"):
        plot.read_roll(tmp_path / "missing.mid")


# --------------------------------------------------------------------------------------------------
# reading logs (no matplotlib)


def write_log(path: Path, steps: int = 50, val_every: int = 10, scale: float = 1.0, tail: str = "") -> Path:
    lines = []
    for step in range(1, steps + 1):
        record = {"step": step, "epoch": step / 100, "loss": scale * (1 + 3 / step), "lr": 1e-3,
                  "tokens_per_s": 12345.0, "elapsed": step * 0.5}
        if step % val_every == 0:
            record["val_loss"] = scale * (1.2 + 3 / step)
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
    return path


def test_read_log_keeps_training_and_validation_apart(tmp_path):
    run = plot.read_log(write_log(tmp_path / "run-a.jsonl"))
    assert run.name == "run-a" and len(run.steps) == 50 and run.loss[0] == 4.0
    assert run.val_steps == [10, 20, 30, 40, 50] and run.val_elapsed[0] == 5.0
    assert run.val_loss[-1] == pytest.approx(1.26)


def test_a_log_cut_mid_line_reads_up_to_its_last_record(tmp_path):
    run = plot.read_log(write_log(tmp_path / "cut.jsonl", tail='{"step": 51, "lo'))
    assert run.steps[-1] == 50


@pytest.mark.parametrize("content, message", [
    ('{"step": 1, "loss": 2.0}\nnot json\n{"step": 3, "loss": 1.0}\n', r"line 2 is not a training record"),
    ('{"step": 1, "loss": 2.0}\n{"step": 2}\n{"step": 3, "loss": 1.0}\n', r"line 2 is not a training record"),
    ("\n\n", r"has no training records"),
])
def test_bad_logs_are_one_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RnngenError, match=message) as e:
        plot.read_log(path)
    assert "\n" not in str(e.value)


def test_missing_log_is_one_line(tmp_path):
    with pytest.raises(RnngenError, match=r"cannot read the log .*nope.jsonl: No such file"):
        plot.read_log(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------------
# drawing (matplotlib)


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def test_piano_roll_draws_every_file_and_part(mpl, tmp_path):
    one = two_part_file(tmp_path / "one.mid")
    two = two_part_file(tmp_path / "two.mid", signature=None, type_1=False)
    plot.piano_roll([one], tmp_path / "one.png")
    plot.piano_roll([one, two], tmp_path / "two.png")
    h1, w1, colours1 = pixels(tmp_path / "one.png")
    h2, w2, colours2 = pixels(tmp_path / "two.png")
    assert w1 == w2 == 1440 and h1 == round((3.2 + 0.4) * 120) and h2 == round((6.4 + 0.4) * 120)
    for colours in (colours1, colours2):
        assert BLUE in colours and ORANGE in colours  # each part in its own colour
        assert len(colours) > 20  # text, lines and anti-aliased edges: not a blank image


def test_an_empty_file_gets_an_empty_panel(mpl, tmp_path):
    mid = mido.MidiFile(type=0)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)]))
    mid.save(tmp_path / "empty.mid")
    plot.piano_roll([tmp_path / "empty.mid"], tmp_path / "empty.png")
    _, _, colours = pixels(tmp_path / "empty.png")
    assert BLUE not in colours and len(colours) > 2


def test_loss_curves_compare_runs(mpl, tmp_path):
    a = write_log(tmp_path / "small.jsonl")
    b = write_log(tmp_path / "large.jsonl", scale=0.8, val_every=7)
    plot.loss_curves([a, b], tmp_path / "loss.png")
    height, width, colours = pixels(tmp_path / "loss.png")
    assert (width, height) == (1440, 540)
    assert BLUE in colours and ORANGE in colours and len(colours) > 20


def test_loss_curves_also_as_svg(mpl, tmp_path):
    plot.loss_curves([write_log(tmp_path / "run.jsonl")], tmp_path / "loss.svg")
    text = (tmp_path / "loss.svg").read_text()
    assert "<svg" in text and text.count("<path") > 10  # axes, ticks, curves and glyphs


def test_unknown_picture_format(tmp_path):
    with pytest.raises(RnngenError, match=r"cannot draw \.jpg: name the picture \.png, \.svg or \.pdf"):
        plot.loss_curves([write_log(tmp_path / "run.jsonl")], tmp_path / "loss.jpg")


def test_without_the_extra_says_what_to_install(monkeypatch, tmp_path):
    block(monkeypatch, "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")
    log = write_log(tmp_path / "run.jsonl")
    for draw, source in [(plot.loss_curves, log), (plot.piano_roll, two_part_file(tmp_path / "a.mid"))]:
        with pytest.raises(RnngenError) as e:
            draw([source], tmp_path / "out.png")
        assert str(e.value) == ('plot needs the optional packages: pip install "rnngen[plot]" '
                                '(or pip install -e ".[plot]" in a checkout)')
    assert not (tmp_path / "out.png").exists()
