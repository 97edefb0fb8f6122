"""Reading folders of thousands of MIDI files: parsed on every core, and kept in a cache.

mido parses a chorale in about 3 ms, so 176k files cost about 9 minutes on one core at every run.
Here the files are parsed by a process pool in chunks (the results, their order and the lines
about skipped files are those of `midi.read_pieces`), and the notes are cached as one int32 tensor
with offsets, saved with `torch.save` as plain tensors and lists and loaded with
`weights_only=True`. An entry is trusted only when the files' paths, sizes, mtimes and SHA-256
(see `rnngen.cache`) match; it is written to a temporary file and renamed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

from rnngen.cache import (block_digests, cache_folder, combine_digests, content_digest, file_stats, remove_leftovers,
                          tensor_bytes, write_atomic)
from rnngen.errors import RnngenError
from rnngen.midi.codec import STEPS_PER_QUARTER, Note
from rnngen.midi.files import MidiError, Piece, read_midi
from rnngen.midi.parts import Part

FORMAT_VERSION = 2  # 2: notes carry their part, and pieces their parts
NOTE_FIELDS = len(Note._fields)  # onset, pitch, dur, velocity, part
T = TypeVar("T")
CHUNK_FILES = 64  # files sent to a worker at a time: few enough round trips, an even spread
SERIAL_BELOW = 32  # fewer files than this are parsed here: a pool costs more to start than they take
HASH_APART_FROM = 1000  # from this many files a cached entry's files are hashed in a process of their own

# One parsed file, as it travels back from a worker: (notes as int32 bytes (onset, pitch, dur,
# velocity, part per note), qpm or nan, its parts as [name, program, drums]) or the line saying why
# it was skipped. Bytes pickle far faster than lists of Note tuples, and the workers never touch
# torch (safe after fork).
Parsed = tuple[bytes, float, list] | str
# With it, the file's block digests for the cache (`rnngen.cache.block_digests`) of the very bytes
# parsed, or None where the file could not be read (or was standard input).
Read = tuple[Parsed, list[bytes] | None]


def parse_file(path: str, steps_per_quarter: int, drums: bool, parts: bool = False) -> Read:
    """One file, as `read_pieces` reads it: its notes, or its "skipped ..." message; and its digests,
    hashed here from the bytes read once for both (a separate pass took a core for 2 s at 10,000 files)."""
    try:
        data = None if path == "-" else Path(path).read_bytes()
    except OSError:
        data = None  # read_midi says why, as it always has
    try:
        piece = read_midi(path if data is None else data, steps_per_quarter, drums, parts)
    except MidiError as e:
        parsed: Parsed = f"skipped {'standard input' if path == '-' else path}: {e}"
    else:
        flat = array("i", [v for note in piece.notes for v in note])
        parsed = (flat.tobytes(), math.nan if piece.qpm is None else piece.qpm,
                  [[p.name, p.program, p.drums] for p in piece.parts])
    return parsed, None if data is None else block_digests(data)


def _parse_chunk(job: tuple[list[str], int, bool, bool]) -> list[Read]:
    paths, spq, drums, parts = job
    return [parse_file(p, spq, drums, parts) for p in paths]


def _context():
    """fork where there is one: workers start at once with the modules already imported (spawn
    would import torch again in each, about 2 s). Workers run only mido and plain Python."""
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


def parse_files(files: Sequence[Path | str], steps_per_quarter: int = STEPS_PER_QUARTER, drums: bool = False,
                workers: int | None = None, progress: bool | None = None, parts: bool = False) -> list[Read]:
    """Every file parsed (and hashed), in the order given, over `workers` processes (default: every core)."""
    paths = [str(f) for f in files]
    workers = workers or os.cpu_count() or 1
    chunks = [paths[i : i + CHUNK_FILES] for i in range(0, len(paths), CHUNK_FILES)]
    jobs = [(chunk, steps_per_quarter, drums, parts) for chunk in chunks]
    show = sys.stderr.isatty() if progress is None else progress
    with _progress(len(paths), show) as advance:
        if workers <= 1 or len(paths) < SERIAL_BELOW or "-" in paths:
            results = []
            for job in jobs:
                results += _parse_chunk(job)
                advance(len(job[0]))
            return results
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=_context()) as pool:
            results = []
            for job, parsed in zip(jobs, pool.map(_parse_chunk, jobs)):  # map keeps the order
                results += parsed
                advance(len(job[0]))
            return results


class _progress:
    """A rich bar on stderr while files are parsed, when stderr is a terminal; nothing otherwise."""

    def __init__(self, total: int, show: bool):
        self.total, self.show, self.bar = total, show, None

    def __enter__(self):
        if not self.show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]reading MIDI"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), redirect_stdout=False,
                            transient=True)
        self.bar.start()
        task = self.bar.add_task("midi", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


# --------------------------------------------------------------------------------------------------
# the compact form and the cache


def pack(parsed: Sequence[Parsed], files: Sequence[Path | str]) -> dict:
    """Parsed files as plain data: notes (total, 5) int32, offsets (pieces + 1,) int64, qpm
    (pieces,) float64 with nan for none, each piece's parts, names and their indices among the files,
    skipped lines (in file order)."""
    blobs, qpms, names, read, skipped, piece_parts = [], [], [], [], [], []
    for i, (f, p) in enumerate(zip(files, parsed)):
        if isinstance(p, str):
            skipped.append(p)
            continue
        blobs.append(p[0])
        qpms.append(p[1])
        piece_parts.append(p[2])
        names.append(str(f))
        read.append(i)
    counts = torch.tensor([len(b) // (4 * NOTE_FIELDS) for b in blobs], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    data = bytearray(b"".join(blobs))
    notes = (torch.frombuffer(data, dtype=torch.int32).view(-1, NOTE_FIELDS) if data
             else torch.zeros(0, NOTE_FIELDS, dtype=torch.int32))
    return {"notes": notes.clone(), "offsets": offsets, "qpm": torch.tensor(qpms, dtype=torch.float64),
            "parts": piece_parts, "names": names, "read": read, "skipped": skipped}


def unpack(packed: dict) -> list[Piece]:
    """The pieces of `pack`, as `read_midi` gives them.

    Making one Note per note is most of a cached load: per million notes, measured here, torch's
    tolist and Note._make take 2.1 s, a flat list through `array` and tuple.__new__ 1.2 s. With the
    cyclic garbage collector left on, its passes over the growing heap cost three times that again
    (10,000 files, 2.9 million notes: 4.1 s, 1.0 s with it paused); notes hold no cycles."""
    with gc_paused():
        flat = array("i")
        flat.frombytes(bytes(tensor_bytes(packed["notes"])))
        values = iter(flat.tolist())
        notes = list(map(partial(tuple.__new__, Note), zip(*[values] * NOTE_FIELDS)))
        bounds = packed["offsets"].tolist()
        qpms = packed["qpm"].tolist()
        return [Piece(notes[bounds[i] : bounds[i + 1]], None if math.isnan(q) else q, [Part(*p) for p in parts])
                for i, (q, parts) in enumerate(zip(qpms, packed["parts"]))]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while millions of small objects without cycles are made."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _entry_key(files: Sequence[Path | str], steps_per_quarter: int, drums: bool, parts: bool) -> str:
    what = {"format": FORMAT_VERSION, "files": [str(Path(f).resolve()) for f in files],
            "steps_per_quarter": steps_per_quarter, "drums": bool(drums), "parts": bool(parts)}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def _load_entry(path: Path, stats: list[list[int]], files: Sequence[Path], then: Callable[[dict], T]) -> tuple | None:
    """(the cached entry, `then` of it) when its stats and content digest match the files now, else None.
    With many files `then` runs while another process hashes them, on another core (at 10,000 files,
    1.5-2 s of hashing beside a second of making notes; a thread would wait for the interpreter throughout)."""
    try:
        packed = torch.load(path, weights_only=True)
    except Exception:  # missing, truncated or not ours: parse again
        return None
    if not isinstance(packed, dict) or packed.get("format") != FORMAT_VERSION or packed.get("stats") != stats:
        return None
    if "read" not in packed:  # kept before the indices were: they are known only when no file was skipped
        if packed.get("skipped"):
            return None
        packed["read"] = list(range(len(files)))
    if len(files) < HASH_APART_FROM:
        return (packed, then(packed)) if packed.get("digest") == content_digest(files) else None
    with ProcessPoolExecutor(1, mp_context=_context()) as hashing:
        digest = hashing.submit(content_digest, files)
        made = then(packed)
        if packed.get("digest") != digest.result():  # what `then` made is dropped unused
            return None
    return packed, made


def load_packed(files: Sequence[Path | str], steps_per_quarter: int = STEPS_PER_QUARTER, drums: bool = False,
                cache_dir: Path | str | None = None, workers: int | None = None,
                progress: bool | None = None, parts: bool = False,
                then: Callable[[dict], T] = lambda packed: None) -> tuple[dict, T]:
    """The files parsed (see `pack`), from the cache when it is valid, else parsed and cached, and
    `then` of them. Standard input (`-`) is parsed and never cached."""
    if "-" in [str(f) for f in files]:
        packed = pack([p for p, _ in parse_files(files, steps_per_quarter, drums, workers, progress, parts)], files)
        return packed, then(packed)
    files = [Path(f) for f in files]
    folder = cache_folder(cache_dir, "midi")
    key = _entry_key(files, steps_per_quarter, drums, parts)
    stats = file_stats(files)
    path = folder / f"{key}.pt"
    cached = _load_entry(path, stats, files, then)
    if cached is not None:
        return cached
    read = parse_files(files, steps_per_quarter, drums, workers, progress, parts)
    digests = [d for _, d in read]
    packed = pack([p for p, _ in read], files)
    # The digest of the bytes parsed; where a file could not be read, hashing it fails as it always did.
    digest = combine_digests(digests) if all(d is not None for d in digests) else content_digest(files)
    packed.update(format=FORMAT_VERSION, stats=stats, digest=digest)
    if file_stats(files) == stats:  # a file changed while it was read: do not keep what was read
        write_atomic(path, lambda f: torch.save(packed, f), ".pt")
        remove_leftovers(folder, key, keep=path.name)
    return packed, then(packed)


def read_pieces_cached(files: Sequence[Path | str], steps_per_quarter: int = STEPS_PER_QUARTER,
                       drums: bool = False, cache_dir: Path | str | None = None, workers: int | None = None,
                       progress: bool | None = None, parts: bool = False) -> tuple[list[Piece], list[str]]:
    """`midi.read_pieces` through the cache and over every core: the same (pieces, names), the
    same lines on stderr for skipped files (in file order, after the bar), the same error. The names
    are the files as given this time (an entry is found by the files' absolute paths)."""
    packed, pieces = load_packed(files, steps_per_quarter, drums, cache_dir, workers, progress, parts, then=unpack)
    for line in packed["skipped"]:
        print(line, file=sys.stderr)
    if not packed["names"]:
        shown = f"the {len(files)} files given" if len(files) != 1 else str(files[0])
        raise RnngenError(f"no usable MIDI files: none of {shown} could be read (see the lines above)")
    return pieces, [str(files[i]) for i in packed["read"]]


def iter_piece_notes(packed: dict) -> Iterator[torch.Tensor]:
    """Each piece's notes as an (n, 4) int32 view (onset, pitch, dur, velocity), without making
    Note objects: at 176k files, one Python tuple per note would cost gigabytes."""
    notes, bounds = packed["notes"], packed["offsets"].tolist()
    for i in range(len(bounds) - 1):
        yield notes[bounds[i] : bounds[i + 1]]
