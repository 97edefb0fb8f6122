"""The other HTTP stack measured for `rnngen serve`: starlette on uvicorn (asyncio, one thread for
every connection) in front of the same models, loops and request handling as the standard library's
server, so that only the HTTP stack differs. Used by serve_speed.py --stacks stdlib,starlette.

    pip install starlette uvicorn
    python benchmarks/serve_starlette.py shakespeare --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rnngen import serve_api, serve_cmd
from rnngen.cli import keep_freed_memory
from rnngen.config import ServeConfig
from rnngen.serve_api import ApiError, Limits


def app_for(cfg: ServeConfig) -> Starlette:
    models = serve_cmd.load(cfg)
    limits = Limits(cfg.max_tokens, cfg.max_n, cfg.max_prompt, cfg.max_batch)

    async def completions(request: Request) -> Response:
        try:
            completion = serve_api.start_completion(serve_api.parse_body(await request.body()), models, limits)
        except ApiError as e:
            return JSONResponse(e.body(), e.status)
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        completion.output.on_change = lambda: loop.call_soon_threadsafe(changed.set)
        if not completion.stream:
            while not completion.output.ended:
                await changed.wait()
                changed.clear()
            try:
                return Response(json.dumps(serve_api.whole(completion)), media_type="application/json")
            except ApiError as e:
                return JSONResponse(e.body(), e.status)
        return StreamingResponse(_events(completion, changed), media_type="text/event-stream")

    async def listing(request: Request) -> Response:
        return JSONResponse(serve_api.models_list(models))

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                             Route("/v1/models", listing)])


async def _events(completion, changed: asyncio.Event):
    """serve_api.events, waiting on the event loop instead of a thread."""
    output = completion.output
    due = 0.0
    try:
        while True:
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            changed.clear()
            fresh, ended = output.wait(0)
            merged: dict[int, list[str]] = {}
            for row, text in fresh:
                merged.setdefault(row, []).append(text)
            for row, texts in merged.items():
                yield serve_api.sse(completion.chunk(row, "".join(texts)))
            if merged:
                due = time.monotonic() + serve_api.STREAM_EVERY
            if ended:
                break
            if not fresh:
                await changed.wait()
        for row, reason in enumerate(output.reasons):
            yield serve_api.sse(completion.chunk(row, "", reason))
        yield b"data: [DONE]\n\n"
    finally:
        completion.job.cancelled = True  # a client that left: its rows leave at the next step


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    keep_freed_memory()  # as the rnngen command does
    app = app_for(ServeConfig(models=args.models, port=args.port, precision=args.precision))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", backlog=256)


if __name__ == "__main__":
    main()
