"""Fit the planner's one constant, TOKENS_PER_PARAM (rnngen/planner.py), from measured budget runs.

    python benchmarks/planner_fit.py                     # benchmarks/data/planner_runs.csv

Each row of the data is one `rnngen train corpora/tinyshakespeare.txt --max-time T` run with a given
shape, on one kind of CPU, with its measured characters/s and best validation loss. Within each group of
runs (same CPU kind, same budget) the best run's shape saw some number of training characters per
parameter; every larger shape that lost saw fewer (a group that tried one shape says nothing). The constant is the geometric midpoint between the
fewest tokens per parameter that won and the most that a larger, losing shape had.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

from rnngen.planner import SHAPES, Shape

DATA = Path(__file__).resolve().parent / "data" / "planner_runs.csv"
VOCAB = 65  # tiny shakespeare


def params(layers: int, hidden: int) -> int:
    return Shape(layers, hidden, 0, 0, 0.0).params(VOCAB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DATA)
    args = parser.parse_args()
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    with args.data.open() as f:
        for row in csv.DictReader(f):
            groups[row["cpu"], row["budget_s"]].append(row)
    won, lost = [], []
    print("| CPU | budget | shape | tokens per parameter | validation | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (cpu, budget), rows in sorted(groups.items()):
        best = min(rows, key=lambda r: float(r["val_loss"]))
        compared = len({(r["layers"], r["hidden"]) for r in rows}) > 1  # one shape alone says nothing
        for r in sorted(rows, key=lambda r: params(int(r["layers"]), int(r["hidden"]))):
            p = params(int(r["layers"]), int(r["hidden"]))
            ratio = float(r["chars_per_s"]) * float(budget) / p if r["chars_per_s"] else math.nan
            mark = "best" if r is best else ""
            if not compared or math.isnan(ratio):
                pass
            elif r is best:
                won.append(ratio)
            elif p > params(int(best["layers"]), int(best["hidden"])):
                mark = "larger, worse"
                lost.append(ratio)
            print(f"| {cpu} | {budget} s | {r['layers']} x {r['hidden']} | {ratio:.2f} | {r['val_loss']} | {mark} |")
    low, high = min(won), max(lost)
    print(f"\nfewest tokens per parameter that won: {low:.2f}; most that a larger shape lost with: {high:.2f}")
    if high >= low:
        print("the groups disagree: no single threshold separates them")
    print(f"TOKENS_PER_PARAM = {math.sqrt(low * high):.2f} (geometric midpoint)")
    print("candidate shapes:", ", ".join(f"{s.name} ({s.params(VOCAB) / 1e6:.2f}M)" for s in SHAPES))


if __name__ == "__main__":
    main()
