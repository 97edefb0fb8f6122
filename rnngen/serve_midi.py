"""`POST /v1/midi`: a piece from a MIDI model, as .mid bytes, audio, a piano roll, or all three in JSON.

A MIDI request runs through the same continuous loop as text, with the grammar of
rnngen/midi/grammar.py as its rows' mask (fed the prime, as `sample_tokens` feeds it), so a server
busy with text and music steps each model's requests together. Its tokens, and so its file, are those
of `rnngen sample MODEL -s SEED -n MAX_TOKENS [-t ...] -o x.mid`; the file is written by the MIDI kind's
own code. Audio and piano rolls need the `audio` and `plot` extras; without them those formats are a
400 that names the extra, and GET /v1/models says which are there.
"""

from __future__ import annotations

import base64
import functools
import json
import tempfile
import threading
from pathlib import Path

from rnngen.errors import RnngenError
from rnngen.midi.files import DEFAULT_QPM
from rnngen.midi.grammar import Grammar
from rnngen.midi.kind import KIND as MIDI, piece_file
from rnngen.serve_api import ApiError, Limits, Served, check_fields, model_of, number, sampler_of, seed_of
from rnngen.serve_loop import Job

MIDI_FIELDS = {"model", "max_tokens", "temperature", "top_p", "top_k", "seed", "qpm", "program", "format", "tag"}
FORMATS = {"mid": "audio/midi", "wav": "audio/wav", "png": "image/png", "json": "application/json"}


@functools.cache
def features() -> dict[str, bool]:
    """Which optional renderings this installation can make (looked at once)."""
    found = {}
    for name, module in (("audio", "rnngen.audio"), ("piano_roll", "rnngen.plot")):
        try:
            __import__(module, fromlist=["require"]).require()
            found[name] = True
        except (RnngenError, ImportError):
            found[name] = False
    return found


class MidiOutput:
    """One row's events up to and including its EOS; `take` and `end` run on the loop's thread."""

    def __init__(self, eos: int):
        self.eos, self.tokens, self.error = eos, [], None
        self.done = threading.Event()

    def take(self, tokens: list[int]) -> bool:
        self.tokens.append(tokens[0])
        return tokens[0] == self.eos

    def end(self, error: str | None) -> None:
        self.error = error
        self.done.set()


def piece(body: dict, models: dict[str, Served], limits: Limits) -> tuple[str, bytes, dict]:
    """Check a /v1/midi body, sample the piece through the model's loop and answer it:
    (content type, body, extra headers)."""
    check_fields(body, MIDI_FIELDS, "/v1/midi")
    served = model_of(body, models, "midi")
    codec = served.codec
    fmt = body.get("format", "mid")
    if fmt not in FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", "format")
    length = number(body, "max_tokens", min(2000, limits.max_tokens), 1, limits.max_tokens, integer=True)
    qpm = number(body, "qpm", DEFAULT_QPM, 4, 1000)
    program = number(body, "program", None, 0, 127, integer=True)
    seed = seed_of(body)
    sampler = sampler_of(body, seed, MIDI.default_temperature)  # as `rnngen sample` samples MIDI
    wanted = {"wav": "audio", "png": "piano_roll"}.get(fmt)
    available = features() if fmt in ("wav", "png", "json") else {}
    if wanted and not available[wanted]:
        raise ApiError(400, f"this server cannot make {fmt}: install rnngen's "
                            f"{'audio' if fmt == 'wav' else 'plot'} extra", "format")
    prime = [codec.bos]
    grammar = Grammar(codec, 1)
    grammar.feed(prime)
    output = MidiOutput(codec.eos)
    served.loop.submit(Job(prime, 1, length, sampler, take=output.take, end=output.end, mask=grammar,
                           tags=served.row_tags(body, 1, seed)))
    output.done.wait()
    if output.error:
        raise ApiError(503, output.error, kind="server_error")
    notes = codec.decode(prime + output.tokens)
    data = piece_file(notes, codec, qpm, program, None)
    ended = bool(output.tokens) and output.tokens[-1] == codec.eos
    facts = {"seed": seed, "events": len(output.tokens), "notes": len(notes), "ended": ended}
    headers = {"X-Seed": str(seed), "Content-Disposition": f'inline; filename="{served.name}-{seed}.{fmt}"'}
    if fmt == "mid":
        return FORMATS[fmt], data, headers
    if fmt != "json":
        return FORMATS[fmt], _render(data, fmt), headers
    encode = lambda b: base64.b64encode(b).decode()  # noqa: E731
    answer = {"model": served.name, **facts, "qpm": qpm, "midi": encode(data),
              "wav": encode(_render(data, "wav")) if available["audio"] else None,
              "piano_roll": encode(_render(data, "png")) if available["piano_roll"] else None}
    return FORMATS[fmt], json.dumps(answer).encode(), headers


def _render(data: bytes, fmt: str) -> bytes:
    """The piece as a .wav or a .png piano roll, through rnngen's own audio and plot modules."""
    with tempfile.TemporaryDirectory(prefix="rnngen-serve-") as folder:
        path = Path(folder) / f"piece.{fmt}"
        try:
            if fmt == "wav":
                from rnngen.audio import render_file

                render_file(data, path)
            else:
                from rnngen.plot import piano_roll

                piano_roll([data], path)
        except RnngenError as e:
            raise ApiError(500, f"cannot make the {fmt}: {e}", "format", "server_error") from None
        return path.read_bytes()
