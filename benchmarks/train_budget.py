"""Quality per CPU-minute: validation loss after a wall-clock budget, with the settings rnngen plans
for that budget, this machine and the corpus.

    python benchmarks/train_budget.py                              # 73 s and 10 minutes, tiny shakespeare
    python benchmarks/train_budget.py --budgets 73s --runs 3       # the spread of three runs
    python benchmarks/train_budget.py --budgets 73s --caps avx2    # as on a CPU with AVX2 only (fp32)
    python benchmarks/train_budget.py --budgets 10m --head 300000  # the first 300 KB as the corpus
    python benchmarks/train_budget.py --budgets 2m --corpus corpora/bach-chorales --files 100
    python benchmarks/train_budget.py --budgets 73s -- --hidden 256   # extra options for rnngen train

Each run is `rnngen train CORPUS --max-time T` in a subprocess, the command a user types, into a
temporary folder (its own cache folder too, so every run calibrates afresh), and reads the shape, steps,
speed, best validation loss and where in the run the best came from the checkpoints it wrote. Text is
validated on the corpus's last 10%, MIDI on whole held-out files. Run it on a quiet machine: a budget is
wall-clock time. `--caps avx2` caps oneDNN, MKL and ATen at AVX2, which is how an AVX2-only CPU is
reproduced on any x86 machine; rnngen then trains in fp32. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import rnngen  # noqa: F401  (quiets torch's NumPy warning)
from rnngen import checkpoint
from rnngen.config import parse_duration

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
# For scale, nats/char on tiny shakespeare's last 10%: nanoGPT's documented CPU configuration (4 layers,
# 4 heads, 128 wide, block 64, batch 12, 2,000 iterations; fp32 on a CPU) on a 2-core AVX512-BF16 CPU of
# this kind, in about 71 s; under the AVX2 caps its fp32 matrix work is slower, so it does no better there.
NANOGPT_73S = 1.874


def cpu_kind(caps: str | None) -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if caps == "avx2":
        return "AVX2 (caps)"
    return "AVX512-BF16" if "avx512_bf16" in flags else "AVX2" if " avx2" in flags else "other"


def corpus_for(args, work: Path) -> Path:
    """The corpus as given, its first --head bytes, or its first --files MIDI files."""
    if args.head:
        path = work / f"head-{args.head}.txt"
        path.write_bytes(args.corpus.read_bytes()[: args.head])
        return path
    if args.files:
        folder = work / f"first-{args.files}"
        folder.mkdir()
        for f in sorted(p for p in args.corpus.rglob("*") if p.suffix.lower() in (".mid", ".midi"))[: args.files]:
            shutil.copy(f, folder / f.name)
        return folder
    return args.corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="73s,10m", help="comma-separated --max-time values")
    parser.add_argument("--runs", type=int, default=1, help="runs of each budget")
    parser.add_argument("--caps", choices=["avx2"], help="cap torch's CPU kernels as on an AVX2-only CPU")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--head", type=int, help="train on the corpus's first N bytes")
    parser.add_argument("--files", type=int, help="train on the corpus folder's first N MIDI files")
    parser.add_argument("extra", nargs="*", help="options passed on to rnngen train (after --)")
    args = parser.parse_args()
    env = {**os.environ, **(AVX2_CAPS if args.caps else {})}

    print(f"CPU: {cpu_kind(args.caps)}; corpus: {args.corpus.name}"
          + (f", first {args.head:,} bytes" if args.head else "") + (f", first {args.files} files" if args.files else ""))
    print("| budget | run | shape | precision | steps | tokens/s | best validation (nats) | best at | nanoGPT, 73 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = corpus_for(args, work)
        for budget in args.budgets.split(","):
            for run in range(1, args.runs + 1):
                out = work / f"budget-{budget}-{run}.pt"
                command = [sys.executable, "-m", "rnngen", "train", str(corpus), "--max-time", budget,
                           "--out", str(out), "-q", "--cache-dir", str(work / f"cache-{budget}-{run}"), *args.extra]
                subprocess.run(command, check=True, env=env)
                last = checkpoint.load(checkpoint.last_path(out))
                train, model = last["train"], last["model"]
                history = train["val_history"]
                best_step, best = min(history, key=lambda p: p[1])
                rate = train["tokens"] / train["elapsed"]
                nano = f"{NANOGPT_73S}" if corpus == CORPUS and 60 <= parse_duration(budget) <= 80 else ""
                print(f"| {budget} | {run} | {model['layers']} x {model['hidden']} | {train['precision']} | "
                      f"{train['step']:,} | {rate:,.0f} | **{best:.4f}** | step {best_step:,.0f} of {train['step']:,} "
                      f"({best_step / train['step']:.0%}) | {nano} |", flush=True)


if __name__ == "__main__":
    main()
