"""`rnngen sample`: prime, generate in a batch, and write text (streamed) or JSON lines to stdout."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import torch

from rnngen import checkpoint as checkpoint_io
from rnngen.data import is_midi, read_text, writable_folder
from rnngen.device import resolve_device
from rnngen.errors import RnngenError
from rnngen.sample import StopScanner, generate, step_precision


TEXT_LENGTH, MIDI_LENGTH = 500, 2000  # -n when not given: characters; events (a chorale is ~700)


def run(*, checkpoint: str, length: int | None, num_samples: int, temperature: float, top_k, top_p, seed: int,
        prime: str | None, prime_file: str | None, stops: list[str], fmt: str, separator: str, echo: bool,
        out: str | None, device: str, quiet: bool, qpm: float | None = None, program: int | None = None,
        precision: str = "auto") -> None:
    dev = resolve_device(device)
    model, codec, _ = checkpoint_io.load_model(checkpoint)
    model.to(dev)
    precision = step_precision(precision, dev, model, num_samples)
    if codec.kind == "midi":
        from rnngen.midi import sample_midi

        sample_midi(model, codec, length=length or MIDI_LENGTH, num_samples=num_samples, temperature=temperature,
                    top_k=top_k, top_p=top_p, seed=seed, prime_file=prime_file, out=out, device=dev,
                    quiet=quiet, prime_text=prime, qpm=qpm, program=program, echo=echo,
                    model_name=Path(checkpoint).stem or "sample", precision=precision)
        return
    if qpm is not None or program is not None:
        raise RnngenError(f"--qpm and --program are for MIDI models; {checkpoint} is a text model")
    if prime_file is not None and prime_file != "-" and is_midi(Path(prime_file)):
        raise RnngenError(f"{prime_file} is a MIDI file, but {checkpoint} is a text model; prime it with text")
    length = length or TEXT_LENGTH
    if prime_file is not None:
        prime = read_text(prime_file)
    prime = prime or ""
    codec.check(prime, "the prime")
    # With no prime, start as the model saw most text start: after a newline (not printed).
    start = codec.encode(prime) if prime else [codec.index.get("\n", 0)]
    tokens = generate(model, start, length, num_samples, temperature, top_k, top_p, seed, dev, precision=precision)
    with _output(out) as stream:
        if fmt == "jsonl":
            _write_jsonl(stream, tokens, codec, num_samples, prime, stops, seed, quiet, length)
        elif num_samples == 1:
            _stream_one(stream, tokens, codec, prime if echo else "", stops)
        else:
            _write_batch(stream, tokens, codec, num_samples, prime if echo else "", stops, separator, quiet, length)


@contextmanager
def _output(out: str | None):
    if out is None or out == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(out)
    writable_folder(path, "--out")
    try:
        f = open(path, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise RnngenError(f"cannot write {out}: {e.strerror or e}") from e
    with f:
        yield f


def _stream_one(stream: TextIO, tokens, codec, prime: str, stops: list[str]) -> None:
    """One sample: each character is written and flushed as soon as it is sampled."""
    scanner, chars = StopScanner(stops), codec.chars
    written = prime  # the output's last character decides whether a final newline is needed
    stream.write(prime)
    for step in tokens:
        text = scanner.feed(chars[int(step[0])])
        if text:
            stream.write(text)
            stream.flush()
            written = text
        if scanner.stopped:
            break
    tail = scanner.flush()
    stream.write(tail)
    if not (tail or written).endswith("\n"):
        stream.write("\n")
    stream.flush()


def _collect(tokens, codec, batch: int, stops: list[str], quiet: bool = False, length: int = 0):
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
    texts, _, _ = _collect(tokens, codec, batch, stops, quiet, length)
    stream.write(separator.join(prime + t for t in texts))
    stream.write("\n")


def _write_jsonl(stream: TextIO, tokens, codec, batch: int, prime: str, stops: list[str], seed: int,
                 quiet: bool, length: int) -> None:
    texts, counts, reasons = _collect(tokens, codec, batch, stops, quiet, length)
    for i, (text, count, reason) in enumerate(zip(texts, counts, reasons)):
        record = {"index": i, "prime": prime, "text": text, "seed": seed, "tokens": count, "stop_reason": reason}
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")

