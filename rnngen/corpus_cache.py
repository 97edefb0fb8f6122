"""Text corpora encoded once into a token file in a cache folder, then opened memory-mapped.

Reading a corpus with `load_text` and encoding it in memory costs about 60 s and 2.5x the corpus
in memory for 1 GB of text, on every run. Here the sources are decoded in chunks (never whole),
their token ids written to `<cache>/text/<key>-<digest>.ids`, and later runs map that file: the
pages stay on disk until training reads them, so memory does not grow with the corpus.

The result is exactly what the in-memory path gives: the vocabulary of `TextCodec.fit` (distinct
code points, sorted) and the ids of `TextCodec.encode_corpus` on the text `load_text` returns
(same decoding rules as `decode_text`, same files skipped, same messages).

Measured with benchmarks/scale.py on the 2-core machine, shared (load 2-4): 1 GB of tiny
shakespeare with a non-ASCII line per copy builds in 6.2-7.5 s at a peak of 289 MB (Python with
torch alone: 221 MB; in memory: 156 s and 5.2 GB) and reopens in 0.5-1.4 s; 4 GB: 26 s, 295 MB,
3.2 s. Text dense in non-Latin letters takes the slower whole-chunk path, 30-36 MB/s.

A cache entry is trusted only when the files' paths, sizes, mtimes AND a SHA-256 of their bytes
match the ones it was built from, so an edit that keeps size and mtime is still noticed. Its
metadata file is written last, by rename, and names the token file it belongs to: an interrupted
build leaves at most a temporary file, never an entry that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rnngen.codec import TextCodec, compact_dtype
from rnngen.data import expand_sources, load_text
from rnngen.errors import RnngenError

FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 23  # 8 MiB of the file decoded at a time: the build's memory stays ~100 MB
HASH_BLOCK = 1 << 24  # the digest hashes 16 MiB blocks, two threads at once (hashlib drops the GIL)
NUL_WINDOW = 65536  # decode_text refuses a file with a NUL byte in its first 64 KiB
STALE_TEMP_S = 3600  # temporary files untouched this long are leftovers of a killed build
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
# where the cache lives


def default_cache_dir() -> Path:
    """`$RNNGEN_CACHE_DIR`, else `$XDG_CACHE_HOME/rnngen`, else `~/.cache/rnngen`."""
    if os.environ.get("RNNGEN_CACHE_DIR"):
        return Path(os.environ["RNNGEN_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rnngen"


def cache_folder(cache_dir: Path | str | None, kind: str) -> Path:
    """`<cache_dir>/<kind>`, made if missing; a folder that cannot be made is a one-line error."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnngenError(f"cannot make the cache folder {folder}: {e.strerror or e}") from None
    return folder


def file_stats(files: Sequence[Path]) -> list[list[int]]:
    """[size, mtime_ns] of each file: the cheap half of the staleness check."""
    stats = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError as e:
            raise RnngenError(f"cannot read {f}: {e.strerror or e}") from None
        stats.append([st.st_size, st.st_mtime_ns])
    return stats


def content_digest(files: Sequence[Path], workers: int = 2, block: int = HASH_BLOCK) -> str:
    """SHA-256 over every file's bytes, hashed as 16 MiB blocks in `workers` threads.

    Measured on this project's 2-core machine: sha256 0.8 GB/s per core (sha1 0.7, md5 0.5,
    blake2b 0.3); reopening the cache of 1 GB took 0.5-1.4 s with two threads, of 4 GB 3.2 s.
    """
    jobs = [(i, f, off) for i, f in enumerate(files) for off in range(0, max(os.path.getsize(f), 1), block)]

    def hash_block(job: tuple[int, Path, int]) -> bytes:
        _, path, off = job
        try:
            with open(path, "rb") as fh:
                fh.seek(off)
                return hashlib.sha256(fh.read(block)).digest()
        except OSError as e:
            raise RnngenError(f"cannot read {path}: {e.strerror or e}") from None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = list(pool.map(hash_block, jobs))
    total = hashlib.sha256()
    last = -1
    for (i, _, _), d in zip(jobs, digests):
        if i != last:  # a file boundary: blocks of different files never run together
            total.update(b"\x00file" + i.to_bytes(8, "little"))
            last = i
        total.update(d)
    return total.hexdigest()


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


def tensor_bytes(t: torch.Tensor) -> bytearray:
    """A tensor's raw bytes (one copy; torch has no buffer protocol without numpy)."""
    out = bytearray(t.numel() * t.element_size())
    if out:
        torch.frombuffer(out, dtype=t.dtype).copy_(t.reshape(-1))
    return out


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


# --------------------------------------------------------------------------------------------------
# cache entries


def _entry_key(files: Sequence[Path], explicit: Sequence[bool], codec: TextCodec | None) -> str:
    """Names the entry for these sources: absolute paths, which ones were named (that decides
    whether a non-text file fails or is skipped), and the vocabulary given, if any."""
    what = {"format": FORMAT_VERSION, "files": [[str(Path(f).resolve()), e] for f, e in zip(files, explicit)],
            "codec": None if codec is None else "".join(codec.chars)}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def _open_ids(path: Path, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The token file as a 1-D tensor mapped from disk (MAP_PRIVATE: a write to it would never
    reach the cache); pages are read when touched, so opening costs no memory."""
    return torch.from_file(str(path), shared=False, size=n, dtype=dtype)  # (n,)


def _read_meta(meta_path: Path) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION else None


def _valid_entry(folder: Path, meta: dict, stats: list[list[int]], digest: str):
    """(codec, ids, indices of the files with text, skipped) when the entry matches, else None."""
    if meta.get("stats") != stats or meta.get("digest") != digest:
        return None
    try:
        ids_path, n = folder / meta["ids"], int(meta["tokens"])
        dtype = {"uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32}[meta["dtype"]]
        if n < 1 or ids_path.stat().st_size != n * torch.empty((), dtype=dtype).element_size():
            return None
        ids = _open_ids(ids_path, n, dtype)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError):  # damaged, or removed by a rebuild
        return None
    return TextCodec(meta["chars"]), ids, meta["texts"], meta["skipped"]


def _remove_leftovers(folder: Path, key: str, keep: str) -> None:
    """Token files of this entry's older builds, and temporary files of killed builds."""
    now = time.time()
    for p in folder.iterdir():
        try:
            if p.name.startswith(f"{key}-") and p.suffix == ".ids" and p.name != keep:
                p.unlink()
            elif p.name.startswith(".tmp-") and now - p.stat().st_mtime > STALE_TEMP_S:
                p.unlink()
        except OSError:
            pass


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build(folder: Path, key: str, files: list[Path], explicit: list[bool], given: TextCodec | None,
           stats: list[list[int]], digest: str | None, what: str, chunk_bytes: int):
    """Encode the sources into a new entry; (codec, ids, indices of the files with text, skipped)."""
    hashing = None
    if digest is None:  # hash in a thread while this one decodes: two cores, one pass of waiting
        result: dict[str, object] = {}

        def run() -> None:
            try:
                result["digest"] = content_digest(files, workers=1)
            except BaseException as e:  # reported by the main thread
                result["error"] = e

        hashing = threading.Thread(target=run, daemon=True)
        hashing.start()
    if given is None:
        vocab, todo, skipped, _ = survey(files, explicit, chunk_bytes)
        codec, todo_explicit = vocab.codec(), [True] * len(todo)
    else:
        codec, todo, todo_explicit, skipped = given, files, explicit, []
    encoder = Encoder(codec, check=given is not None)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ids", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                names, more, n = encode_files(todo, todo_explicit, encoder, out, chunk_bytes)
            except Unknown:
                missing, lines = missing_characters(files, explicit, codec, chunk_bytes)
                _say_skipped(lines)
                codec.check(missing, what)
                raise AssertionError("an unknown character was met but not found again") from None
            skipped += more
            out.flush()
            os.fsync(out.fileno())  # the data is on disk before any metadata points at it
        if hashing is not None:
            hashing.join()
            if "error" in result:
                raise result["error"]
            digest = result["digest"]
        if file_stats(files) != stats:
            raise RnngenError("a source file changed while it was being read; run again")
        if n == 0:
            Path(tmp).unlink()
            return codec, None, [], skipped
        ids_name = f"{key}-{digest[:16]}.ids"
        os.replace(tmp, folder / ids_name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    position = {p: i for i, p in enumerate(files)}
    meta = {"format": FORMAT_VERSION, "stats": stats, "digest": digest, "ids": ids_name,
            "dtype": str(encoder.dtype).removeprefix("torch."), "tokens": n, "chars": "".join(codec.chars),
            "texts": [position[p] for p in names], "skipped": skipped}
    _write_json(folder / f"{key}.json", meta)  # the commit point
    _remove_leftovers(folder, key, keep=ids_name)
    return codec, _open_ids(folder / ids_name, n, encoder.dtype), meta["texts"], skipped


def _say_skipped(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"skipped: {line}", file=sys.stderr)


def open_text_corpus(sources: Sequence[str], codec: TextCodec | None = None, cache_dir: Path | str | None = None,
                     what: str = "the corpus", chunk_bytes: int = CHUNK_BYTES,
                     ) -> tuple[TextCodec, torch.Tensor, list[str]]:
    """`load_text` + `TextCodec.fit` + `encode_corpus`, through the cache: (codec, ids, names).

    `sources` as `load_text` takes them (files, folders). With `codec` given (resume, fine-tune)
    the ids use its vocabulary and a character outside it fails as `TextCodec.check` words it.
    `ids` is a 1-D tensor in `compact_dtype`, memory-mapped from the cache; standard input (`-`)
    cannot be cached and goes through the in-memory path.
    """
    files = expand_sources(sources)
    if "-" in files:
        text, names = load_text(sources)
        codec = codec or TextCodec.fit(text)
        return codec, codec.encode_corpus(text, what), names
    files = [Path(f) for f in files]
    explicit = [str(f) in sources for f in files]
    folder = cache_folder(cache_dir, "text")
    key = _entry_key(files, explicit, codec)
    stats = file_stats(files)
    meta = _read_meta(folder / f"{key}.json")
    digest = None
    entry = None
    if meta is not None and meta.get("stats") == stats:  # worth hashing only when the stats agree
        digest = content_digest(files)
        entry = _valid_entry(folder, meta, stats, digest)
    if entry is None:
        entry = _build(folder, key, files, explicit, codec, stats, digest, what, chunk_bytes)
    codec, ids, texts, skipped = entry
    names = [str(files[i]) for i in texts]  # as given this time (the key holds absolute paths)
    _say_skipped(skipped)
    if ids is None:
        raise RnngenError(f"no text found in {', '.join(sources)}" + (" (the input is empty)" if not skipped else ""))
    return codec, ids, names
