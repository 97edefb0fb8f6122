"""The HTTP front of `rnngen serve`, on the standard library's ThreadingHTTPServer: a thread per
connection that reads a request, hands it to rnngen/serve_api.py and writes what comes back.

The standard library was measured against starlette on uvicorn with the same loop behind both
(benchmarks/serve_speed.py, benchmarks/RESULTS.md): the sampling loop, not the HTTP stack, sets
the pace, so the server needs no package beyond rnngen's own.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from rnngen import serve_api, serve_midi
from rnngen.errors import first_line
from rnngen.serve_api import ApiError, Limits, Served

ROUTES_GET = ("/", "/v1/models")
ROUTES_POST = ("/v1/completions", "/v1/midi")


class Server(ThreadingHTTPServer):
    daemon_threads = True  # an idle keep-alive connection must not hold the process at exit
    allow_reuse_address = True
    request_queue_size = 128  # many clients connecting at once

    def __init__(self, address: tuple[str, int], models: dict[str, Served], limits: Limits):
        super().__init__(address, Handler)
        self.models, self.limits = models, limits
        self.page = resources.files("rnngen").joinpath("serve_page.html").read_bytes()
        self.busy = 0  # requests being answered
        self.idle = threading.Condition()

    def handle_error(self, request, client_address) -> None:
        """One line on stderr, not the default traceback; a client that went away is not news."""
        kind, error = sys.exc_info()[:2]
        if not isinstance(error, OSError):
            print(f"rnngen serve: {kind.__name__}: {first_line(error)}", file=sys.stderr, flush=True)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered (after the loops have ended their jobs)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.busy == 0, timeout)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rnngen"
    timeout = 60  # seconds a connection may sit idle or stall before its thread gives up on it
    # Headers and body, and a stream's events, are separate small writes: with Nagle's algorithm each
    # would wait for the client's delayed ACK of the one before (up to 40 ms on Linux).
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # no access log: stderr is for the server's own messages

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route) -> None:
        with self.server.idle:
            self.server.busy += 1
        try:
            route(self.path.split("?", 1)[0])
        except ApiError as e:
            self._send(e.status, "application/json", json.dumps(e.body()).encode())
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug: the client hears of it in one line, the server goes on
            print(f"rnngen serve: {self.command} {self.path}: {type(e).__name__}: {first_line(e)}", file=sys.stderr,
                  flush=True)
            self.close_connection = True
            error = ApiError(500, f"the server failed: {first_line(e)}", kind="server_error")
            self._send(500, "application/json", json.dumps(error.body()).encode())
        finally:
            with self.server.idle:
                self.server.busy -= 1
                self.server.idle.notify_all()

    def _get(self, path: str) -> None:
        if path == "/":
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/v1/models":
            body = {**serve_api.models_list(self.server.models), "features": serve_midi.features()}
            self._send(200, "application/json", json.dumps(body).encode())
        else:
            raise self._unknown(path, ROUTES_GET)

    def _post(self, path: str) -> None:
        if path not in ROUTES_POST:
            raise self._unknown(path, ROUTES_POST)
        body = serve_api.parse_body(self._body())
        models, limits = self.server.models, self.server.limits
        if path == "/v1/midi":
            kind, data, headers = serve_midi.piece(body, models, limits)
            self._send(200, kind, data, headers)
            return
        completion = serve_api.start_completion(body, models, limits)
        if not completion.stream:
            answer = serve_api.whole(completion, alive=self._client_there)
            if answer is None:  # the client went away
                self.close_connection = True
                return
            self._send(200, "application/json", json.dumps(answer, ensure_ascii=False).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream's end is the connection's
        self.end_headers()
        self.close_connection = True
        try:
            for event in serve_api.events(completion):
                self.wfile.write(event)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            completion.job.cancelled = True  # its rows leave at the next step

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411, "send the JSON body with a Content-Length header")
        most = self.server.limits.max_prompt * 4 + 65536
        if int(length) > most:
            self.close_connection = True
            raise ApiError(413, f"the body is {int(length):,} bytes; this server takes at most {most:,}")
        return self.rfile.read(int(length))

    def _client_there(self) -> bool:
        """False once the client has closed its end (what it sent was read, so EOF means gone)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return not readable or self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def _send(self, status: int, kind: str, data: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _unknown(self, path: str, routes: tuple[str, ...]) -> ApiError:
        return ApiError(404, f"nothing at {self.command} {path}; try {', '.join(routes)}", kind="not_found")
