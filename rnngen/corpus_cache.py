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

import ctypes
import hashlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from rnngen.cache import cache_folder, content_digest, file_stats, remove_leftovers, write_json
from rnngen.codec import TextCodec
from rnngen.data import expand_sources, load_text
from rnngen.errors import RnngenError
from rnngen.textscan import CHUNK_BYTES, Encoder, Unknown, encode_files, missing_characters, survey

FORMAT_VERSION = 1


def _entry_key(files: Sequence[Path], explicit: Sequence[bool], codec: TextCodec | None) -> str:
    """Names the entry for these sources: absolute paths, which ones were named (that decides
    whether a non-text file fails or is skipped), and the vocabulary given, if any."""
    what = {"format": FORMAT_VERSION, "files": [[str(Path(f).resolve()), e] for f, e in zip(files, explicit)],
            "codec": None if codec is None else "".join(codec.chars)}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def _open_ids(path: Path, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The token file as a 1-D tensor mapped from disk (MAP_PRIVATE: a write to it would never
    reach the cache); pages are read when touched, so opening costs no memory."""
    ids = torch.from_file(str(path), shared=False, size=n, dtype=dtype)  # (n,)
    _touch_sparsely(path, ids)
    return ids


def _touch_sparsely(path: Path, ids: torch.Tensor) -> None:
    """Keep what the mapping brings into this process's memory to the pages that are read.

    Training reads 64 streams of 129 tokens a step and a few validation stretches, far apart. But
    the kernel caches a file that was written or read in order in large blocks (up to megabytes),
    and a fault maps the whole block that holds the page: on 1 GB, the first step put 170 MB of
    the file in the resident size. So the file's cached blocks are dropped (they are clean: the
    cache is on disk) and the mapping is marked random, which reads a page per fault with no
    read-ahead: a few hundred KB. Where the system has neither call, nothing changes."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        libc = ctypes.CDLL(None)
        libc.madvise(ctypes.c_void_p(ids.data_ptr()), ctypes.c_size_t(ids.nbytes), 1)  # MADV_RANDOM
    except (AttributeError, OSError, TypeError):
        return


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
    write_json(folder / f"{key}.json", meta)  # the commit point
    remove_leftovers(folder, key, keep=ids_name)
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
