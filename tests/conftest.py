"""Small data made on the spot: no test needs a trained model or the network."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from rnngen.codec import TextCodec
from rnngen.config import ModelConfig, TrainConfig
from rnngen.model import RNNModel


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    """A little corpus with structure worth learning: names, a colon, short lines."""
    rng = random.Random(seed)
    names = ["ROMEO", "JULIET", "NURSE", "FRIAR"]
    words = "the and of to my thou love night day sweet fair dear heart light".split()
    lines = []
    for _ in range(n_lines):
        lines.append(f"{rng.choice(names)}:")
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + ".")
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """Corpora read by the tests are cached in a folder of their own, never the user's cache."""
    os.environ["RNNGEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


TINY = ["--layers", "1", "--hidden", "32", "--embed", "16", "--batch-size", "4", "--seq-len", "16",
        "--precision", "fp32", "--device", "cpu"]


def tiny_model(vocab: int = 12, cell: str = "lstm", layers: int = 2) -> RNNModel:
    torch.manual_seed(0)
    return RNNModel(ModelConfig(vocab_size=vocab, cell=cell, layers=layers, hidden=16, embed=8))


def tiny_config(**kw) -> TrainConfig:
    values = dict(seq_len=16, batch_size=4, lr=1e-2, warmup_steps=1, max_steps=20, seed=3)
    values.update(kw)
    return TrainConfig(**values)


def text_ids(text: str | None = None):
    text = text or make_text()
    codec = TextCodec.fit(text)
    return codec, codec.encode_corpus(text)
