"""The text codec: characters to token ids and back (the MIDI codec is rnngen.midi.codec).

The text codec works on Unicode code points, so accents, CJK and emoji are single tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rnngen.errors import RnngenError


def compact_dtype(vocab_size: int) -> torch.dtype:
    """The smallest integer dtype that holds every id: corpora stay small in memory."""
    if vocab_size <= 256:
        return torch.uint8
    if vocab_size <= 2**15:
        return torch.int16
    return torch.int32


CHUNK = 1 << 22  # characters converted at a time, so a large corpus is never held as int64 whole


def _code_points(text: str) -> torch.Tensor:
    # UTF-32 gives one int32 per code point without a Python loop over the characters.
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)  # (N,)


def _chunks(text: str):
    for start in range(0, len(text), CHUNK):
        yield start, _code_points(text[start : start + CHUNK]).long()


class TextCodec:
    kind, unit = "text", "char"

    def __init__(self, chars: Iterable[str]):
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        if len(self.index) != len(self.chars) or any(len(ch) != 1 for ch in self.chars):
            raise RnngenError("the checkpoint's vocabulary is damaged (characters repeated or not single)")

    @classmethod
    def fit(cls, text: str) -> TextCodec:
        """The vocabulary of a corpus: its distinct characters in code-point order."""
        points: set[int] = set()
        for _, chunk in _chunks(text):
            points.update(torch.unique(chunk).tolist())
        return cls(chr(p) for p in sorted(points))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` that this vocabulary lacks, in order of first appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.index))

    def check(self, text: str, what: str) -> None:
        missing = self.unknown(text)
        if missing:
            shown = " ".join(repr(ch) for ch in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise RnngenError(f"{what} has {len(missing)} character(s) the model never saw: {shown}")

    def encode(self, text: str) -> list[int]:
        self.check(text, "the text")
        return [self.index[ch] for ch in text]

    def encode_corpus(self, text: str, what: str = "the corpus") -> torch.Tensor:
        """A whole corpus as a compact 1-D id tensor; fast and lean for hundreds of megabytes."""
        ids = torch.empty(len(text), dtype=compact_dtype(self.vocab_size))
        lut = torch.full((max(map(ord, self.chars)) + 1,), -1, dtype=torch.int32)
        lut[torch.tensor([ord(ch) for ch in self.chars])] = torch.arange(self.vocab_size, dtype=torch.int32)
        for start, chunk in _chunks(text):
            known = chunk < len(lut)
            part = lut[chunk.where(known, 0)].where(known, -1)
            if bool((part < 0).any()):
                self.check(text, what)  # names the unseen characters (a slow scan, only on failure)
            ids[start : start + len(chunk)] = part.to(ids.dtype)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"type": "text", "chars": self.chars}

    def describe(self) -> str:
        return f"text, {self.vocab_size} characters"


def codec_from_dict(d: dict):
    """The codec a checkpoint describes."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "text":
        return TextCodec(d["chars"])
    if kind == "midi":
        from rnngen.midi.codec import MidiCodec

        return MidiCodec.from_dict(d)
    raise RnngenError(f"unknown codec {kind!r} in the checkpoint")
