"""What the sampler's precisions cost in quality: the shipped model's validation loss on tiny
shakespeare's last 10%, computed by the sampler's own step (`StepModel`) at each precision.

    python benchmarks/sample_precision.py

The validation text is read as parallel streams from a zero state, as `rnngen eval` reads it, one token
per step, so each figure is the loss of exactly the logits that sampling draws from. `--streams 1`
reads it as one sample, the case int8 is chosen for.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import rnngen  # noqa: F401  (quiets torch's NumPy warning)
import torch
import torch.nn.functional as F

from rnngen import checkpoint
from rnngen.data import read_text, split
from rnngen.model import StepModel


@torch.inference_mode()
def step_loss(step: StepModel, state: tuple, ids: torch.Tensor, streams: int) -> float:
    """Mean cross-entropy (nats per token) of `step`'s logits over `ids` read as `streams` streams."""
    span = (len(ids) - 1) // streams
    x, y = ids[: streams * span].view(streams, span), ids[1 : streams * span + 1].view(streams, span)
    hb, carry = step.new_state(*(s.expand(-1, x.size(0), -1) for s in state))
    total = 0.0
    for t in range(x.size(1)):
        logits = step.step(x[:, t].long(), hb, carry)
        total += F.cross_entropy(logits, y[:, t].long(), reduction="sum").item()
    return total / y.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpora/tinyshakespeare.txt")
    parser.add_argument("--streams", type=int, default=54, help="parallel streams (rnngen eval uses up to 64)")
    args = parser.parse_args()

    model, codec, _ = checkpoint.load_model("shakespeare")
    _, val = split(codec.encode_corpus(read_text(args.corpus), args.corpus), 0.1)
    zero = model.init_state(1)
    print(f"shipped model, {len(val):,} validation characters as {args.streams} stream(s)\n")
    print("| sampler precision | validation nats/char | difference from fp32 | seconds |")
    print("| --- | --- | --- | --- |")
    exact = None
    for precision in StepModel.PRECISIONS:
        t0 = time.perf_counter()
        loss = step_loss(StepModel(model.eval(), precision), zero, val, args.streams)
        exact = loss if exact is None else exact
        print(f"| {precision} | {loss:.5f} | {loss - exact:+.5f} | {time.perf_counter() - t0:.0f} |")


if __name__ == "__main__":
    main()
