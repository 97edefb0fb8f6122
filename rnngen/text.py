"""Text as a kind of data: its corpus (every source concatenated, the last `val_frac` held out, read
through the cache of rnngen/corpus_cache.py),
held-out data for `eval`, and sampling (a prime of text, samples streamed to stdout)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from rnngen.codec import TextCodec
from rnngen.config import SampleConfig, TrainConfig, TrainOptions
from rnngen.corpus_cache import open_text_corpus
from rnngen.data import is_midi, read_text, split
from rnngen.errors import RnngenError, UsageError
from rnngen.output import check_text_target, write_text
from rnngen.sample import generate


class Corpus(NamedTuple):
    codec: object
    train_ids: torch.Tensor  # (N,) compact ids
    val_ids: torch.Tensor  # (M,)
    names: list[str]  # the sources trained on or held out
    tags: object = None  # tags.Tags for TAG=PATH sources (each token's tag); None: untagged
    read: list[str] | None = None  # what a checkpoint records to read the same corpus again; None: `names`
    # (MIDI: every file read, since the held-out files are drawn among all of them)

    def recorded(self) -> list[str]:
        return self.names if self.read is None else self.read


class Sampling(NamedTuple):
    """What the sample command resolved once, for the kind to sample with."""

    model: torch.nn.Module
    step: object  # the sampler's step (StepModel or Int8Step) at the resolved precision
    device: torch.device
    seed: int
    length: int
    name: str  # the model's name, for default file names
    temperature: float  # -t, or the kind's default
    tags: list[int] | None = None  # a tagged model: each row's tag index (rnngen/tags.py)

    def tag_names(self) -> list[str] | None:
        return None if self.tags is None else [self.model.cfg.tags[t] for t in self.tags]


class TextKind:
    name = "text"
    default_length = 500  # characters
    default_temperature = 0.8

    def load_corpus(self, sources: list[str], files: list, options: TrainOptions, cfg: TrainConfig,
                    codec: TextCodec | None) -> Corpus:
        if cfg.transpose or options.drums is not None:
            raise RnngenError("--transpose and --drums are for MIDI training, but the sources are text")
        codec, ids, names = open_text_corpus(sources, codec, options.cache_dir)  # names unseen characters
        train_ids, val_ids = split(ids, cfg.val_frac)
        return Corpus(codec, train_ids, val_ids, names)

    def load_eval(self, files: list[str], codec: TextCodec) -> torch.Tensor:
        return open_text_corpus(files, codec, what="the evaluation text")[1]

    def sample(self, codec: TextCodec, cfg: SampleConfig, run: Sampling) -> None:
        if cfg.qpm is not None or cfg.program is not None or cfg.audio or cfg.soundfont is not None:
            raise UsageError(f"--qpm, --program, --audio and --soundfont are for MIDI models; "
                             f"{cfg.checkpoint} is a text model")
        check_text_target(cfg.out, cfg.force, cfg.checkpoint)
        if cfg.prime_file is not None and cfg.prime_file != "-" and is_midi(Path(cfg.prime_file)):
            raise RnngenError(f"{cfg.prime_file} is a MIDI file, but {cfg.checkpoint} is a text model; prime it with text")
        prime = read_text(cfg.prime_file) if cfg.prime_file is not None else cfg.prime or ""
        tokens = generate(run.model, text_start(codec, prime), run.length, cfg.num_samples, run.temperature, cfg.top_k, cfg.top_p,
                          run.seed, run.device, stepper=run.step, tags=run.tags)
        write_text(cfg.out, tokens, codec, batch=cfg.num_samples, prime=prime, echo=cfg.echo, stops=cfg.stop,
                   fmt=cfg.fmt, separator=cfg.separator, seed=run.seed, quiet=cfg.quiet, length=run.length,
                   tags=run.tag_names())


def text_start(codec: TextCodec, prime: str) -> list[int]:
    """The tokens sampling starts from: the prime's, or with none, a newline (not printed), after
    which the model saw most text start."""
    codec.check(prime, "the prime")
    return codec.encode(prime) if prime else [codec.index.get("\n", 0)]


KIND = TextKind()
