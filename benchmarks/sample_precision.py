"""What the sampler's precisions cost in quality: a model's validation loss computed by the
sampler's own step at each precision.

    python benchmarks/sample_precision.py          # shipped shakespeare, tiny shakespeare's last 10%
    python benchmarks/sample_precision.py bach     # shipped bach, the chorales it held out

The validation text is read as parallel streams from a zero state, as `rnngen eval` reads it, one token
per step, so each figure is the loss of exactly the logits that sampling draws from, with the step sampling
would use for that many rows: `--streams 1` reads it as one sample (int8 weights, bf16 activations),
more streams as a batch (int8 weights and activations).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import rnngen  # noqa: F401  (quiets torch's NumPy warning)
import torch
import torch.nn.functional as F

from rnngen import checkpoint
from rnngen.data import expand_sources, read_text, split
from rnngen.midi import load_midi_corpus
from rnngen.model import StepModel
from rnngen.sample import make_step

ROOT = Path(__file__).resolve().parent.parent


@torch.inference_mode()
def step_loss(step, state: tuple, ids: torch.Tensor, streams: int) -> float:
    """Mean cross-entropy (nats per token) of `step`'s logits over `ids` read as `streams` streams."""
    span = (len(ids) - 1) // streams
    x, y = ids[: streams * span].view(streams, span), ids[1 : streams * span + 1].view(streams, span)
    hb, carry = step.new_state(*(s.expand(-1, x.size(0), -1) for s in state))
    total = 0.0
    for t in range(x.size(1)):
        logits = step.step(x[:, t].long(), hb, carry)
        total += F.cross_entropy(logits, y[:, t].long(), reduction="sum").item()
    return total / y.numel()


def validation_ids(ckpt: dict, codec, corpus: str | None) -> torch.Tensor:
    """The held-out tokens the checkpoint was validated on: the last part of a text corpus, or for
    MIDI the same seeded choice of whole pieces as training made."""
    cfg = ckpt["train"]["config"]
    if codec.kind == "midi":  # the shipped model's sources are named from the repository root
        sources = [corpus] if corpus else [str(ROOT / s) for s in cfg["sources"]]
        return load_midi_corpus(expand_sources(sources), cfg["val_frac"], cfg["seed"], codec)[2]
    corpus = corpus or str(ROOT / "corpora" / "tinyshakespeare.txt")
    return split(codec.encode_corpus(read_text(corpus), corpus), cfg["val_frac"])[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="shakespeare")
    parser.add_argument("--corpus", help="text: the corpus whose last part is validation; MIDI: the files")
    parser.add_argument("--streams", type=int, default=54, help="parallel streams (rnngen eval uses up to 64)")
    args = parser.parse_args()

    model, codec, ckpt = checkpoint.load_model(args.checkpoint)
    val = validation_ids(ckpt, codec, args.corpus)
    zero = model.init_state(1)
    unit = "char" if codec.kind == "text" else "event"
    print(f"{args.checkpoint}: {len(val):,} validation tokens as {args.streams} stream(s)\n")
    print(f"| sampler precision | validation nats/{unit} | difference from fp32 | seconds |")
    print("| --- | --- | --- | --- |")
    exact = None
    for precision in StepModel.PRECISIONS:
        t0 = time.perf_counter()
        step = make_step(model.eval(), precision, args.streams, torch.device("cpu"))  # as sampling would
        loss = step_loss(step, zero, val, args.streams)
        exact = loss if exact is None else exact
        print(f"| {precision} | {loss:.5f} | {loss - exact:+.5f} | {time.perf_counter() - t0:.0f} |")


if __name__ == "__main__":
    main()
