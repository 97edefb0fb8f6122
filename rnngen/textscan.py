"""Text sources read in chunks, exactly as `data.decode_text` reads a whole file (UTF-8, a BOM
dropped, \\r\\n and \\r as \\n, NUL bytes refused), counted into a vocabulary and encoded to token
bytes, so that a corpus of gigabytes is never held whole. `corpus_cache` writes what these give."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from rnngen.cache import tensor_bytes
from rnngen.codec import TextCodec, compact_dtype
from rnngen.errors import RnngenError

CHUNK_BYTES = 1 << 23  # 8 MiB of the file decoded at a time: the build's memory stays ~100 MB
NUL_WINDOW = 65536  # decode_text refuses a file with a NUL byte in its first 64 KiB
BOM = b"\xef\xbb\xbf"
_NON_ASCII_RUN = re.compile(rb"[\x80-\xff]+")
_BELOW_C4 = bytes(range(0xC4))  # UTF-8 lead bytes below C4 start code points below U+0100
_BELOW_F0 = bytes(range(0xF0))  # lead bytes F0 and up start code points beyond the BMP
_RUNS_PER_BYTE = 1 / 1024  # more non-ASCII runs than this per byte: decode the chunk whole
_DENSE_SHARE = 1 / 8  # or when blocks holding non-ASCII bytes make up more than this of the chunk
SUB_BLOCK = 4096  # non-ASCII bytes are looked for only in blocks of this size that hold some

# A chunk of decoded text is a list of pieces, in order, each one of:
#   bytes         code points below 256, one byte each (ASCII, or Latin-1 text)
#   str           a short non-ASCII stretch of a mostly-ASCII chunk
#   torch.Tensor  int32 code points of a chunk dense in non-Latin-1 text
Piece = bytes | str | torch.Tensor



# --------------------------------------------------------------------------------------------------
# decoding in chunks, exactly as decode_text does on a whole file


def _utf8_cut(buf: bytes) -> int:
    """Where to end a chunk so that no UTF-8 sequence is split: before the last lead byte among the
    final four (a sequence is at most four bytes), or at the end when none of them is a lead byte.
    Cutting before a lead byte never splits a valid sequence, so each chunk decodes (and fails)
    exactly as the whole file would."""
    for back in range(1, min(4, len(buf)) + 1):
        b = buf[-back]
        if b < 0x80:
            return len(buf)  # ASCII ends the buffer cleanly
        if b >= 0xC0:
            return len(buf) - back
    return len(buf)


def _not_utf8(name: str, offset: int) -> RnngenError:
    return RnngenError(f"{name} is not UTF-8 text (bad byte at offset {offset}); convert it with iconv")


def _newlines(raw: bytes) -> bytes:
    if b"\r" not in raw:  # one memchr; the two replaces would scan twice even with nothing to do
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _dense_pieces(raw: bytes, name: str, offset: int) -> list[Piece]:
    """A chunk decoded whole, as Latin-1 bytes when every code point fits in one byte (the encode
    is then a copy) or as int32 code points otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(name, offset + e.start) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not raw.translate(None, _BELOW_C4):
        return [text.encode("latin-1")]
    with warnings.catch_warnings():  # frombuffer warns on read-only bytes; they are only read
        warnings.simplefilter("ignore", UserWarning)
        if not raw.translate(None, _BELOW_F0):
            units = torch.frombuffer(text.encode("utf-16-le"), dtype=torch.int16)  # BMP: one unit each
            return [units.to(torch.int32) & 0xFFFF]
        return [torch.frombuffer(text.encode("utf-32-le"), dtype=torch.int32).clone()]


def _non_ascii_regions(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of the stretches of `raw` whose 4 KiB blocks hold bytes above 127.

    `bytes.isascii` checks a block at memory speed, while a regex looking for the bytes themselves
    crawls (about 50 MB/s here): the regex then runs only inside these stretches. A run of
    non-ASCII bytes never crosses a region's edge, since the block beyond it is all ASCII."""
    regions: list[tuple[int, int]] = []
    for i in range(0, len(raw), SUB_BLOCK):
        if not raw[i : i + SUB_BLOCK].isascii():
            end = min(i + SUB_BLOCK, len(raw))
            if regions and regions[-1][1] == i:
                regions[-1] = (regions[-1][0], end)
            else:
                regions.append((i, end))
    return regions


def _chunk_pieces(raw: bytes, name: str, offset: int) -> list[Piece]:
    """One chunk of a file (cut at a UTF-8 boundary, `offset` bytes after its BOM) as pieces.

    Mostly-ASCII text (English with a few accents, quotes or emoji) is decoded only where bytes
    above 127 are: the ASCII between them already is its own code points. Measured on 16 MiB of
    tiny shakespeare with a non-ASCII line per copy: 63 ms this way against 330 ms decoding the
    chunk whole and converting it through UTF-32.
    """
    if raw.isascii():
        return [_newlines(raw)]
    regions = _non_ascii_regions(raw)
    if sum(end - start for start, end in regions) > len(raw) * _DENSE_SHARE:
        return _dense_pieces(raw, name, offset)  # non-Latin text: do not try the runs first
    pieces: list[Piece] = []
    prev, limit, count = 0, int(len(raw) * _RUNS_PER_BYTE) + 1, 0
    for start, end in regions:
        for m in _NON_ASCII_RUN.finditer(raw, start, end):
            count += 1
            if count > limit:
                return _dense_pieces(raw, name, offset)
            s, e = m.span()
            try:
                run = raw[s:e].decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(name, offset + s + err.start) from None
            if s > prev:
                pieces.append(_newlines(raw[prev:s]))
            pieces.append(run)
            prev = e
    if prev < len(raw):
        pieces.append(_newlines(raw[prev:]))
    return pieces


def _display_name(path: Path | str) -> str:
    return "standard input" if path == "-" else str(path)


def decoded_pieces(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[Piece]]:
    """A text file as chunks of decoded pieces; RnngenError as `read_text` words it.

    Rules of `decode_text`: NUL in the first 64 KiB refused, a leading BOM dropped (offsets in
    errors count from after it, as Python's utf-8-sig does), CRLF and CR become LF -- a CR that
    ends a chunk waits for the next one, in case that starts with LF.
    """
    name = _display_name(path)
    chunk_bytes = max(4, chunk_bytes)
    try:
        with open(path, "rb") as f:
            if b"\x00" in f.read(NUL_WINDOW):
                raise RnngenError(f"{name} looks like a binary file, not text (it has NUL bytes)")
            f.seek(0)
            head = f.read(len(BOM))
            carry = b"" if head == BOM else head
            offset = 0  # bytes after the BOM consumed before `carry`
            while True:
                block = f.read(chunk_bytes)
                buf = carry + block if carry else block  # (a copy of 8 MiB saved most of the time)
                if not block:  # end of file: whatever is left is the last chunk
                    if buf:
                        yield _chunk_pieces(buf, name, offset)
                    return
                cut = _utf8_cut(buf)
                if cut > 0 and buf[cut - 1] == 0x0D:  # "\r" at the end: it may be half of "\r\n"
                    cut -= 1
                if cut > 0:
                    yield _chunk_pieces(buf if cut == len(buf) else buf[:cut], name, offset)
                carry, offset = buf[cut:], offset + cut
    except OSError as e:
        raise RnngenError(f"cannot read {name}: {e.strerror or e}") from None


def piece_len(piece: Piece) -> int:
    return piece.numel() if isinstance(piece, torch.Tensor) else len(piece)


def piece_text(piece: Piece) -> str:
    if isinstance(piece, bytes):
        return piece.decode("latin-1")
    if isinstance(piece, str):
        return piece
    return bytes(tensor_bytes(piece.to(torch.int32))).decode("utf-32-le")


# --------------------------------------------------------------------------------------------------
# vocabulary and encoding


class Vocabulary:
    """Distinct code points seen so far. Bytes pieces cost one `translate` each: every byte value
    already seen is deleted, and only what is left (usually nothing) is looked at."""

    def __init__(self) -> None:
        self.points: set[int] = set()
        self._seen_bytes = b""

    def add(self, piece: Piece) -> None:
        if isinstance(piece, bytes):
            new = piece.translate(None, self._seen_bytes)
            if new:
                self.points.update(new)
                self._seen_bytes = bytes(sorted(p for p in self.points if p < 256))
        elif isinstance(piece, str):
            self.points.update(map(ord, piece))
        else:  # a count per code point: 3x faster than torch.unique's sort on 8 MiB of Cyrillic
            self.points.update(torch.bincount(piece).nonzero().flatten().tolist())

    def codec(self) -> TextCodec:
        return TextCodec(chr(p) for p in sorted(self.points))


class Unknown(Exception):
    """A character outside the vocabulary (raised inside the encoder, turned into the one-line
    error that `TextCodec.check` gives once the whole corpus has been scanned)."""


class Encoder:
    """Pieces to ids of `codec`, as bytes ready to write (in the dtype `compact_dtype` picks)."""

    def __init__(self, codec: TextCodec, check: bool):
        self.codec, self.check = codec, check
        self.dtype = compact_dtype(codec.vocab_size)
        self.index = codec.index
        low = {ord(c): i for c, i in codec.index.items() if ord(c) < 256}
        self.known_low = bytes(sorted(low))
        self.table = bytes(low.get(b, 0) for b in range(256)) if self.dtype == torch.uint8 else None
        top = max((ord(c) for c in codec.chars), default=0) + 1
        self.lut = torch.full((max(top, 256),), -1, dtype=torch.int32)  # code point -> id, -1 unknown
        if codec.chars:
            self.lut[torch.tensor([ord(c) for c in codec.chars])] = torch.arange(codec.vocab_size, dtype=torch.int32)

    def _tensor_ids(self, points: torch.Tensor) -> torch.Tensor:
        known = points < len(self.lut)
        ids = self.lut.index_select(0, points.where(known, 0)).where(known, -1)
        if self.check and bool((ids < 0).any()):
            raise Unknown
        return ids

    def piece_bytes(self, piece: Piece) -> bytes:
        """The ids of one piece, as the bytes of the token file."""
        if isinstance(piece, bytes) and self.table is not None:
            if self.check and piece.translate(None, self.known_low):
                raise Unknown
            return piece.translate(self.table)
        if isinstance(piece, str):
            try:
                ids = [self.index[c] for c in piece]
            except KeyError:
                raise Unknown from None
            if self.table is not None:
                return bytes(ids)
            return tensor_bytes(torch.tensor(ids, dtype=self.dtype))
        if isinstance(piece, bytes):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                points = torch.frombuffer(piece, dtype=torch.uint8).to(torch.int32)
        else:
            points = piece
        return tensor_bytes(self._tensor_ids(points).to(self.dtype))


# --------------------------------------------------------------------------------------------------
# the passes over the sources


def _each_file(files: Sequence[Path], explicit: Sequence[bool], skipped: list[str], work) -> None:
    """Run `work(path)` on every file; a folder's file that is not text is listed and skipped,
    a file named on the command line fails the whole load (as `load_text` does)."""
    for path, named in zip(files, explicit):
        try:
            work(path)
        except RnngenError as e:
            if named:
                raise
            skipped.append(str(e))


def survey(files: Sequence[Path], explicit: Sequence[bool], chunk_bytes: int = CHUNK_BYTES):
    """The first pass when fitting a vocabulary: (vocabulary, files holding text, skipped lines,
    characters in each file). A file that fails part-way adds nothing."""
    vocab, good, skipped, counts = Vocabulary(), [], [], []

    def work(path: Path) -> None:
        mine, n = Vocabulary(), 0
        for pieces in decoded_pieces(path, chunk_bytes):
            for p in pieces:
                mine.add(p)
                n += piece_len(p)
        vocab.points |= mine.points
        good.append(path)
        counts.append(n)

    _each_file(files, explicit, skipped, work)
    return vocab, good, skipped, counts


def missing_characters(files: Sequence[Path], explicit: Sequence[bool], codec: TextCodec,
                       chunk_bytes: int = CHUNK_BYTES) -> tuple[str, list[str]]:
    """(the characters of the corpus outside `codec` in order of first appearance -- the order
    `TextCodec.check` lists them in --, skipped lines). Only run once an unknown one was met."""
    found: dict[str, None] = {}
    skipped: list[str] = []

    def work(path: Path) -> None:
        mine: dict[str, None] = {}
        for pieces in decoded_pieces(path, chunk_bytes):
            text = "".join(map(piece_text, pieces))
            new = set(text).difference(codec.index, found, mine)
            mine.update(dict.fromkeys(sorted(new, key=text.find)))
        found.update(mine)

    _each_file(files, explicit, skipped, work)
    return "".join(found), skipped


def encode_files(files: Sequence[Path], explicit: Sequence[bool], encoder: Encoder, out,
                 chunk_bytes: int = CHUNK_BYTES) -> tuple[list[Path], list[str], int]:
    """Write the ids of every text file to the open binary file `out`: (files with text, skipped
    lines, tokens written). A file that fails part-way is cut off again, so it adds nothing."""
    names, skipped, total = [], [], 0
    itemsize = torch.empty((), dtype=encoder.dtype).element_size()

    def work(path: Path) -> None:
        nonlocal total
        start, n = out.tell(), 0
        try:
            for pieces in decoded_pieces(path, chunk_bytes):
                data = b"".join(encoder.piece_bytes(p) for p in pieces)
                out.write(data)
                n += len(data) // itemsize
        except RnngenError:
            out.seek(start)
            out.truncate()
            raise
        if n:
            names.append(path)
            total += n

    _each_file(files, explicit, skipped, work)
    return names, skipped, total
