"""The Python API (rnngen/api.py): the same samples, files and scores as the CLI, one path under both."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import rnngen
from rnngen import RnngenError
from tests.conftest import make_text
from tests.test_cli import invoke


def test_text_samples_equal_the_cli_for_one_seed():
    m = rnngen.load("shakespeare", precision="fp32")
    texts = m.sample(120, prime="ROMEO:", seed=7, batch=3, stop=["\n\n"])
    cli = invoke("sample", "-n", 120, "-p", "ROMEO:", "-s", 7, "-b", 3, "--stop", r"\n\n", "--format", "jsonl",
                 "--precision", "fp32")
    assert cli.exit_code == 0, cli.stderr
    assert texts == [json.loads(line)["text"] for line in cli.stdout.splitlines()]
    assert len(texts) == 3 and len(set(texts)) == 3 and all(t for t in texts)


def test_a_stream_is_the_single_sample_and_the_cli_prints_it():
    m = rnngen.load("shakespeare", precision="fp32")
    pieces = list(m.stream(90, prime="JULIET:", seed=3))
    assert len(pieces) > 1  # yielded as it is made, not at the end
    assert "".join(pieces) == m.sample(90, prime="JULIET:", seed=3)[0]
    cli = invoke("sample", "-n", 90, "-p", "JULIET:", "-s", 3, "--no-echo", "--precision", "fp32")
    assert cli.stdout.rstrip("\n") == "".join(pieces).rstrip("\n")


def test_midi_pieces_save_the_bytes_the_cli_writes(tmp_path):
    pieces = rnngen.load("bach").sample(150, batch=2, seed=1)
    assert len(pieces) == 2 and all(isinstance(p, rnngen.Piece) for p in pieces)
    assert pieces[0].notes and {p.name for p in pieces[0].parts} == {"Soprano", "Alto", "Tenor", "Bass"}
    assert {n.part for n in pieces[0].notes} <= set(range(len(pieces[0].parts)))  # a note's part indexes parts
    saved = pieces[1].save(tmp_path / "api.mid")
    cli = invoke("sample", "bach", "-n", 150, "-b", 2, "-s", 1, "-o", f"{tmp_path / 'cli'}/")
    assert cli.exit_code == 0, cli.stderr
    assert saved.read_bytes() == (tmp_path / "cli" / "sample-2.mid").read_bytes()
    with pytest.raises(RnngenError, match="already exists"):
        pieces[0].save(saved)  # the overwrite rule holds here too
    pieces[0].save(saved, force=True)
    assert saved.read_bytes() == pieces[0].midi


def test_a_score_is_what_eval_prints(tmp_path):
    text = tmp_path / "held.txt"
    text.write_text(make_text(60, seed=4), encoding="utf-8")
    m = rnngen.load("shakespeare")
    score = m.score(text.read_text(encoding="utf-8"))
    assert score.tokens == len(text.read_text(encoding="utf-8"))
    assert score.bits == pytest.approx(score.nats / 0.6931471805599453) and score.perplexity > 1
    line = invoke("eval", "shakespeare", text).stdout
    assert line.startswith(f"{score.nats:.4f} nats/char")
    assert m.score(files=[text]) == score


def test_train_takes_the_cli_options_and_reports_each_step(tmp_path, corpus):
    events = []
    out = tmp_path / "api.pt"
    model = rnngen.train([corpus], max_steps=3, layers=1, hidden=32, embed=16, batch_size=4, seq_len=16,
                         precision="fp32", device="cpu", out=out, quiet=True, on_event=events.append)
    assert [e.step for e in events] == [1, 2, 3]
    assert out.exists() and model.net.cfg.hidden == 32
    assert len(model.sample(20, seed=1)[0]) == 20
    with pytest.raises(RnngenError, match="already exists"):
        rnngen.train([corpus], max_steps=1, out=out, quiet=True)
    with pytest.raises(RnngenError, match="no config field"):
        rnngen.train([corpus], max_stpes=1)


def test_a_tagged_model_samples_a_tag_and_scores_each(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(make_text(200, seed=1), encoding="utf-8")
    b.write_text(make_text(200, seed=2).upper(), encoding="utf-8")
    model = rnngen.train([f"low={a}", f"up={b}"], max_steps=2, layers=1, hidden=32, embed=16, batch_size=4,
                         seq_len=16, precision="fp32", out=tmp_path / "t.pt", quiet=True)
    assert model.tags == ("low", "up")
    assert len(model.sample(10, seed=2, tag="up", batch=2)) == 2
    score = model.score("ROMEO:\nthe night.\n")
    assert set(score.by_tag) == {"low", "up"} and score.nats == score.by_tag["low"].nats
    with pytest.raises(RnngenError, match="tag"):
        model.sample(10, tag="middle")


def test_mistakes_are_rnngen_errors():
    with pytest.raises(RnngenError, match="no checkpoint"):
        rnngen.load("no-such-model")
    m = rnngen.load("shakespeare")
    with pytest.raises(RnngenError, match="text or some files"):
        m.score()
    with pytest.raises(RnngenError, match="MIDI model"):
        rnngen.load("bach").sample(10, stop=["x"])
    with pytest.raises(RnngenError, match="stream is for text"):
        next(rnngen.load("bach").stream(10))


def test_a_shipped_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "bach").mkdir()
    monkeypatch.chdir(tmp_path)
    result = invoke("info", "bach")
    assert result.exit_code == 0, result.stderr
    assert "using the shipped model bach" in result.stderr


def test_importing_rnngen_does_not_import_torch():
    code = "import sys, rnngen; rnngen.RnngenError; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_the_notebook_example_runs(tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "notebook.py"
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("---") == 3 and "Soprano" in done.stdout


def test_rnngen_train_stays_the_api_function_once_the_trainer_is_imported():
    import rnngen.trainer  # noqa: F401  (a submodule import binds its name on the package)

    assert callable(rnngen.train) and rnngen.train.__module__ == "rnngen.api"
