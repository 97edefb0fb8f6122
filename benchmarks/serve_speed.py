"""rnngen serve against rnngen sample, measured in one run, interleaved, on the shipped model.

    python benchmarks/serve_speed.py                            # the standard library's server
    python benchmarks/serve_speed.py --stacks stdlib,starlette  # and starlette on uvicorn (pip install starlette uvicorn)
    python benchmarks/serve_speed.py --memory 10000             # also: the server's memory over 10,000 requests

Each round runs, one after another: `rnngen sample -b 64 -n 500` and `-b 1 -n 5000`, each also with
-n 1, then for each stack 64 clients at once each streaming 500 characters, and one client alone
streaming 5000. The command's characters/s are its fastest full run less its fastest -n 1 run (so that
start-up and loading do not count against it); the server's are its best round's, from the first
request sent to the last byte received. The time to the first character (from sending the request to
the first byte of text) is over every client of every round. The first clients' texts are checked against
`rnngen sample -s SEED` alone. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RNNGEN = [sys.executable, "-m", "rnngen"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(stack: str, model: str, port: int) -> subprocess.Popen:
    if stack == "stdlib":
        command = [*RNNGEN, "serve", model, "--port", str(port), "-q"]
    else:
        command = [sys.executable, str(HERE / "serve_starlette.py"), model, "--port", str(port)]
    proc = subprocess.Popen(command)
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the {stack} server did not start")


def cli_seconds(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*RNNGEN, "sample", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


class CliRate:
    """Characters/s of `rnngen sample -b BATCH -n LENGTH` less its start-up: the fastest run of the
    command less the fastest run of the same with -n 1, over the rounds so far."""

    def __init__(self, model: str, batch: int, length: int):
        self.common, self.batch, self.length = [model, "-b", str(batch), "-s", "1", "-q"], batch, length
        self.full, self.start = [], []

    def measure(self) -> None:
        self.full.append(cli_seconds([*self.common, "-n", str(self.length)]))
        self.start.append(cli_seconds([*self.common, "-n", "1"]))

    def rate(self) -> float:
        return self.batch * (self.length - 1) / (min(self.full) - min(self.start))


def stream(port: int, body: dict, out: dict, go: threading.Barrier | None = None) -> None:
    """One client: send, then read the events as they come; times in `out`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    if go is not None:
        go.wait()
    out["sent"] = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps({**body, "stream": True}))
    response = conn.getresponse()
    chunks = []
    while True:
        data = response.read1(65536)
        if not data:
            break
        if not chunks:
            out["first"] = time.perf_counter()
        chunks.append(data)
    out["end"] = time.perf_counter()
    events = [e.removeprefix("data: ") for e in b"".join(chunks).decode().split("\n\n") if e]
    out["text"] = "".join(json.loads(e)["choices"][0]["text"] for e in events if e != "[DONE]")
    conn.close()


def clients(port: int, model: str, count: int, length: int) -> tuple[float, list[float], list[str]]:
    """`count` clients at once, seeds 0.. count-1: (total characters/s, times to first text, texts)."""
    outs = [{} for _ in range(count)]
    go = threading.Barrier(count)
    threads = [threading.Thread(target=stream, args=(port, {"model": model, "max_tokens": length, "seed": i}, outs[i], go))
               for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chars = sum(len(o["text"]) for o in outs)
    assert chars == count * length, f"{chars} characters came back, not {count * length}"
    span = max(o["end"] for o in outs) - min(o["sent"] for o in outs)
    return chars / span, [o["first"] - o["sent"] for o in outs], [o["text"] for o in outs]


def alone(model: str, seed: int, length: int) -> str:
    result = subprocess.run([*RNNGEN, "sample", model, "-n", str(length), "-s", str(seed), "--format", "jsonl"],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["text"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(port: int, pid: int, model: str, total: int, concurrency: int = 16) -> list[tuple[int, float]]:
    """The server's resident memory after every tenth of `total` short requests (20 characters each,
    `concurrency` clients on keep-alive connections)."""
    done, lock, marks = [0], threading.Lock(), [(0, rss_mb(pid))]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if done[0] >= total:
                    return
                done[0] += 1
                n = done[0]
            conn.request("POST", "/v1/completions", json.dumps({"model": model, "max_tokens": 20, "seed": n}))
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
            if n % (total // 10) == 0:
                marks.append((n, rss_mb(pid)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stacks", default="stdlib", help="comma-separated: stdlib, starlette")
    parser.add_argument("--check", type=int, default=8, help="clients whose text is checked against rnngen sample")
    parser.add_argument("--memory", type=int, default=0, help="also send this many requests and watch memory")
    args = parser.parse_args()
    stacks = args.stacks.split(",")
    servers = {}
    for stack in stacks:
        port = free_port()
        servers[stack] = (start_server(stack, args.model, port), port)
    rates: dict[str, float] = {}
    firsts: dict[str, list[float]] = {s: [] for s in stacks}
    texts: dict[str, list[str]] = {}
    best = lambda key, value: rates.__setitem__(key, max(rates.get(key, 0.0), value))  # noqa: E731
    try:
        cli = {"sample -b 64 -n 500": CliRate(args.model, 64, 500), "sample -n 5000": CliRate(args.model, 1, 5000)}
        for round_ in range(args.rounds):
            for key, command in cli.items():
                command.measure()
                rates[key] = command.rate()
            for stack, (_, port) in servers.items():
                rate, first, texts[stack] = clients(port, args.model, 64, 500)
                best(f"{stack}: 64 clients x 500", rate)
                firsts[stack] += first
                best(f"{stack}: 1 client x 5000", clients(port, args.model, 1, 5000)[0])
            print(f"round {round_ + 1} done", file=sys.stderr)
        report(rates, firsts, stacks)
        for stack in stacks:
            same = sum(texts[stack][i] == alone(args.model, i, 500) for i in range(args.check))
            print(f"\n{stack}: {same} of {args.check} clients' texts are rnngen sample -s SEED -n 500 exactly")
        if args.memory:
            for stack, (proc, port) in servers.items():
                marks = memory(port, proc.pid, args.model, args.memory)
                print(f"\n{stack}: resident memory (MB) after N requests: "
                      + ", ".join(f"{n:,}: {mb:.0f}" for n, mb in marks))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()


def report(rates: dict[str, float], firsts: dict[str, list[float]], stacks: list[str]) -> None:
    print("| measure | characters/s | against rnngen sample in this run |")
    print("| --- | --- | --- |")
    for key, rate in rates.items():
        base = rates["sample -b 64 -n 500"] if "64" in key else rates["sample -n 5000"]
        print(f"| {key} | {rate:,.0f} | {rate / base:.2f} |")
    print("\n| stack | time to first character, median | 99th percentile | clients |")
    print("| --- | --- | --- | --- |")
    for stack in stacks:
        ms = sorted(1000 * t for t in firsts[stack])
        p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
        print(f"| {stack} | {statistics.median(ms):.0f} ms | {p99:.0f} ms | {len(ms)} |")


if __name__ == "__main__":
    main()
