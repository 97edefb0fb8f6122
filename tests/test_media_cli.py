"""Hearing and seeing from the command line: `sample` writes audio or a piano roll by the extension
(or audio beside each .mid with --audio), `render` and `plot`, and the loss chart after training."""

from __future__ import annotations

import json
import sys
import wave

import mido
import pytest
from typer.testing import CliRunner

from rnngen.cli import app
from tests.conftest import TINY

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def synth(monkeypatch):
    pytest.importorskip("midirenderer")
    pytest.importorskip("pretty_midi")
    monkeypatch.delenv("RNNGEN_SOUNDFONT", raising=False)


def seconds_of(path) -> tuple[float, int]:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate(), w.getframerate()


def test_sample_writes_audio_by_extension_and_beside_each_midi_file(synth, tmp_path):
    result = invoke("sample", "bach", "-n", 150, "-s", 1, "-o", tmp_path / "x.wav")
    assert result.exit_code == 0, result.stderr
    length, rate = seconds_of(tmp_path / "x.wav")
    assert rate == 48000 and length > 2
    result = invoke("sample", "bach", "-n", 150, "-s", 1, "-b", 2, "-o", f"{tmp_path}/out/", "--audio")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample-1.mid", "sample-1.wav",
                                                                   "sample-2.mid", "sample-2.wav"]
    assert "out/sample-1.mid and " in result.stderr
    piece = mido.MidiFile(tmp_path / "out" / "sample-1.mid").length  # seconds, as the .mid plays
    assert piece < seconds_of(tmp_path / "out" / "sample-1.wav")[0] <= piece + 2.1  # plus the release tail


def test_sample_draws_a_piano_roll_by_extension(tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke("sample", "bach", "-n", 150, "-s", 1, "-o", tmp_path / "roll.png")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "roll.png").read_bytes()[:8] == PNG


def test_render_and_its_targets(synth, tmp_path):
    assert invoke("sample", "bach", "-n", 120, "-s", 2, "-b", 2, "-o", f"{tmp_path}/m/").exit_code == 0
    pieces = sorted((tmp_path / "m").glob("*.mid"))
    result = invoke("render", *pieces, "-o", f"{tmp_path}/a/")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sample-1.wav", "sample-2.wav"]
    assert invoke("render", pieces[0], "-o", tmp_path / "one.flac").exit_code == 0
    assert (tmp_path / "one.flac").read_bytes()[:4] == b"fLaC"
    several = invoke("render", *pieces, "-o", tmp_path / "both.wav")
    assert several.exit_code == 2 and "folder" in several.stderr
    wrong = invoke("render", pieces[0], "-o", tmp_path / "x.mp3")
    assert wrong.exit_code == 2 and ".wav or .flac" in wrong.stderr


def test_plot_draws_logs_or_pieces_but_not_both(tmp_path):
    pytest.importorskip("matplotlib")
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "loss": 4 - s / 10, "elapsed": s, "val_loss": 4 - s / 12})
                             for s in range(1, 20)) + "\n")
    result = invoke("plot", log, "-o", tmp_path / "curve.png")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG
    mixed = invoke("plot", log, tmp_path / "x.mid", "-o", tmp_path / "y.png")
    assert mixed.exit_code == 2 and "not both" in mixed.stderr


def test_audio_options_on_a_text_model_and_a_missing_extra_are_one_line(monkeypatch, tmp_path):
    result = invoke("sample", "-n", 10, "--audio")
    assert result.exit_code == 2 and "for MIDI models" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.setitem(sys.modules, "midirenderer", None)  # as without the audio extra
    result = invoke("sample", "bach", "-n", 10, "-o", tmp_path / "x.wav")
    assert result.exit_code == 1 and 'pip install "rnngen[audio]"' in result.stderr
    assert not (tmp_path / "x.wav").exists()


def test_training_ends_with_the_validation_curve_and_info_keeps_it(tmp_path, corpus):
    out = tmp_path / "m.pt"
    result = invoke("train", corpus, *TINY, "--max-steps", 6, "--eval-every", 2, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "over 3 evaluations, best" in result.stderr  # one plain line off a terminal
    info = invoke("info", out)
    assert "over 3 evaluations" in info.stdout


def refused(result, path, before: bytes) -> None:
    """One line naming --force, a non-zero exit, and the file as it was."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--force" in result.stderr
    assert path.read_bytes() == before


def test_render_and_plot_replace_a_file_only_with_force(tmp_path):
    pytest.importorskip("matplotlib")
    piece = tmp_path / "piece.mid"
    assert invoke("sample", "bach", "-n", 60, "-s", 1, "-o", piece, "-q").exit_code == 0
    beside = tmp_path / "piece.wav"  # where render puts it by default
    beside.write_bytes(b"my recording")
    refused(invoke("render", piece), beside, b"my recording")
    refused(invoke("render", piece, "-o", beside), beside, b"my recording")

    picture = tmp_path / "roll.png"
    picture.write_bytes(b"my drawing")
    refused(invoke("plot", piece, "-o", picture), picture, b"my drawing")
    result = invoke("plot", piece, "-o", picture, "--force")
    assert result.exit_code == 0, result.stderr
    assert picture.read_bytes()[:8] == PNG


def test_render_replaces_with_force(synth, tmp_path):
    piece = tmp_path / "piece.mid"
    assert invoke("sample", "bach", "-n", 60, "-s", 1, "-o", piece, "-q").exit_code == 0
    (tmp_path / "piece.wav").write_bytes(b"my recording")
    result = invoke("render", piece, "--force")
    assert result.exit_code == 0, result.stderr
    assert seconds_of(tmp_path / "piece.wav")[0] > 0


def test_sample_audio_beside_the_midi_file_is_not_replaced_without_force(tmp_path):
    beside = tmp_path / "x.wav"
    beside.write_bytes(b"my recording")
    refused(invoke("sample", "bach", "-n", 30, "-s", 1, "-o", tmp_path / "x.mid", "--audio"), beside, b"my recording")
    assert not (tmp_path / "x.mid").exists()  # refused before anything was written
