"""`rnngen train --resume`: the same corpus and split as the run had, its sources found from any
folder, and a learning rate that carries on from where it was."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import pytest

from rnngen import checkpoint
from rnngen.midi import kind as midi_kind
from rnngen.trainer import learning_rate
from tests.conftest import TINY, tiny_config
from tests.test_midi import assert_one_line_error, invoke, melody, write
from tests.test_parts import quartet, voice

SATB = "Soprano,Alto,Tenor,Bass"


def skip_some(folder: Path, first: str = "a") -> None:
    """Files that are read and dropped, each in its own way, named so that they sort among the
    pieces: if the split were drawn over the files kept rather than those given, it would move."""
    (folder / f"{first}0-unreadable.mid").write_bytes(b"MThd junk")
    write(folder / f"{first}1-no-notes.mid", [[(0, mido.MetaMessage("set_tempo", tempo=500_000))]])
    write(folder / f"{first}2-drums.mid", [[(i * 240, m) for i in range(8)
                                            for m in [mido.Message("note_on", channel=9, note=36, velocity=90)]]])
    write(folder / f"{first}3-violins.mid", [voice(0, 67, 1, "Violin I"), voice(1, 60, 2, "Violin II")])
    (folder / "notes.txt").write_text("not music")


@pytest.fixture
def chorales(tmp_path) -> Path:
    folder = tmp_path / "chorales"
    folder.mkdir()
    for i in range(8):
        quartet(folder / f"c{i}.mid", seed=i)
    write(folder / "b-piano.mid", [melody(3)])  # one track, unnamed: no part under --parts NAMES
    skip_some(folder)
    return folder


@pytest.fixture
def corpora(monkeypatch) -> list:
    """Every MIDI corpus the train command loads, as loaded (its files, held-out files and ids)."""
    loaded = []
    load = midi_kind.load_midi_corpus

    def keep(*args, **kwargs):
        loaded.append(load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(midi_kind, "load_midi_corpus", keep)
    return loaded


def same_corpus(a, b) -> None:
    assert (a.names, a.held_out) == (b.names, b.held_out)
    assert a.train_ids.tolist() == b.train_ids.tolist() and a.val_ids.tolist() == b.val_ids.tolist()


def header(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("training "))


@pytest.mark.parametrize("parts", [SATB, "tracks"])
def test_a_resumed_midi_run_holds_out_the_same_files(tmp_path, chorales, corpora, parts):
    out = tmp_path / "m.pt"
    first = invoke("train", chorales, *TINY, "--max-steps", 2, "--val-frac", 0.3, "--parts", parts, "--out", out)
    assert first.exit_code == 0, first.stderr
    assert "a0-unreadable.mid: the file is truncated" in first.stderr and "a2-drums.mid: it has drum" in first.stderr
    resumed = invoke("train", "--resume", tmp_path / "m.last.pt", "--max-steps", 3)
    assert resumed.exit_code == 0, resumed.stderr
    assert len(corpora) == 2
    same_corpus(*corpora)
    assert corpora[0].held_out
    if parts == SATB:  # two files read and then dropped, for want of a part so named
        assert len(corpora[0].names) == len(corpora[0].read) - 2 and "a3-violins.mid: none of its parts" in first.stderr
    assert header(first.stderr) == header(resumed.stderr)  # the same counts of events each side
    # The checkpoint records every file the split was drawn over, the dropped ones too.
    saved = checkpoint.load(tmp_path / "m.last.pt")["train"]["config"]["sources"]
    assert saved == corpora[0].read and any("violins" in s for s in saved)


def test_a_resumed_tagged_midi_run_holds_out_the_same_files(tmp_path, corpora):
    folders = []
    for tag in ("x", "y"):
        folder = tmp_path / tag
        folder.mkdir()
        for i in range(5):
            quartet(folder / f"c{i}.mid", seed=10 * len(folders) + i)
        skip_some(folder, first="b")
        folders.append(folder)
    out = tmp_path / "t.pt"
    first = invoke("train", f"x={folders[0]}", f"y={folders[1]}", *TINY, "--max-steps", 2, "--val-frac", 0.3,
                   "--parts", SATB, "--out", out)
    assert first.exit_code == 0, first.stderr
    resumed = invoke("train", "--resume", tmp_path / "t.last.pt", "--max-steps", 3)
    assert resumed.exit_code == 0, resumed.stderr
    # The first run reads all the sources once for the codec, then each tag's; a resumed one has its codec.
    assert len(corpora) == 5
    for a, b in zip(corpora[1:3], corpora[3:]):
        same_corpus(a, b)
    assert header(first.stderr) == header(resumed.stderr)
    saved = checkpoint.load(tmp_path / "t.last.pt")["train"]["config"]["sources"]
    assert saved == [f"{tag}={name}" for tag, c in zip("xy", corpora[1:3]) for name in c.read]


# --------------------------------------------------------------------------------------------------
# sources found from any folder


@pytest.mark.parametrize("source", ["chorales", "satb=chorales"])
def test_a_run_resumes_from_another_folder(tmp_path, chorales, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    first = invoke("train", source, *TINY, "--max-steps", 2, "--parts", SATB, "--out", "m.pt")
    assert first.exit_code == 0, first.stderr
    config = checkpoint.load(tmp_path / "m.last.pt")["train"]["config"]
    assert config["start_folder"] == str(tmp_path)
    assert source.replace("chorales", "chorales/c0.mid") in config["sources"]  # as given: relative
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = invoke("train", "--resume", tmp_path / "m.last.pt", "--max-steps", 3)
    assert resumed.exit_code == 0, resumed.stderr
    note = [line for line in resumed.stderr.splitlines() if "relative sources" in line]
    assert note == [f"reading the run's relative sources from {tmp_path}, where it started"]
    assert header(resumed.stderr) == header(first.stderr)
    assert checkpoint.load(tmp_path / "m.last.pt")["train"]["config"]["sources"] == config["sources"]


def test_a_missing_source_names_its_path_and_the_way_to_give_it(tmp_path, chorales, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train", "chorales", *TINY, "--max-steps", 2, "--out", "m.pt").exit_code == 0
    (tmp_path / "moved").mkdir()
    chorales.rename(tmp_path / "moved" / "chorales")
    monkeypatch.chdir(tmp_path / "moved")
    last = tmp_path / "m.last.pt"
    lost = invoke("train", "--resume", last, "--max-steps", 3)
    missing = tmp_path / checkpoint.load(last)["train"]["config"]["sources"][0]  # the first file the run read
    assert_one_line_error(lost, f"no such file or folder: {missing}, a source of the run resumed (it started in "
                                f"{tmp_path}); if the data has moved, give its sources again: "
                                f"rnngen train SOURCE... --resume {last}")
    again = invoke("train", "chorales", "--resume", last, "--max-steps", 3)  # from here, where it is now
    assert again.exit_code == 0, again.stderr
    config = checkpoint.load(last)["train"]["config"]
    assert config["start_folder"] == str(tmp_path / "moved")  # what was given is what a next resume reads
    assert invoke("train", "--resume", last, "--max-steps", 4).exit_code == 0


def test_a_checkpoint_without_its_start_folder_reads_from_here(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train", corpus.name, *TINY, "--max-steps", 2, "--out", "t.pt").exit_code == 0
    old = checkpoint.load(tmp_path / "t.last.pt")
    del old["train"]["config"]["start_folder"]  # as a checkpoint from before it was recorded
    checkpoint.save(old, tmp_path / "old.last.pt")
    assert invoke("train", "--resume", "old.last.pt", "--max-steps", 3, "-q").exit_code == 0  # from here, as ever
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    checkpoint.save(old, tmp_path / "old.last.pt")
    lost = invoke("train", "--resume", tmp_path / "old.last.pt", "--max-steps", 3)
    assert_one_line_error(lost, f"no such file or folder: {corpus.name}, a source of the run resumed; if the data")


# --------------------------------------------------------------------------------------------------
# the learning rate


def logged_rates(log: Path) -> list[float]:
    return [json.loads(line)["lr"] for line in log.read_text().splitlines()]


@pytest.mark.parametrize("older", [False, True])
def test_a_finished_run_given_more_steps_goes_on_at_the_end_of_its_decay(tmp_path, corpus, older):
    log, out = tmp_path / "log.jsonl", tmp_path / "t.pt"
    first = invoke("train", corpus, *TINY, "--max-steps", 6, "--warmup", 1, "--lr", 0.01, "--log", log, "--out", out)
    assert first.exit_code == 0, first.stderr
    if older:  # a checkpoint from before the schedule was saved: its run's limits are in its settings
        saved = checkpoint.load(tmp_path / "t.last.pt")
        del saved["resume"]["schedule"]
        checkpoint.save(saved, tmp_path / "t.last.pt")
    more = invoke("train", "--resume", tmp_path / "t.last.pt", "--max-steps", 12, "--log", log)
    assert more.exit_code == 0, more.stderr
    assert "resuming at step 6, lr 1.0e-03: its decay has ended, and the run goes on at that rate" in more.stderr
    rates = logged_rates(log)  # a line a step, from both runs
    assert len(rates) == 12 and rates[6] <= rates[5] and rates[6:] == pytest.approx([0.001] * 6)  # lr * 0.1


def test_a_resume_with_the_same_limits_says_where_its_decay_is(tmp_path, corpus):
    first = invoke("train", corpus, *TINY, "--max-steps", 4, "--warmup", 1, "--lr", 8e-3, "--out", tmp_path / "t.pt",
                   "-q")
    assert first.exit_code == 0, first.stderr
    lost = checkpoint.load(tmp_path / "t.last.pt")
    lost["resume"]["step"] = 2  # as if the run had stopped halfway
    checkpoint.save(lost, tmp_path / "half.last.pt")
    resumed = invoke("train", "--resume", tmp_path / "half.last.pt")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming at step 2, lr {learning_rate(tiny_config(lr=8e-3, warmup_steps=1), 2, 0.5):.1e}, " \
           f"decaying to 8.0e-04\n" in resumed.stderr
