"""Training at scale, as a user meets it: the cached, memory-mapped corpus trains exactly as the one
read into memory, checks come before the corpus is read, and a signal during validation is acted on."""

import json
import os
import signal

import pytest
import torch
from typer.testing import CliRunner

from rnngen import checkpoint
from rnngen.cli import app
from rnngen.data import split
from rnngen.trainer import Interrupted, Trainer
from tests.conftest import TINY, make_text, text_ids, tiny_config, tiny_model

runner = CliRunner()


def losses(log) -> list[float]:
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def test_a_mapped_corpus_trains_exactly_as_one_read_into_memory(tmp_path, corpus):
    args = [*TINY, "--max-steps", "6", "--eval-every", "3", "-q", "--cache-dir", str(tmp_path / "cache")]
    mapped = runner.invoke(app, ["train", str(corpus), *args, "--out", str(tmp_path / "a.pt"),
                                 "--log", str(tmp_path / "a.jsonl")])
    assert mapped.exit_code == 0, mapped.stderr
    assert list((tmp_path / "cache" / "text").glob("*.ids"))  # it went through the cache
    in_memory = runner.invoke(app, ["train", "-", *args, "--out", str(tmp_path / "b.pt"),
                                    "--log", str(tmp_path / "b.jsonl")], input=corpus.read_text())
    assert in_memory.exit_code == 0, in_memory.stderr
    assert losses(tmp_path / "a.jsonl") == losses(tmp_path / "b.jsonl")
    again = runner.invoke(app, ["train", str(corpus), *args, "--out", str(tmp_path / "c.pt"),
                                "--log", str(tmp_path / "c.jsonl")])  # from the cache this time
    assert again.exit_code == 0 and losses(tmp_path / "c.jsonl") == losses(tmp_path / "a.jsonl")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_an_existing_out_fails_before_the_corpus_is_read(tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"an earlier run")
    pipe = tmp_path / "corpus.txt"
    os.mkfifo(pipe)  # reading it would wait for a writer forever
    result = runner.invoke(app, ["train", str(pipe), *TINY, "--max-steps", "2", "--out", str(out)])
    assert result.exit_code == 1 and "--force" in result.stderr
    assert out.read_bytes() == b"an earlier run"


def test_a_signal_during_validation_stops_within_a_window_and_saves(tmp_path):
    codec, ids = text_ids(make_text(3000))
    train_ids, val_ids = split(ids, 0.3)
    trainer = Trainer(tiny_model(vocab=codec.vocab_size), train_ids, val_ids, tiny_config(max_steps=50, eval_every=4),
                      torch.device("cpu"), None, checkpoint.Saver(tmp_path / "m.pt", codec))
    windows = []

    def validating(module, inputs, output):
        if not module.training:  # a validation window: the signal arrives during the first one
            windows.append(inputs[0].shape)
            trainer.signals.received = signal.SIGTERM

    trainer.model.register_forward_hook(validating)
    with pytest.raises(Interrupted) as stop:
        trainer.run()
    assert stop.value.signum == signal.SIGTERM and stop.value.step == 4
    assert len(windows) == 1  # of many: the pass stopped at once
    saved = checkpoint.load(tmp_path / "m.last.pt")
    assert saved["resume"]["step"] == 4 and not (tmp_path / "m.pt").exists()  # no figure, so no "best"


def mapped_resident_kb(path) -> int:
    """How much of `path`, mapped into this process, is in its resident memory (kB)."""
    total, current = 0, None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                current = head[5] if len(head) > 5 else None
            elif head and head[0] == "Rss:" and current == str(path):
                total += int(head[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux's /proc/self/smaps to see resident pages")
def test_training_windows_bring_only_the_pages_they_read_into_memory(tmp_path):
    # A 16 MB token file, all of it in the page cache, where the kernel keeps a file read in order in large blocks.
    from rnngen.corpus_cache import open_text_corpus
    from rnngen.data import Streams, val_sample

    corpus = tmp_path / "big.txt"
    block = make_text(2000).encode()
    corpus.write_bytes(block * (16_000_000 // len(block) + 1))
    corpus_cache = tmp_path / "cache"
    open_text_corpus([str(corpus)], cache_dir=corpus_cache)
    token_file = next((corpus_cache / "text").glob("*.ids"))
    token_file.read_bytes()  # all of it in the page cache, as after a build or another run
    _, ids, *_ = open_text_corpus([str(corpus)], cache_dir=corpus_cache)
    train, val = split(ids, 0.1)
    val_sample(val, cap=64 * 256)
    windows = Streams(train, 64, 128).epoch(0)
    for _ in range(3):
        x, y, _ = next(windows)
        x.long(), y.long()
    # 64 streams and 64 validation stretches, a page or two each; a mapping that brought in the
    # block around each one held 15 MB here.
    assert mapped_resident_kb(token_file) < 2048
