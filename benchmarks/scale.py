"""Corpora at scale: the text token cache, bounded validation and the MIDI cache, measured.

    python benchmarks/scale.py                       # 1 GB of text, 10,000 MIDI files
    python benchmarks/scale.py --gb 1,4              # memory must not grow with the corpus
    python benchmarks/scale.py --skip-midi --baseline   # also the in-memory path (slow: ~1 min/GB)
    python benchmarks/scale.py --skip-text --skip-midi --eval   # validation cost of a 2 x 512 LSTM
    python benchmarks/scale.py --skip-text --skip-midi --train --gb 1,4   # rnngen train end to end

Every measurement runs in a fresh subprocess that reports its own time and peak resident memory
(VmHWM); big files live in a temporary folder that is deleted at the end. Each part is a small
function, so that more rows (e.g. end-to-end `rnngen train`) can be added.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "corpora" / "tinyshakespeare.txt"
CHORALES = ROOT / "corpora" / "bach-chorales"
# A non-ASCII line after every copy: accents, curly quotes, CJK, Greek and an emoji beyond the BMP.
EXTRA = "Ça, naïve café — “quotes” 日本語の歌 🎵 Ελληνικά. Straße.\n"

MEMORY = """
import json, resource, sys, time
def memory():
    out = {}
    try:
        for line in open('/proc/self/status'):
            key, _, value = line.partition(':')
            if key in ('VmHWM', 'RssAnon', 'RssFile'):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        out['VmHWM'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out
def report(**values):
    print(json.dumps({**values, **memory()}))
"""


def child(code: str, *args: str) -> dict:
    """Run `code` (which ends by calling report(...)) in a fresh Python; its JSON line back."""
    out = subprocess.run([sys.executable, "-c", MEMORY + code, *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"a measurement failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(what: str, seconds: float | None, peak_mb: float | None, note: str = "") -> None:
    secs = f"{seconds:,.2f} s" if seconds is not None else ""
    peak = f"{peak_mb:,.0f} MB" if peak_mb is not None else ""
    print(f"| {what} | {secs} | {peak} | {note} |", flush=True)


# --------------------------------------------------------------------------------------------------
# text


def make_text_corpus(path: Path, size: int) -> int:
    """tiny shakespeare plus a non-ASCII line, repeated to `size` bytes; returns the size."""
    block = SHAKESPEARE.read_bytes() + EXTRA.encode()
    with open(path, "wb") as f:
        for _ in range(size // len(block) + 1):
            f.write(block)
    return path.stat().st_size


def text_open(corpus: Path, cache: Path, read: bool = False) -> dict:
    """open_text_corpus in a fresh process: seconds, tokens, and memory after opening (and after
    reading every token once, when `read`)."""
    code = """
from rnngen.corpus_cache import open_text_corpus
t0 = time.perf_counter()
codec, ids, names = open_text_corpus([sys.argv[1]], cache_dir=sys.argv[2])
seconds = time.perf_counter() - t0
opened = memory()
if sys.argv[3] == '1':  # touch every page, 16 MiB at a time (max keeps the dtype: no big temporaries)
    for i in range(0, len(ids), 1 << 24):
        ids[i : i + (1 << 24)].max()
report(seconds=seconds, tokens=len(ids), vocab=codec.vocab_size, opened=opened)
"""
    return child(code, corpus, cache, "1" if read else "0")


def text_in_memory(corpus: Path) -> dict:
    """Today's path: load_text, TextCodec.fit, encode_corpus."""
    code = """
from rnngen.codec import TextCodec
from rnngen.data import load_text
t0 = time.perf_counter()
text, _ = load_text([sys.argv[1]])
ids = TextCodec.fit(text).encode_corpus(text)
report(seconds=time.perf_counter() - t0, tokens=len(ids))
"""
    return child(code, corpus)


def python_and_torch() -> None:
    """The floor every other row stands on: a Python that has imported torch and rnngen."""
    got = child("import torch, rnngen.corpus_cache, rnngen.midi.cache\nreport(seconds=0.0)")
    row("baseline: Python with torch and rnngen imported", None, got["VmHWM"])


def bench_text(tmp: Path, gb: float, baseline: bool) -> None:
    corpus, cache = tmp / f"corpus-{gb:g}gb.txt", tmp / "cache"
    size = make_text_corpus(corpus, int(gb * 1e9))
    label = f"{size / 1e9:.2f} GB text"
    shutil.rmtree(cache, ignore_errors=True)
    subprocess.run(["sync"])
    built = text_open(corpus, cache)
    row(f"{label}: build cache (decode, vocabulary, encode, hash)", built["seconds"], built["VmHWM"],
        f"{built['tokens']:,} tokens, {built['vocab']} symbols, {size / built['seconds'] / 1e6:,.0f} MB/s")
    again = text_open(corpus, cache, read=True)
    row(f"{label}: reopen cache (stat + SHA-256 + map)", again["seconds"], again["opened"]["VmHWM"],
        f"anonymous memory {again['opened']['RssAnon']:,.0f} MB after opening")
    row(f"{label}: reopen, then read every token", None, again["VmHWM"],
        f"anonymous {again['RssAnon']:,.0f} MB; file pages {again['RssFile']:,.0f} MB (page cache, reclaimable)")
    if baseline:
        mem = text_in_memory(corpus)
        row(f"{label}: in memory (load_text + fit + encode_corpus)", mem["seconds"], mem["VmHWM"])
    corpus.unlink()
    shutil.rmtree(cache, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# rnngen train, end to end


def train_until(corpus: Path, cache: Path, out: Path, steps_after: int = 3) -> dict:
    """`rnngen train CORPUS` with the 10-minute defaults: seconds from start to its first step, then
    peak memory (VmHWM) after `steps_after` more steps, when it is stopped with SIGINT."""
    cmd = [sys.executable, "-m", "rnngen", "train", str(corpus), "--max-time", "10m", "--eval-every", "1000000",
           "--out", str(out), "--force", "--cache-dir", str(cache)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first, step = None, 0
    for line in proc.stderr:
        if line.startswith("step "):
            first = first or time.perf_counter() - t0
            step = int(line.split()[1])
            if step > steps_after:
                break
    peak = vm_hwm(proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.stderr.read()
    proc.wait(timeout=300)
    return {"first_step": first, "VmHWM": peak, "steps": step}


def vm_hwm(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def train_rate(corpus: Path, cache: Path, out: Path, steps: int) -> float:
    """The trainer's characters/s over `steps` steps of the 10-minute defaults (validation left out)."""
    log = out.with_suffix(".jsonl")
    log.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "rnngen", "train", str(corpus), "--max-steps", str(steps), "--layers", "2",
                    "--hidden", "512", "--batch-size", "64", "--seq-len", "128", "--eval-every", "1000000",
                    "--out", str(out), "--force", "--cache-dir", str(cache), "--log", str(log), "-q"],
                   cwd=ROOT, check=True)
    return json.loads(log.read_text().splitlines()[-1])["tokens_per_s"]


def bench_train(tmp: Path, gbs: list[float], rate_steps: int) -> None:
    cache, out = tmp / "train-cache", tmp / "m.pt"
    small = train_until(SHAKESPEARE, cache, out)  # the yardstick: the same run on a small corpus
    row(f"rnngen train, tiny shakespeare (1.1 MB): to the first step; peak memory after {small['steps']} steps",
        small["first_step"], small["VmHWM"])
    for gb in gbs:
        corpus = tmp / f"train-{gb:g}gb.txt"
        size = make_text_corpus(corpus, int(gb * 1e9))
        label = f"rnngen train, {size / 1e9:.2f} GB"
        for run in ("first run", "second run (cached)"):
            got = train_until(corpus, cache, out)
            row(f"{label}, {run}: to the first step; peak memory after {got['steps']} steps", got["first_step"],
                got["VmHWM"])
        if rate_steps:
            big, small = [], []
            for _ in range(2):  # interleaved: a busy moment hits both alike
                big.append(train_rate(corpus, cache, out, rate_steps))
                small.append(train_rate(SHAKESPEARE, cache, out, rate_steps))
            row(f"{label}: training speed against tiny shakespeare, {rate_steps} steps, best of 2", None, None,
                f"{max(big):,.0f} against {max(small):,.0f} chars/s: {max(big) / max(small):.3f}")
        corpus.unlink()
    shutil.rmtree(cache, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# validation


def eval_cost(tokens: int, threads: int | None = None) -> dict:
    """Seconds for one evaluation of `tokens` tokens by the default 2 x 512 LSTM (random weights:
    the cost does not depend on them), as `evaluate` runs it in training (seq_len 128)."""
    code = """
import torch
from rnngen.config import ModelConfig
from rnngen.data import val_sample
from rnngen.model import RNNModel
from rnngen.trainer import evaluate
torch.manual_seed(0)
model = RNNModel(ModelConfig(vocab_size=65))
ids = torch.randint(0, 65, (int(sys.argv[1]) * 4,), dtype=torch.uint8)
sample = val_sample(ids, cap=int(sys.argv[1]), seed=0)
t0 = time.perf_counter()
evaluate(model, sample, torch.device('cpu'), seq_len=128)
report(seconds=time.perf_counter() - t0, tokens=sample[:, 1:].numel())
"""
    return child(code, tokens)


def bench_eval(cap: int) -> None:
    got = eval_cost(cap)
    per_s = got["tokens"] / got["seconds"]
    ten = 10 * got["seconds"]
    row(f"validation sample of {got['tokens']:,} tokens, 2 x 512 LSTM", got["seconds"], got["VmHWM"],
        f"{per_s:,.0f} tokens/s; 10 evaluations = {ten:,.0f} s = {ten / 6:.1f}% of a 10-minute run")


# --------------------------------------------------------------------------------------------------
# MIDI


def make_midi_folder(folder: Path, count: int) -> list[Path]:
    """`count` files: the chorales copied round-robin under new names (same bytes, same cost)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(CHORALES.glob("*.mid"))
    files = []
    for i in range(count):
        src = sources[i % len(sources)]
        dst = folder / f"{i:06d}-{src.name}"
        shutil.copyfile(src, dst)
        files.append(dst)
    return files


def midi_load(folder: Path, cache: Path | None, workers: int = 0) -> dict:
    """Serial `read_pieces` (cache None) or `read_pieces_cached`, in a fresh process."""
    code = """
from pathlib import Path
from rnngen.data import expand_sources
files = expand_sources([sys.argv[1]])
t0 = time.perf_counter()
if sys.argv[2] == '-':
    from rnngen.midi import read_pieces
    pieces, names = read_pieces(files)
else:
    from rnngen.midi.cache import read_pieces_cached
    pieces, names = read_pieces_cached(files, cache_dir=sys.argv[2], workers=int(sys.argv[3]) or None)
report(seconds=time.perf_counter() - t0, pieces=len(pieces), notes=sum(len(p.notes) for p in pieces))
"""
    return child(code, folder, "-" if cache is None else cache, workers)


def midi_corpus_load(folder: Path, cache: Path) -> dict:
    """What `rnngen train FOLDER` does before its first step with the MIDI, in a fresh process."""
    code = """
from rnngen.data import expand_sources
from rnngen.midi.corpus import load_midi_corpus
files = expand_sources([sys.argv[1]])
t0 = time.perf_counter()
codec, train, val, names, *_ = load_midi_corpus(files, 0.1, 1337, cache_dir=sys.argv[2])
report(seconds=time.perf_counter() - t0, tokens=len(train) + len(val))
"""
    return child(code, folder, cache)


def bench_midi(tmp: Path, count: int) -> None:
    folder, cache = tmp / "midi", tmp / "midi-cache"
    make_midi_folder(folder, count)
    serial = midi_load(folder, None)
    row(f"{count:,} MIDI files: serial read_pieces (mido, one core)", serial["seconds"], serial["VmHWM"],
        f"{serial['pieces']:,} pieces, {serial['notes']:,} notes")
    first = midi_load(folder, cache)
    row(f"{count:,} MIDI files: first load (process pool, then cached)", first["seconds"], first["VmHWM"],
        f"{serial['seconds'] / first['seconds']:.2f}x faster than serial")
    second = midi_load(folder, cache)
    row(f"{count:,} MIDI files: second load (from the cache)", second["seconds"], second["VmHWM"],
        f"{serial['seconds'] / second['seconds']:.1f}x faster than serial")
    assert first["notes"] == second["notes"] == serial["notes"]
    for when in ("first", "second"):  # training reads parts: its own cache entry, parsed the first time
        ids = midi_corpus_load(folder, cache)
        row(f"{count:,} MIDI files: training ids, {when} run (read with parts, split, encoded)", ids["seconds"],
            ids["VmHWM"], f"{ids['tokens']:,} events")
    shutil.rmtree(folder)
    shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", default="1", help="text corpus sizes in GB, comma-separated (e.g. 1,4)")
    parser.add_argument("--midi-files", type=int, default=10_000)
    parser.add_argument("--baseline", action="store_true", help="also time the in-memory text path")
    parser.add_argument("--eval", action="store_true", help="time one capped validation of a 2 x 512 LSTM")
    parser.add_argument("--cap", type=int, default=None, help="validation cap (default: data.VAL_CAP)")
    parser.add_argument("--train", action="store_true", help="also run rnngen train end to end on each size")
    parser.add_argument("--rate-steps", type=int, default=20, help="with --train: steps to compare training speed")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-midi", action="store_true")
    parser.add_argument("--tmp", default=None, help="folder for the temporary files (default: the system's)")
    args = parser.parse_args()
    print("| what | time | peak memory | |\n| --- | --- | --- | --- |", flush=True)
    t0 = time.perf_counter()
    python_and_torch()
    with tempfile.TemporaryDirectory(prefix="rnngen-scale-", dir=args.tmp) as tmp:
        if not args.skip_text:
            for gb in [float(g) for g in args.gb.split(",")]:
                bench_text(Path(tmp), gb, args.baseline)
        if args.train:
            bench_train(Path(tmp), [float(g) for g in args.gb.split(",")], args.rate_steps)
        if args.eval:
            from rnngen.data import VAL_CAP

            bench_eval(args.cap or VAL_CAP)
        if not args.skip_midi:
            bench_midi(Path(tmp), args.midi_files)
    print(f"\n({time.perf_counter() - t0:,.0f} s in all)")


if __name__ == "__main__":
    main()
