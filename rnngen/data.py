"""Reading sources and cutting token streams into training windows.

Training uses stateful truncated BPTT (as char-rnn and torch-rnn do): the corpus becomes B
parallel streams, each step takes the next `seq_len` window of every stream, and the hidden
state is carried from one window to the next. Nothing here knows about text or MIDI.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from rnngen.errors import RnngenError

MIDI_SUFFIXES = (".mid", ".midi")


def is_midi(path: Path) -> bool:
    if path.suffix.lower() in MIDI_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"MThd"
    except OSError:
        return False


def expand_sources(sources: Sequence[str]) -> list[Path | str]:
    """Files in the order given; folders searched recursively (sorted); `-` stays as stdin."""
    found: list[Path | str] = []
    for src in sources:
        if src == "-":
            found.append("-")
            continue
        path = Path(src).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise RnngenError(f"the folder {src} holds no files")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise RnngenError(f"{src} is not a regular file")
        else:
            raise RnngenError(f"no such file or folder: {src}")
    return found


def detect_kind(files: Sequence[Path | str], kind: str = "auto") -> str:
    """`auto`: MIDI when most files are MIDI (by header or name), else text. A majority rather than
    all, so that a folder of MIDI files with a README or licence in it still trains on the music
    (the MIDI loader lists the other files as skipped)."""
    if kind != "auto":
        return kind
    if not files or "-" in files:
        return "text"
    return "midi" if 2 * sum(is_midi(Path(p)) for p in files) > len(files) else "text"


def read_text(src: Path | str) -> str:
    """A text file (or `-` for stdin) as str; see `decode_text`."""
    name = "standard input" if src == "-" else str(src)
    try:
        raw = sys.stdin.buffer.read() if src == "-" else Path(src).read_bytes()
    except OSError as e:
        raise RnngenError(f"cannot read {name}: {e.strerror or e}") from e
    return decode_text(raw, name)


def decode_text(raw: bytes, name: str) -> str:
    """UTF-8 (a BOM is dropped) with universal newlines; binary data is refused."""
    if b"\x00" in raw[:65536]:
        raise RnngenError(f"{name} looks like a binary file, not text (it has NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RnngenError(f"{name} is not UTF-8 text (bad byte at offset {e.start}); convert it with iconv") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def writable_folder(path: Path, option: str) -> None:
    """Fail before any work if `path` cannot be created: a missing or read-only folder."""
    folder = path.parent
    if not folder.is_dir():
        raise RnngenError(f"{option} {path}: the folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RnngenError(f"{option} {path}: cannot write in {folder} ({e.strerror or e})") from None


def writable_file(path: Path, option: str, force: bool = False) -> None:
    """Fail before any work if `path` cannot be written, or is a file already there and `force` (the
    command's --force) was not given: no command replaces a user's file unasked."""
    writable_folder(path, option)
    if path.is_dir():
        raise RnngenError(f"{option} {path} is a folder; give a file name")
    if not force and (path.exists() or path.is_symlink()):
        raise RnngenError(f"{path} already exists; pass --force to overwrite it, or choose another {option}")


def load_text(sources: Sequence[str]) -> tuple[str, list[str]]:
    """Every text source concatenated; folders keep only the files that read as text."""
    parts, names, skipped = [], [], []
    for src in expand_sources(sources):
        explicit = src == "-" or str(src) in sources
        try:
            text = read_text(src)
        except RnngenError as e:
            if explicit:
                raise
            skipped.append(str(e))
            continue
        if text:
            parts.append(text)
            names.append("-" if src == "-" else str(src))
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if not parts:
        raise RnngenError(f"no text found in {', '.join(sources)}" + (" (the input is empty)" if not skipped else ""))
    return "".join(parts), names


def split(ids: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Train on the first part, validate on the last `val_frac` (the split nanoGPT reports on)."""
    cut = int(len(ids) * (1.0 - val_frac))
    return ids[:cut], ids[cut:]


class Streams:
    """A 1-D token tensor cut into `batch` parallel streams, read `seq_len` tokens at a time.

    Each epoch starts the streams at a different offset (drawn from the seed), so that the window
    boundaries move between epochs. `tags` (a tagged corpus) holds each token's tag and is cut the
    same way.
    """

    def __init__(self, ids: torch.Tensor, batch: int, seq_len: int, seed: int = 0, tags: torch.Tensor | None = None):
        self.ids, self.batch, self.seq_len, self.seed, self.tags = ids, batch, seq_len, seed, tags
        if self.windows_per_epoch < 1:
            need = batch * (seq_len + 1) + seq_len
            raise RnngenError(
                f"the training data has {len(ids):,} tokens, fewer than one window of batch {batch} x "
                f"seq-len {seq_len} needs ({need:,}); use a smaller --batch-size or --seq-len, or more data"
            )

    @property
    def windows_per_epoch(self) -> int:
        # The offset can take up to seq_len - 1 tokens from the front.
        usable = len(self.ids) - self.seq_len
        return (usable - 1) // self.batch // self.seq_len

    def _offset(self, epoch: int) -> int:
        if epoch == 0:
            return 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return int(torch.randint(0, self.seq_len, (1,), generator=g))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """(x, y, tags of x or None) windows of shape (batch, seq_len), from window `start` of `epoch` on."""
        n, T = self.windows_per_epoch, self.seq_len
        span = n * T
        off = self._offset(epoch)
        x = self.ids[off : off + self.batch * span].view(self.batch, span)  # (B, n*T)
        y = self.ids[off + 1 : off + 1 + self.batch * span].view(self.batch, span)  # (B, n*T)
        t = None if self.tags is None else self.tags[off : off + self.batch * span].view(self.batch, span)
        for i in range(start, n):
            window = slice(i * T, (i + 1) * T)
            yield x[:, window], y[:, window], None if t is None else t[:, window]


def eval_windows(ids: torch.Tensor, batch: int, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Validation windows covering (nearly) all of `ids` once, as parallel streams."""
    batch = max(1, min(batch, (len(ids) - 1) // max(seq_len, 1)))
    span = (len(ids) - 1) // batch
    if span < 1:
        return
    x = ids[: batch * span].view(batch, span)
    y = ids[1 : batch * span + 1].view(batch, span)
    for i in range(0, span, seq_len):
        yield x[:, i : i + seq_len], y[:, i : i + seq_len]


# Validation is capped at this many tokens: 64 streams of 2,048. Tiny shakespeare's validation
# split (111,540 chars) is below it, so its figures stay full passes; on a large corpus one
# evaluation of the default 2 x 512 LSTM stays a few seconds (benchmarks/scale.py measures both).
VAL_CAP = 131_072
VAL_STREAMS = 64


def val_sample(ids: torch.Tensor, cap: int | None = VAL_CAP, seed: int = 0,
               streams: int = VAL_STREAMS) -> torch.Tensor:
    """At most `cap` validation tokens, the same ones every time for the same ids and seed.

    `ids` itself (a full pass) when it holds no more than `cap` tokens or `cap` is None. Otherwise
    (streams, cap // streams + 1) rows: the ids cut into `streams` equal strata, one segment at a
    seeded place in each (stratified, so the sample spreads over the whole split and segments
    never overlap). `evaluate` reads the rows as parallel streams from a zero state, as it reads a
    full pass; only the sampled pages of a memory-mapped corpus are touched.
    """
    n = len(ids)
    if cap is None or n <= cap:
        return ids
    streams = max(1, min(streams, cap))
    length = cap // streams  # tokens predicted per stream
    stratum = n // streams  # >= length, since n > cap >= streams * length
    g = torch.Generator().manual_seed(seed)
    starts = torch.arange(streams) * stratum + torch.randint(0, max(1, stratum - length), (streams,), generator=g)
    return torch.stack([ids[s : s + length + 1] for s in starts.tolist()])  # (K, L + 1)


def row_windows(rows: torch.Tensor, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Windows over streams already cut, (K, S) -> (K, <=seq_len) inputs and next-token targets."""
    x, y = rows[:, :-1], rows[:, 1:]  # (K, S - 1)
    for i in range(0, x.shape[1], seq_len):
        yield x[:, i : i + seq_len], y[:, i : i + seq_len]
