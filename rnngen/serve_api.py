"""What `rnngen serve` answers, apart from HTTP: requests checked field by field, turned into jobs for
a model's `BatchLoop`, and their outputs as OpenAI-style completions (whole, or as server-sent events)
and MIDI files. The HTTP front (rnngen/serve_http.py) only moves bytes.

A bad request is an `ApiError`: a 4xx status and a one-line message naming the field, in OpenAI's
error shape, so that the official `openai` package raises its usual exceptions.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rnngen.errors import RnngenError
from rnngen.sample import Sampler, StopScanner
from rnngen.serve_loop import BatchLoop, Job
from rnngen.tags import sample_tags


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    """What one request may ask for; `max_rows` is how many rows a model steps at once (more wait)."""

    max_tokens: int = 8192
    max_n: int = 16
    max_prompt: int = 4096  # characters
    max_rows: int = 256


@dataclass
class Served:
    """A loaded model and the loop that samples from it."""

    name: str
    codec: object
    loop: BatchLoop
    created: int
    tag_tokens: list[int] | None = None  # a tagged model's training tokens per tag, for drawing a tag when none is asked

    @property
    def tags(self) -> tuple[str, ...]:
        return self.loop.model.cfg.tags

    def row_tags(self, body: dict, rows: int, seed: int) -> list[int] | None:
        """Each row's tag index for the request's `tag` field, as `rnngen sample --tag` chooses them."""
        tag = body.get("tag")
        if tag is not None and not isinstance(tag, str):
            raise ApiError(400, f"tag must be a string, not {json.dumps(tag)}", "tag")
        try:
            return sample_tags(self.tags, [] if tag is None else [tag], rows, self.tag_tokens, seed)
        except RnngenError as e:
            raise ApiError(400, str(e), "tag") from None

    @property
    def kind(self) -> str:
        return self.codec.kind

    def describe(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "rnngen",
                "kind": self.kind, "unit": self.codec.unit, "tags": list(self.tags)}


# --------------------------------------------------------------------------------------------------
# fields


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def number(body: dict, name: str, default, low: float, high: float, integer: bool = False):
    """A numeric field in [low, high] (whole where `integer`), or its default when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be {'an integer' if integer else 'a number'}, not {json.dumps(value)}", name)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g}, not {value:g}", name)
    return value


def flag(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, not {json.dumps(value)}", name)
    return value


def strings(body: dict, name: str, most: int) -> list[str]:
    """A string or a list of strings (OpenAI's `stop`)."""
    value = body.get(name)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ApiError(400, f"{name} must be a string or a list of strings", name)
    if len(items) > most:
        raise ApiError(400, f"{name} takes at most {most} strings, not {len(items)}", name)
    return items


def model_of(body: dict, models: dict[str, Served], kind: str) -> Served:
    name = body.get("model")
    if name is None and len(models) == 1:
        name = next(iter(models))
    if not isinstance(name, str):
        raise ApiError(400, "model must be the name of a served model (GET /v1/models lists them)", "model")
    served = models.get(name)
    if served is None:
        raise ApiError(404, f"no model named {name!r} is served here; served: {', '.join(models)}", "model",
                       code="model_not_found")
    if served.kind != kind:
        where = "/v1/completions" if served.kind == "text" else "/v1/midi"
        raise ApiError(400, f"{name} is a {served.kind} model: ask {where}", "model")
    return served


def check_fields(body: dict, known: set[str], endpoint: str) -> None:
    for name in body:
        if name not in known:
            raise ApiError(400, f"{endpoint} does not take {name!r}", name)


def sampler_of(body: dict, seed: int, temperature_default: float = 0.8) -> Sampler:
    temperature = number(body, "temperature", temperature_default, 0, 100)
    top_p = number(body, "top_p", None, 0, 1)
    if top_p is not None and top_p <= 0:
        raise ApiError(400, "top_p must be above 0", "top_p")
    top_k = number(body, "top_k", None, 1, 1 << 30, integer=True)
    return Sampler(temperature, top_k, top_p, torch.Generator().manual_seed(seed))


def seed_of(body: dict) -> int:
    seed = number(body, "seed", None, 0, 2**63 - 1, integer=True)
    return secrets.randbelow(2**31) if seed is None else seed


# --------------------------------------------------------------------------------------------------
# text: /v1/completions

COMPLETION_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "seed", "stop",
                     "stream", "echo", "user", "presence_penalty", "frequency_penalty", "logprobs", "best_of", "tag"}


class TextOutput:
    """A text request's rows as they are sampled, held for the thread that answers the client.
    `take` and `end` run on the loop's thread, so they do as little as they can there: with stop
    strings each token is decoded and scanned at once (a row must end at its stop); without, a step's
    tokens are only kept, and `wait` decodes them on the answering thread."""

    def __init__(self, codec, rows: int, stops: list[str]):
        self.chars = codec.chars
        self.scanners = [StopScanner(stops) for _ in range(rows)]
        self.scan = bool(self.scanners[0].stops)
        self.counts = [0] * rows
        self.fresh: list[tuple[int, str]] = []  # (row, text) not yet handed out
        self.raw: list[list[int]] = []  # without stop strings: each step's tokens, not yet handed out
        self.reasons: list[str | None] = [None] * rows
        self.error: str | None = None
        self.ended = False
        self.cond = threading.Condition()
        self.streaming = False  # whether a thread waits for each piece of text, or only for the end
        self.on_change = None  # also called (loop's thread) when text arrives or the job ends: for async fronts

    def take(self, tokens: list[int]) -> bool:
        if not self.scan:
            with self.cond:
                self.raw.append(tokens)
                if self.streaming:  # a whole answer's thread sleeps until the end
                    self.cond.notify()
        else:
            self._scan(tokens)
        if self.on_change is not None:
            self.on_change()
        return self.scan and all(s.stopped for s in self.scanners)

    def _scan(self, tokens: list[int]) -> None:
        fresh = []
        for row, token in enumerate(tokens):
            scanner = self.scanners[row]
            if scanner.stopped:
                continue
            self.counts[row] += 1
            text = scanner.feed(self.chars[token])
            if text:
                fresh.append((row, text))
        with self.cond:
            self.fresh.extend(fresh)
            if self.streaming:
                self.cond.notify()

    def end(self, error: str | None) -> None:
        with self.cond:
            for row, scanner in enumerate(self.scanners):
                self.reasons[row] = "stop" if scanner.stopped else "length"
                tail = scanner.flush()
                if tail:
                    self.fresh.append((row, tail))
            self.error, self.ended = error, True
            self.cond.notify()
        if self.on_change is not None:
            self.on_change()

    def wait(self, timeout: float | None = None) -> tuple[list[tuple[int, str]], bool]:
        """What arrived since the last call, as (row, text) pieces, and whether the job has ended
        (blocks until either, or `timeout`)."""
        with self.cond:
            if not self.fresh and not self.raw and not self.ended:
                self.cond.wait(timeout)
            fresh, raw, ended = self.fresh, self.raw, self.ended
            self.fresh, self.raw = [], []
        if raw:
            chars = self.chars
            for row in range(len(self.counts)):
                fresh.append((row, "".join([chars[step[row]] for step in raw])))
                self.counts[row] += len(raw)
        return fresh, ended


@dataclass
class Completion:
    """A checked completion request, its job submitted."""

    served: Served
    job: Job
    output: TextOutput
    prompt: str
    echo: bool
    stream: bool
    seed: int
    id: str
    created: int

    def chunk(self, row: int, text: str, reason: str | None = None) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.served.name,
                "choices": [{"text": text, "index": row, "logprobs": None, "finish_reason": reason}]}

    def usage(self) -> dict:
        done = sum(self.output.counts)
        return {"prompt_tokens": len(self.prompt), "completion_tokens": done, "total_tokens": len(self.prompt) + done}


def start_completion(body: dict, models: dict[str, Served], limits: Limits) -> Completion:
    """Check a /v1/completions body and submit its job to the model's loop."""
    check_fields(body, COMPLETION_FIELDS, "/v1/completions")
    served = model_of(body, models, "text")
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (or a list of one string)", "prompt")
    if len(prompt) > limits.max_prompt:
        raise ApiError(400, f"prompt is {len(prompt):,} characters; this server takes at most {limits.max_prompt:,}",
                       "prompt")
    codec = served.codec
    try:
        codec.check(prompt, "the prompt")
    except RnngenError as e:
        raise ApiError(400, str(e), "prompt") from None
    for name in ("logprobs", "best_of"):
        if body.get(name) not in (None, 1 if name == "best_of" else None):
            raise ApiError(400, f"{name} is not supported by rnngen serve", name)
    for name in ("presence_penalty", "frequency_penalty"):
        if number(body, name, 0, -2, 2) != 0:
            raise ApiError(400, f"{name} is not supported by rnngen serve (leave it at 0)", name)
    length = number(body, "max_tokens", min(500, limits.max_tokens), 1, limits.max_tokens, integer=True)
    rows = number(body, "n", 1, 1, limits.max_n, integer=True)
    stops = strings(body, "stop", 4)
    echo, stream = flag(body, "echo"), flag(body, "stream")
    seed = seed_of(body)
    sampler = sampler_of(body, seed)
    # With no prompt, start as `rnngen sample` does: after a newline (not printed).
    start = codec.encode(prompt) if prompt else [codec.index.get("\n", 0)]
    output = TextOutput(codec, rows, stops)
    output.streaming = stream
    job = Job(start, rows, length, sampler, take=output.take, end=output.end, tags=served.row_tags(body, rows, seed))
    served.loop.submit(job)
    name = f"cmpl-{secrets.token_hex(12)}"
    return Completion(served, job, output, prompt, echo, stream, seed, name, int(time.time()))


def whole(completion: Completion, alive=lambda: True) -> dict | None:
    """Wait for every row and answer as one JSON object (ApiError 503 if the job was ended). Every
    half second `alive()` is asked whether the client is still there; if not, the job is cancelled
    (its rows leave at the next step) and there is no answer: None."""
    output = completion.output
    texts = [[] for _ in output.counts]
    checked = time.monotonic()
    while True:
        fresh, ended = output.wait(0.5)
        for row, text in fresh:
            texts[row].append(text)
        if ended:
            break
        if time.monotonic() - checked >= 0.5:
            if not alive():
                completion.job.cancelled = True
                return None
            checked = time.monotonic()
    if output.error:
        raise ApiError(503, output.error, kind="server_error")
    prefix = completion.prompt if completion.echo else ""
    choices = [{"text": prefix + "".join(t), "index": i, "logprobs": None, "finish_reason": output.reasons[i]}
               for i, t in enumerate(texts)]
    return {"id": completion.id, "object": "text_completion", "created": completion.created,
            "model": completion.served.name, "seed": completion.seed, "choices": choices, "usage": completion.usage()}


# A stream's first text goes out at once; after that, what arrives within STREAM_EVERY seconds goes
# out as one event. One event per character made every client's thread write ~150 times a second,
# and with 64 clients that Python work took the sampling loop's CPU (benchmarks/RESULTS.md).
STREAM_EVERY = 0.05


def events(completion: Completion) -> Iterator[bytes]:
    """Server-sent events as OpenAI streams them: the text that arrived since the last event, per
    row, a last event per row with its finish_reason, then [DONE]."""
    output = completion.output
    if completion.echo and completion.prompt:
        for row in range(len(output.counts)):
            yield sse(completion.chunk(row, completion.prompt))
    due = 0.0
    while True:
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        fresh, ended = output.wait()
        merged: dict[int, list[str]] = {}
        for row, text in fresh:
            merged.setdefault(row, []).append(text)
        for row, texts in merged.items():
            yield sse(completion.chunk(row, "".join(texts)))
        if merged:
            due = time.monotonic() + STREAM_EVERY
        if ended:
            break
    if output.error:
        yield sse(ApiError(503, output.error, kind="server_error").body())
    else:
        for row, reason in enumerate(output.reasons):
            yield sse(completion.chunk(row, "", reason))
    yield b"data: [DONE]\n\n"


def sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def models_list(models: dict[str, Served]) -> dict:
    return {"object": "list", "data": [m.describe() for m in models.values()]}
