"""Writing samples: text streamed to stdout or a file (one sample, a batch, or JSON lines), and MIDI
samples as .mid files, audio or piano rolls (numbered files, a folder, or .mid bytes on stdout).
stdout carries samples only."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import torch

from rnngen.data import MIDI_SUFFIXES, writable_file, writable_folder
from rnngen.errors import RnngenError, UsageError
from rnngen.sample import StopScanner


def check_text_target(out: str | None, force: bool, model: str) -> None:
    """Before sampling: a text model's `out` (None or - for stdout) is a text file that can be written,
    and is not already there unless `force`."""
    if out is None or out == "-":
        return
    path = Path(out).expanduser()
    if path.suffix.lower() in MIDI_SUFFIXES + AUDIO + PICTURES:
        raise UsageError(f"--out {out}: {model} is a text model and writes text, not {path.suffix}; "
                         f"give a text file such as {path.with_suffix('.txt')}, or - for stdout")
    writable_file(path, "--out", force)


def write_text(out: str | None, tokens: Iterable[torch.Tensor], codec, *, batch: int, prime: str, echo: bool,
               stops: list[str], fmt: str, separator: str, seed: int, quiet: bool, length: int,
               tags: list[str] | None = None) -> None:
    """Text samples to `out` (None or - for stdout): one streams as it is sampled, a batch is written
    when it ends, jsonl as one object per sample (with its tag, for a tagged model)."""
    with _output(out) as stream:
        if fmt == "jsonl":
            _write_jsonl(stream, tokens, codec, batch, prime, stops, seed, quiet, length, tags)
        elif batch == 1:
            _stream_one(stream, tokens, codec, prime if echo else "", stops)
        else:
            _write_batch(stream, tokens, codec, batch, prime if echo else "", stops, separator, quiet, length)


@contextmanager
def _output(out: str | None):
    if out is None or out == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(out).expanduser()  # checked by check_text_target
    try:
        f = open(path, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise RnngenError(f"cannot write {out}: {e.strerror or e}") from e
    with f:
        yield f


def stream_text(tokens: Iterable[torch.Tensor], codec, stops: list[str]) -> Iterator[str]:
    """One sample's text as it is sampled, up to its first stop string (which is not given)."""
    scanner, chars = StopScanner(stops), codec.chars
    for step in tokens:
        text = scanner.feed(chars[int(step[0])])
        if text:
            yield text
        if scanner.stopped:
            return
    tail = scanner.flush()
    if tail:
        yield tail


def _stream_one(stream: TextIO, tokens, codec, prime: str, stops: list[str]) -> None:
    """One sample: each character is written and flushed as soon as it is sampled."""
    written = prime  # the output's last character decides whether a final newline is needed
    stream.write(prime)
    for text in stream_text(tokens, codec, stops):
        stream.write(text)
        stream.flush()
        written = text
    if not written.endswith("\n"):
        stream.write("\n")
    stream.flush()


def collect_texts(tokens, codec, batch: int, stops: list[str], quiet: bool = False, length: int = 0):
    """Run the batch to the end (or until every row hit a stop); (texts, counts, reasons) per row.

    Tokens are read back from the device 64 steps at a time, so a GPU is not stalled every step.
    """
    scanners = [StopScanner(stops) for _ in range(batch)]
    pieces: list[list[str]] = [[] for _ in range(batch)]
    counts = [0] * batch
    chars = codec.chars
    with _progress(quiet or batch * length < 20_000, length, batch) as advance:
        for block in _blocks(tokens, 64):
            for step in block.tolist():  # (B,) per step
                for row, tok in enumerate(step):
                    s = scanners[row]
                    if not s.stopped:
                        counts[row] += 1
                        pieces[row].append(s.feed(chars[tok]))
            advance(len(block))
            if all(s.stopped for s in scanners):
                break
    texts = ["".join(p) + s.flush() for p, s in zip(pieces, scanners)]
    return texts, counts, ["stop" if s.stopped else "length" for s in scanners]


def _blocks(tokens, size: int):
    """Group per-step (B,) tensors into (n, B) blocks of up to `size` steps."""
    block = []
    for step in tokens:
        block.append(step)
        if len(block) == size:
            yield torch.stack(block)
            block = []
    if block:
        yield torch.stack(block)


@contextmanager
def _progress(off: bool, length: int, batch: int):
    """A progress bar on stderr for long batched runs, only when stderr is a terminal."""
    from rnngen.report import stderr_console

    console = stderr_console()
    if off or not console.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"[bold]sampling {batch} x {length}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False, transient=True) as bar:
        task = bar.add_task("sample", total=length)
        yield lambda n: bar.advance(task, n)


def _write_batch(stream: TextIO, tokens, codec, batch: int, prime: str, stops: list[str], separator: str,
                 quiet: bool, length: int) -> None:
    texts, _, _ = collect_texts(tokens, codec, batch, stops, quiet, length)
    stream.write(separator.join(prime + t for t in texts))
    stream.write("\n")


def _write_jsonl(stream: TextIO, tokens, codec, batch: int, prime: str, stops: list[str], seed: int,
                 quiet: bool, length: int, tags: list[str] | None) -> None:
    texts, counts, reasons = collect_texts(tokens, codec, batch, stops, quiet, length)
    for i, (text, count, reason) in enumerate(zip(texts, counts, reasons)):
        record = {"index": i, "prime": prime, "text": text, "seed": seed, "tokens": count, "stop_reason": reason}
        if tags is not None:
            record["tag"] = tags[i]
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")


AUDIO, PICTURES = (".wav", ".flac"), (".png", ".svg", ".pdf")


def check_midi_targets(targets: list[Path] | None, audio: bool, soundfont: str | None) -> None:
    """Before any sampling: the optional packages that writing to `targets` needs are there."""
    suffixes = {p.suffix.lower() for p in targets or []}
    if audio or suffixes & set(AUDIO):
        from rnngen.audio import require

        require(soundfont)
    if suffixes & set(PICTURES):
        from rnngen.plot import require

        require()


def write_midi(targets: list[Path] | None, files: Sequence[bytes], described: Sequence[str], quiet: bool,
               audio: bool = False, soundfont: str | None = None) -> None:
    """MIDI samples to `targets` (from `output_paths`), each as its extension says: .mid, audio
    (.wav, .flac) or a piano roll (.png, .svg, .pdf); with `audio`, a .wav beside each .mid too.
    Each written file is named on stderr; None: the first file's MIDI bytes on stdout."""
    if targets is None:  # -o -
        sys.stdout.buffer.write(files[0])
        sys.stdout.buffer.flush()
        if len(files) > 1 and not quiet:
            print(f"wrote sample 1 of {len(files)} to stdout (stdout holds one file; use -o FOLDER/ for all)",
                  file=sys.stderr)
        return
    for path, data, what in zip(targets, files, described):
        written = [_write_as(target, data, soundfont) for target in (path, *_beside(path, audio))]
        if not quiet:
            print(f"wrote {' and '.join(map(str, written))}: {what}", file=sys.stderr)


def _write_as(path: Path, data: bytes, soundfont: str | None) -> Path:
    suffix = path.suffix.lower()
    if suffix in AUDIO:
        from rnngen.audio import render_file

        render_file(data, path, soundfont)
    elif suffix in PICTURES:
        from rnngen.plot import piano_roll

        piano_roll([data], path)
    else:
        try:
            path.write_bytes(data)
        except OSError as e:
            raise RnngenError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _beside(path: Path, audio: bool) -> list[Path]:
    """With --audio, the .wav written beside a .mid file."""
    return [path.with_suffix(".wav")] if audio and path.suffix.lower() not in AUDIO + PICTURES else []


def output_paths(out: str | None, count: int, default_stem: str, force: bool = False,
                 audio: bool = False) -> list[Path] | None:
    """Where samples go: None for stdout (`-`); a file, numbered files, or files in a folder.

    No `-o`: the current folder, named after the model and seed, so that a file's name says how to
    make it again. A folder (existing, or a path ending in /) gets sample.mid or sample-1.mid ...,
    numbered on after the samples already there; `x.mid` with several samples gets x-1.mid, x-2.mid ...
    A file already there (or the .wav that `audio` puts beside one) is replaced only with `force`.
    """
    if out == "-":
        if sys.stdout.isatty():
            raise RnngenError("refusing to write binary MIDI to a terminal; pipe it (-o - | ...) or give -o FILE.mid")
        return None
    if out is not None and (out.endswith(("/", "\\")) or Path(out).expanduser().is_dir()):
        folder = Path(out).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RnngenError(f"cannot make the folder {out}: {e.strerror or e}") from None
        writable_folder(folder / "sample.mid", "--out")
        return _numbered_on(folder, count)
    base = Path(f"{default_stem}.mid") if out is None else Path(out).expanduser()
    if base.suffix.lower() not in MIDI_SUFFIXES + AUDIO + PICTURES:
        raise UsageError(f"--out {out}: a MIDI model writes .mid files (or .wav/.flac audio, .png/.svg/.pdf piano "
                         f"rolls), not {base.suffix or 'a name without an extension'}; name it "
                         f"{base.with_suffix('.mid')}, give a folder ending in /, or - for stdout")
    width = len(str(count))
    paths = [base] if count == 1 else [base.with_name(f"{base.stem}-{i:0{width}d}{base.suffix}")
                                       for i in range(1, count + 1)]
    for path in paths:
        for target in (path, *_beside(path, audio)):
            writable_file(target, "--out", force)
    return paths


def _numbered_on(folder: Path, count: int) -> list[Path]:
    """sample.mid, or sample-1.mid ...: numbered on after the samples already in `folder` (any file named
    sample or sample-N, whatever its extension), so that a second run adds to the first."""
    taken = [m.group(1) or "1" for p in folder.iterdir() if (m := re.fullmatch(r"sample(?:-(\d+))?", p.stem))]
    if not taken and count == 1:
        return [folder / "sample.mid"]
    last = max(map(int, taken), default=0)
    width = len(str(count)) if not taken else len(max(taken, key=int))  # as the names already there
    return [folder / f"sample-{i:0{width}d}.mid" for i in range(last + 1, last + count + 1)]
