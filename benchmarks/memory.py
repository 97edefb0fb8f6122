"""Peak memory of training on a large text corpus, and of sampling a long text.

    python benchmarks/memory.py            # a 200 MB corpus (tiny shakespeare repeated)
    python benchmarks/memory.py --mb 50

Runs rnngen in subprocesses and reads each one's peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_mb(args: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of `python -m rnngen ARGS` run alone in a fresh process."""
    code = ("import resource, subprocess, sys; "
            "r = subprocess.run([sys.executable, '-m', 'rnngen', *sys.argv[1:]], stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    rss_kb, rc = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"rnngen {' '.join(args)} failed: {out.stderr}")
    return int(rss_kb) / 1024, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in megabytes")
    parser.add_argument("--model", default="shakespeare", help="checkpoint to sample from")
    parser.add_argument("--lengths", default="10000,1000000", help="sample lengths to measure")
    parser.add_argument("--skip-train", action="store_true", help="measure sampling only")
    args = parser.parse_args()
    base = (ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "big.txt"
        if not args.skip_train:
            with open(corpus, "w", encoding="utf-8") as f:
                for _ in range(args.mb * 1_000_000 // len(base) + 1):
                    f.write(base)
        size = corpus.stat().st_size / 1e6 if corpus.exists() else 0
        tiny = ["--layers", "1", "--hidden", "64", "--batch-size", "8", "--seq-len", "32", "--max-steps", "2",
                "--eval-every", "1000", "--val-frac", "0.001", "-q"]
        small_corpus = Path(tmp) / "small.txt"
        small_corpus.write_text(base[:200_000], encoding="utf-8")
        print("| run | peak memory | |\n| --- | --- | --- |")
        if not args.skip_train:
            baseline, _ = peak_mb(["train", str(small_corpus), *tiny, "--out", str(Path(tmp) / "s.pt")])
            peak, secs = peak_mb(["train", str(corpus), *tiny, "--out", str(Path(tmp) / "b.pt")])
            print(f"| train, 0.2 MB corpus (baseline: Python, torch, model) | {baseline:,.0f} MB | |")
            print(f"| train, {size:,.0f} MB corpus | {peak:,.0f} MB | {(peak - baseline) / size:.2f} x the corpus "
                  f"above the baseline; {secs:.0f} s including reading and encoding |")
        for n in map(int, args.lengths.split(",")):
            mb, secs = peak_mb(["sample", args.model, "-n", str(n), "-s", "1"])
            print(f"| sample {args.model} -n {n:,} | {mb:,.0f} MB | {secs:.0f} s |")


if __name__ == "__main__":
    main()
