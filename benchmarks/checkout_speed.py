"""The speed of the rnngen command itself in this checkout against another checkout of the project
(say, the commit before a refactor), measured in turns so that a busy moment hits both alike.

    git worktree add --detach ../before HEAD~1
    python benchmarks/checkout_speed.py ../before --rounds 5

Each round runs, under each checkout: a training run (the trainer's own characters/s over its steps,
evaluation left out), one sample of 2,000 characters and a batch of 256 x 500 (wall time of the whole
command, start-up included). Each figure is the best of its rounds. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CORPUS = HERE / "corpora" / "tinyshakespeare.txt"


def rnngen(checkout: Path, *args: str) -> float:
    """Seconds to run `rnngen ARGS` from `checkout`'s package."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rnngen", *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def train_rate(checkout: Path, folder: Path, steps: int) -> float:
    log = folder / "log.jsonl"
    log.unlink(missing_ok=True)
    rnngen(checkout, "train", str(CORPUS), "--max-steps", str(steps), "--eval-every", str(steps), "--out",
           str(folder / "m.pt"), "--force", "--log", str(log), "-q")
    return json.loads(log.read_text().splitlines()[-1])["tokens_per_s"]


def measures(checkout: Path, folder: Path, steps: int) -> dict[str, float]:
    return {
        f"train, {steps} steps (chars/s)": train_rate(checkout, folder, steps),
        "sample -n 2000 (chars/s)": 2000 / rnngen(checkout, "sample", "-n", "2000", "-s", "1"),
        "sample -b 256 -n 500 (chars/s)": 256 * 500 / rnngen(checkout, "sample", "-b", "256", "-n", "500", "-s", "1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="another checkout of rnngen")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (default model and batch)")
    args = parser.parse_args()
    checkouts = {"this": HERE, "other": args.other.resolve()}
    best: dict[str, dict[str, float]] = {name: {} for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, checkout in checkouts.items():
                for what, rate in measures(checkout, Path(tmp), args.steps).items():
                    best[name][what] = max(best[name].get(what, 0.0), rate)
    print(f"best of {args.rounds} interleaved rounds; other = {checkouts['other']}\n")
    print("| measure | this checkout | other checkout | this / other |")
    print("| --- | --- | --- | --- |")
    for what in best["this"]:
        this, other = best["this"][what], best["other"][what]
        print(f"| {what} | {this:,.0f} | {other:,.0f} | {this / other:.3f} |")


if __name__ == "__main__":
    main()
