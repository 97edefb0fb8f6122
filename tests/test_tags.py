"""Tags: TAG=PATH sources, a model conditioned on them, --tag in sample, eval, info and export."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnngen import checkpoint
from rnngen.cli import app
from rnngen.config import ModelConfig
from rnngen.data import Streams
from rnngen.errors import RnngenError, UsageError
from rnngen.export import read_metadata
from rnngen.model import RNNModel, StepModel
from rnngen.sample import generate
from rnngen.tags import parse_sources, sample_tags
from rnngen.trainer import evaluate, loss_by_tag
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# -- sources -------------------------------------------------------------------------------------


def test_tag_equals_path_and_paths_that_contain_equals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a=b.txt").write_text("x")
    Path("poems").mkdir()
    Path("poems/one.txt").write_text("y")
    assert parse_sources(["a=b.txt"]) == (["a=b.txt"], None)  # exists as written: a path
    given = parse_sources(["verse=poems", "eq=a=b.txt", "verse=a=b.txt"])
    assert given.paths == ["poems", "a=b.txt", "a=b.txt"] and given.tags == ["verse", "eq", "verse"]
    assert given.groups() == {"verse": ["poems", "a=b.txt"], "eq": ["a=b.txt"]}


@pytest.mark.parametrize("sources, words", [
    (["=poems"], "empty"),
    (["verse="], "no path"),
    (["two words=poems"], "letters, digits"),
    (["verse=poems", "poems"], "tag every source"),
])
def test_malformed_tagged_sources_are_usage_errors(tmp_path, monkeypatch, sources, words):
    monkeypatch.chdir(tmp_path)
    Path("poems").mkdir()
    with pytest.raises(UsageError, match=words):
        parse_sources(sources)


def test_a_tagged_path_that_does_not_exist_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RnngenError, match="no such file or folder: nowhere.txt \\(tagged verse\\)"):
        parse_sources(["verse=nowhere.txt"])


def test_sample_tags_take_the_batch_in_turn_or_by_share():
    assert sample_tags(("a", "b"), ["b", "a"], 5, None, seed=0) == [1, 0, 1, 0, 1]
    drawn = sample_tags(("a", "b"), [], 2000, [900, 100], seed=1)
    assert drawn == sample_tags(("a", "b"), [], 2000, [900, 100], seed=1)  # seeded
    assert 0.85 < drawn.count(0) / 2000 < 0.95
    assert sample_tags((), [], 3, None, seed=0) is None
    with pytest.raises(UsageError, match="this model's tags are a, b"):
        sample_tags(("a", "b"), ["c"], 1, None, seed=0)
    with pytest.raises(UsageError, match="no tags"):
        sample_tags((), ["a"], 1, None, seed=0)


# -- the model -----------------------------------------------------------------------------------


def tagged_model(cell: str = "lstm", tags=("x", "y", "z")) -> RNNModel:
    torch.manual_seed(0)
    return RNNModel(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16, embed=8, tags=tags)).eval()


def test_an_untagged_model_has_no_tag_weights():
    plain = RNNModel(ModelConfig(vocab_size=11, hidden=16, embed=8))
    assert not any("tag" in name for name in plain.state_dict())
    assert not StepModel(plain).tagged


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_tag_conditions_every_step_and_the_step_matches_the_layer(cell):
    model = tagged_model(cell)
    tokens = torch.randint(0, 11, (3, 7))
    tags = torch.tensor([0, 1, 2])
    with torch.no_grad():
        logits, _ = model(tokens, tags=tags)  # (3, 7, 11)
        other, _ = model(tokens, tags=torch.tensor([1, 2, 0]))
        with pytest.raises(ValueError, match="tag"):
            model(tokens)
    assert not torch.allclose(logits, other)
    step = StepModel(model)
    hb, carry = step.new_state(*model.init_state(3))
    for t in range(7):
        out = step.step(tokens[:, t], hb, carry, tags)
        torch.testing.assert_close(out, logits[:, t], atol=1e-5, rtol=1e-4)


def test_greedy_rows_of_a_mixed_batch_are_their_tags_alone():
    model = tagged_model()
    rows = torch.stack(list(generate(model, [1, 2], 20, batch=3, temperature=0, tags=[2, 0, 2])), 1)  # (3, 20)
    for row, tag in zip(rows, [2, 0, 2]):
        alone = torch.stack(list(generate(model, [1, 2], 20, batch=1, temperature=0, tags=[tag])), 1)[0]
        assert torch.equal(row, alone)


def test_streams_and_evaluation_keep_each_token_with_its_tag():
    ids = torch.arange(2000) % 11
    tags = (torch.arange(2000) >= 1200).to(torch.uint8)  # the first 1,200 tokens are tag 0
    x, _, t = next(Streams(torch.arange(2000), batch=4, seq_len=16, tags=tags).epoch(0))
    assert torch.equal(t, (x >= 1200).to(torch.uint8))
    model = tagged_model(tags=("a", "b"))
    parts = loss_by_tag(model, ids, torch.device("cpu"), seq_len=32, tags=tags)
    assert set(parts) == {0, 1}
    whole = evaluate(model, ids, torch.device("cpu"), seq_len=32, tags=tags)
    mean = sum(p.total for p in parts.values()) / sum(p.count for p in parts.values())
    assert whole == pytest.approx(mean) and parts[0].mean != pytest.approx(parts[1].mean)


# -- the commands --------------------------------------------------------------------------------


def two_styles(folder: Path, n: int = 12_000) -> tuple[Path, Path]:
    """Two corpora with no character in common but the newline: which one a sample comes from is
    plain to see."""
    rng = random.Random(0)
    low = folder / "low.txt"
    up = folder / "up.txt"
    low.write_text("".join(rng.choice("abcdefg  \n") for _ in range(n)), encoding="utf-8")
    up.write_text("".join(rng.choice("PQRSTUV..\n") for _ in range(n // 2)), encoding="utf-8")
    return low, up


@pytest.fixture(scope="module")
def styles(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny model trained on two tagged styles: (checkpoint, low corpus, up corpus)."""
    folder = tmp_path_factory.mktemp("styles")
    low, up = two_styles(folder)
    out = folder / "styles.pt"
    result = runner.invoke(app, ["train", f"low={low}", f"up={up}", "--max-steps", "150", "--lr", "1e-2",
                                 "--eval-every", "50", "-o", str(out), "-q", *TINY])
    assert result.exit_code == 0, result.output
    return out, low, up


def test_each_tag_keeps_its_style_to_the_end_of_a_long_sample(styles):
    model = str(styles[0])
    result = runner.invoke(app, ["sample", model, "-b", "4", "--tag", "low", "--tag", "up", "-n", "600",
                                 "-s", "1", "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["tag"] for r in records] == ["low", "up", "low", "up"]
    for r in records:
        alphabet = set("abcdefg ") if r["tag"] == "low" else set("PQRSTUV.")
        tail = [c for c in r["text"][-300:] if c != "\n"]
        assert sum(c in alphabet for c in tail) / len(tail) > 0.97, r


def test_untagged_sampling_of_a_tagged_model_draws_tags_by_share(styles):
    result = runner.invoke(app, ["sample", str(styles[0]), "-b", "64", "-n", "5", "-s", "2", "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    tags = [json.loads(line)["tag"] for line in result.stdout.splitlines()]
    assert 30 < tags.count("low") < 56 and tags.count("low") + tags.count("up") == 64  # shares 2/3 and 1/3


def test_info_eval_and_unknown_tags(styles):
    model, low, up = styles
    info = runner.invoke(app, ["info", str(model)])
    assert info.exit_code == 0 and "tags        low 66.7%, up 33.3%" in info.stdout, info.output
    assert "by tag    low " in info.stdout
    unknown = runner.invoke(app, ["sample", str(model), "--tag", "verse"])
    assert unknown.exit_code == 2 and "unknown tag 'verse'; this model's tags are low, up" in unknown.stderr
    both = runner.invoke(app, ["eval", str(model), str(up)])
    as_low, as_up = [float(line.split()[0]) for line in both.stdout.splitlines()]
    assert "as low" in both.stdout and as_up < as_low  # the up text is likelier as itself
    one = runner.invoke(app, ["eval", str(model), str(up), "--tag", "up"])
    assert one.stdout.split()[0] == f"{as_up:.4f}"


def test_resume_keeps_the_tags_and_fine_tuning_may_add_some(styles, tmp_path):
    model, low, up = styles
    last = checkpoint.last_path(model)
    wrong = runner.invoke(app, ["train", f"up={up}", f"low={low}", "--resume", str(last), "--max-steps", "160", "-q"])
    assert wrong.exit_code == 2 and "tags are low, up" in wrong.stderr
    bare = runner.invoke(app, ["train", str(low), "--init-from", str(model), "--max-steps", "2", "-q",
                               "-o", str(tmp_path / "x.pt"), *TINY[-4:]])
    assert bare.exit_code == 2 and "give its sources as TAG=PATH" in bare.stderr
    more = tmp_path / "more.pt"
    grown = runner.invoke(app, ["train", f"low={low}", f"up={up}", f"both={up}", "--init-from", str(model),
                                "--max-steps", "2", "-q", "-o", str(more), *TINY[-4:]])
    assert grown.exit_code == 0, grown.output
    before, after = checkpoint.load(model)["weights"], checkpoint.load(more)["weights"]
    assert after["tag_embed.weight"].shape[0] == 3 and tuple(checkpoint.load(more)["model"]["tags"]) == ("low", "up", "both")
    resumed = runner.invoke(app, ["train", "--resume", str(last), "--max-steps", "155", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert tuple(checkpoint.load(last)["model"]["tags"]) == ("low", "up")
    assert before["tag_embed.weight"].shape == (2, 16)


def test_export_carries_the_tags_to_the_onnx_example(styles, tmp_path):
    model = styles[0]
    out = tmp_path / "styles.onnx"
    result = runner.invoke(app, ["export", str(model), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["tags"] == ["low", "up"] and meta["inputs"][:2] == ["tokens", "tags"]
    for tag, alphabet in (("low", set("abcdefg ")), ("up", set("PQRSTUV."))):
        text = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_sample.py"), str(out), "--tag", tag,
                               "-n", "300", "-s", "3", "-t", "0.5"], capture_output=True, text=True, check=True).stdout
        chars = [c for c in text if c != "\n"]
        assert sum(c in alphabet for c in chars) / len(chars) > 0.97, text
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_sample.py"), str(out), "--tag", "x"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "low, up" in bad.stderr


def test_midi_tags_steer_the_register(tmp_path):
    """MIDI through the same core: a high and a low corpus, and each tag writes in its own register."""
    import mido

    from tests.test_midi import STEP, note, write

    rng = random.Random(0)
    for name, low in (("high", 72), ("low", 36)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(4):
            events = [e for k in range(60) for e in note(k * 6 * STEP, 6 * STEP, low + rng.randrange(12))]
            write(folder / f"{name}{i}.mid", [events])
    model = tmp_path / "registers.pt"
    trained = runner.invoke(app, ["train", f"high={tmp_path / 'high'}", f"low={tmp_path / 'low'}", "--val-frac", "0.25",
                                  "--max-steps", "150", "--lr", "1e-2", "-o", str(model), "-q", *TINY])
    assert trained.exit_code == 0, trained.output
    for tag, (lo, hi) in (("high", (72, 84)), ("low", (36, 48))):
        out = tmp_path / f"{tag}.mid"
        result = runner.invoke(app, ["sample", str(model), "--tag", tag, "-n", "300", "-s", "1", "-o", str(out)])
        assert result.exit_code == 0, result.output
        pitches = [m.note for m in mido.MidiFile(out) if m.type == "note_on" and m.velocity]
        assert len(pitches) > 10 and sum(lo <= p < hi for p in pitches) / len(pitches) > 0.9, (tag, pitches)


@pytest.mark.parametrize("name", ["shakespeare", "bach"])
def test_checkpoints_from_before_tags_load_untagged(name, tmp_path):
    saved = checkpoint.load(name)
    saved["model"].pop("tags", None)  # the settings as a checkpoint written before tags holds them (shakespeare is one)
    checkpoint.save(saved, tmp_path / "old.pt")
    model = checkpoint.build_model(checkpoint.load(tmp_path / "old.pt"))
    assert model.cfg.tags == () and not hasattr(model, "tag_embed")
    result = runner.invoke(app, ["sample", str(tmp_path / "old.pt"), "-n", "20", "-s", "1", "--tag", "x", "-o", "-"])
    assert result.exit_code == 2 and "has no tags" in result.stderr
