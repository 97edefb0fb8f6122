"""Tags: one model, several styles. A training source written `TAG=PATH` gives its data that tag
(`rnngen train sonnets=poems/ python=src/`); the model learns a vector per tag, added to the input
at every step (rnngen/model.py), and `rnngen sample --tag python` asks for one style.

The rules, so that a path is never misread: a source that exists as written is a path (a file
named `a=b.txt` still works); otherwise `TAG=PATH` splits at the first `=`. Either every source
has a tag or none does. Each tag's data is split for validation on its own (text: its last
--val-frac; MIDI: whole pieces), so every style is both trained on and measured. A tag may name
several sources; tags keep the order in which they first appear.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import torch

from rnngen.data import expand_sources
from rnngen.errors import RnngenError, UsageError

TAG_NAME = re.compile(r"[\w.+-]+")  # letters (any script), digits and _ . + -


class Sources(NamedTuple):
    paths: list[str]  # as given, less their tags
    tags: list[str] | None  # the tag of each path; None when no source is tagged

    def groups(self) -> dict[str, list[str]]:
        """Each tag's paths, tags in order of first appearance."""
        out: dict[str, list[str]] = {}
        for tag, path in zip(self.tags or [], self.paths):
            out.setdefault(tag, []).append(path)
        return out

    def under(self, folder: Path | None) -> Sources:
        """The paths read from `folder` where they are relative; None: from here, as written."""
        if folder is None:
            return self
        return self._replace(paths=[p if p == "-" else str(_at(folder, p)) for p in self.paths])


def parse_sources(sources: list[str], folder: Path | None = None) -> Sources:
    """Split `TAG=PATH` sources; see the module's docstring for the rules. Relative paths are looked
    for in `folder` (None: here) but kept as written (`Sources.under` reads them from there)."""
    paths, tags = [], []
    for src in sources:
        tag, path = _split(src, folder)
        paths.append(path)
        tags.append(tag)
    named = [t is not None for t in tags]
    if any(named) and not all(named):
        bare = sources[named.index(False)]
        raise UsageError(f"tag every source (TAG=PATH) or none: {bare} has no tag, but "
                          f"{sources[named.index(True)]} has one; write {bare} as TAG={bare}")
    return Sources(paths, tags if any(named) else None)


def _at(folder: Path | None, path: str) -> Path:
    """Where a path as written is: relative ones in `folder` (None: here)."""
    return Path(path).expanduser() if folder is None else folder / Path(path).expanduser()


def _split(src: str, folder: Path | None = None) -> tuple[str | None, str]:
    if src == "-" or "=" not in src or _at(folder, src).exists():
        return None, src
    tag, path = src.split("=", 1)
    if not tag:
        raise UsageError(f"{src}: the tag before '=' is empty; write TAG=PATH")
    if not TAG_NAME.fullmatch(tag):
        raise UsageError(f"{src}: a tag is letters, digits and _ . + - (no spaces), not {tag!r}")
    if not path:
        raise UsageError(f"{src}: no path after '='; write {tag}=PATH")
    if path != "-" and not _at(folder, path).exists():
        raise RnngenError(f"no such file or folder: {_at(folder, path)} (tagged {tag})")
    return tag, path


def tagged_names(groups: dict[str, list[str]]) -> list[str]:
    """Sources as a checkpoint records them, so that --resume reads them with their tags."""
    return [f"{tag}={name}" for tag, names in groups.items() for name in names]


class Tags(NamedTuple):
    """A tagged corpus's tags: each training and validation token's tag index, and the training tokens per tag."""

    names: list[str]
    train: torch.Tensor  # (N,) uint8: the tag of each training token
    val: torch.Tensor  # (M,) uint8
    tokens: list[int]  # training tokens per tag


def load_tagged(kind, sources: Sources, options, cfg, codec, known: tuple[str, ...] = ()):
    """The kind's corpus for tagged sources: one codec for all of them, each tag's data loaded and
    split by the kind, then joined (tokens of the first tag first). `known`: the tags a resumed or
    base model has, which must come first and in order (a fine-tuned model may add tags after them)."""
    groups = sources.groups()
    names = list(groups)
    if known and names[: len(known)] != list(known):
        raise UsageError(f"the model's tags are {', '.join(known)}; give those first, in that order "
                          f"(these sources have {', '.join(names)})")
    if codec is None:  # the vocabulary of all the sources together
        codec = kind.load_corpus(sources.paths, expand_sources(sources.paths), options, cfg, None).codec
    parts = [kind.load_corpus(paths, expand_sources(paths), options, cfg, codec) for paths in groups.values()]
    counts = [len(p.train_ids) for p in parts]

    def tag_of_each(lengths: list[int]) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.uint8), torch.tensor(lengths))

    tags = Tags(names, tag_of_each(counts), tag_of_each([len(p.val_ids) for p in parts]), counts)
    train = torch.cat([p.train_ids for p in parts])
    val = torch.cat([p.val_ids for p in parts])
    return parts[0]._replace(codec=codec, train_ids=train, val_ids=val, tags=tags,
                             names=tagged_names({tag: p.names for tag, p in zip(names, parts)}),
                             read=tagged_names({tag: p.recorded() for tag, p in zip(names, parts)}))


def _known(tokens: list[int] | None, names) -> bool:
    return bool(tokens) and len(tokens) == len(names) and sum(tokens) > 0


def describe_tags(names: list[str] | tuple[str, ...], tokens: list[int] | None) -> str:
    """'poems 61.2%, python 38.8%' (each tag's share of the training tokens), or just the names."""
    if not _known(tokens, names):
        return ", ".join(names)
    return ", ".join(f"{name} {100 * n / sum(tokens):.1f}%" for name, n in zip(names, tokens))


def check_tags(model_tags: tuple[str, ...], asked: list[str]) -> None:
    """--tag names only tags the model has."""
    if asked and not model_tags:
        raise UsageError("this model has no tags; train with TAG=PATH sources to use --tag")
    unknown = [t for t in asked if t not in model_tags]
    if unknown:
        raise UsageError(f"unknown tag {unknown[0]!r}; this model's tags are {', '.join(model_tags)}")


def sample_tags(model_tags: tuple[str, ...], asked: list[str], batch: int, tokens: list[int] | None,
                seed: int) -> list[int] | None:
    """Each row's tag index for `rnngen sample`: the tags asked for, repeated in turn across the
    batch (`-b 4 --tag a --tag b` gives a, b, a, b); with none asked, a tag drawn for each row in
    proportion to its share of the training data (so the batch is a sample of the model as trained,
    a mixture of its styles). None for an untagged model."""
    check_tags(model_tags, asked)
    if not model_tags:
        return None
    if asked:
        return [model_tags.index(asked[i % len(asked)]) for i in range(batch)]
    weights = torch.tensor(tokens if _known(tokens, model_tags) else [1] * len(model_tags), dtype=torch.float)
    g = torch.Generator().manual_seed(seed + 7919)  # not the sampler's own stream
    return torch.multinomial(weights, batch, replacement=True, generator=g).tolist()
