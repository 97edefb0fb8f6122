"""`rnngen serve`: load the models, start a sampling loop for each (rnngen/serve_loop.py) and the HTTP
server in front of them (rnngen/serve_http.py), and serve until SIGINT or SIGTERM.

On a signal the server stops accepting connections, every request in flight is ended at the next step
(a non-streamed one gets a 503, a stream an error event and [DONE]), and the command exits 130 or 143
as the other commands do.

The step: a server's batch changes size at every join and leave, so it resolves the precision and
builds the step once for `--max-batch` rows, as `rnngen sample -b MAX_BATCH` would, and uses it for
every batch. On CPUs without fast bf16 (and on GPUs) that is the fp32 `StepModel`, whose answers are
those of `rnngen sample`; on CPUs with AMX or AVX512-BF16, `auto` takes the int8 batch step, faster
for many rows, whose rounding differs from the one-sample step's, so there `--precision fp32` is the
one that reproduces `rnngen sample` exactly.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import torch

from rnngen import checkpoint as checkpoint_io
from rnngen.config import ServeConfig
from rnngen.device import resolve_device
from rnngen.errors import RnngenError
from rnngen.sample import make_step, pad_state, pad_tags, prime_state, step_precision, step_width
from rnngen.serve_api import Limits, Served
from rnngen.serve_http import Server
from rnngen.serve_loop import BatchLoop

SHIPPED = ("shakespeare", "bach")
SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def load(cfg: ServeConfig) -> dict[str, Served]:
    """Each model loaded with its step built and warmed, and its loop started, by name."""
    device = resolve_device(cfg.device)
    served: dict[str, Served] = {}
    for source in cfg.models or SHIPPED:
        name = Path(source).stem  # a shipped name is its own stem
        if name in served:
            raise RnngenError(f"two models would be called {name!r}; rename one of the files")
        model, codec, ckpt = checkpoint_io.load_model(source)
        model.to(device)
        step = make_step(model, step_precision(cfg.precision, device, model, cfg.max_batch), cfg.max_batch, device)
        _warm(model, step, device)
        loop = BatchLoop(model, step, device, cfg.max_batch).start()
        served[name] = Served(name, codec, loop, int(time.time()), ckpt.get("train", {}).get("tag_tokens"))
    return served


@torch.inference_mode()
def _warm(model, step, device: torch.device) -> None:
    """One prime and a step at one and at a padded width, so that the first request does not pay
    for the kernels' first calls."""
    for rows in (1, 2):
        tags = torch.zeros(rows, dtype=torch.long, device=device) if model.cfg.tags else None
        _, state = prime_state(model, step, [0], rows, device, tags)
        width = step_width(rows)
        hb, carry = pad_state(step, state, width) if width > rows else state
        by_tag = () if tags is None else (pad_tags(tags, width),)
        step.step(torch.zeros(width, dtype=torch.long, device=device), hb, carry, *by_tag)


def run(cfg: ServeConfig) -> int:
    """Serve until a signal; the exit code (130 for SIGINT, 143 for SIGTERM)."""
    served = load(cfg)
    limits = Limits(cfg.max_tokens, cfg.max_n, cfg.max_prompt, cfg.max_batch)
    try:
        server = Server((cfg.host, cfg.port), served, limits)
    except OSError as e:
        _stop_loops(served)
        raise RnngenError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    got: list[int] = []
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        got.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    thread = threading.Thread(target=server.serve_forever, name="rnngen-http", daemon=True)
    thread.start()
    if not cfg.quiet:
        host, port = server.server_address[:2]
        kinds = ", ".join(f"{s.name} ({s.kind})" for s in served.values())
        print(f"serving {kinds} at http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()  # no new requests
        thread.join()
        _stop_loops(served)  # requests in flight are ended and answered
        server.wait_idle(5.0)
        server.server_close()
        # The models' tensors are freed here, on the main thread: a daemon thread (a keep-alive connection's)
        # that dropped the last reference during interpreter exit would abort the process.
        server.models = {}
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not cfg.quiet:
        print("stopped", file=sys.stderr, flush=True)
    return SIGNALS[got[0]]


def _stop_loops(served: dict[str, Served]) -> None:
    for s in served.values():
        s.loop.stop()
