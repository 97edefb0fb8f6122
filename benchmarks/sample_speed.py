"""Sampling throughput: rnngen's batched sampler against the one-sample loop most PyTorch char-RNN
scripts use, and against the machine's matrix-multiply ceiling, all measured in one run.

    python benchmarks/sample_speed.py              # shipped model and a 2 x 256 LSTM
    python benchmarks/sample_speed.py --rounds 3   # quicker

Prints a markdown table. Characters/s count generated characters across the whole batch, including
the sampling itself (softmax, top-k/top-p, multinomial), not only the network.
"""

from __future__ import annotations

import argparse
import time

import rnngen  # noqa: F401  (quiets torch's NumPy warning)
import torch
from torch import nn

from ceiling import matmul_ceiling  # benchmarks/ceiling.py
from rnngen import checkpoint
from rnngen.cli import keep_freed_memory
from rnngen.config import ModelConfig
from rnngen.model import RNNModel
from rnngen.sample import generate, step_precision


def flops_per_char(cfg: ModelConfig) -> float:
    """Multiply-adds x 2 of one LSTM step, counting layer 0's input matmul as a plain loop does."""
    gates = 4 if cfg.cell == "lstm" else 3 if cfg.cell == "gru" else 1
    total = 2 * (cfg.embed + cfg.hidden) * gates * cfg.hidden
    total += (cfg.layers - 1) * 2 * (2 * cfg.hidden) * gates * cfg.hidden
    return total + 2 * cfg.hidden * cfg.vocab_size


def best_of(measure, rounds: int) -> float:
    """The best of several short measurements: on a shared machine the least disturbed one."""
    return max(measure() for _ in range(rounds))


@torch.inference_mode()
def reference(model: RNNModel, steps: int) -> float:
    """The usual script: nn.LSTM called on one time step, batch 1, sampling with torch.multinomial."""
    cfg = model.cfg
    lstm = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers)
    lstm.load_state_dict(model.rnn.state_dict())
    lstm.eval()
    embed, head = model.embed, model.head
    token = torch.zeros(1, 1, dtype=torch.long)
    hidden = None
    t0 = time.perf_counter()
    for _ in range(steps):
        out, hidden = lstm(embed(token), hidden)  # (1, 1, H)
        probs = torch.softmax(head(out[0]) / 0.8, dim=-1)
        token = torch.multinomial(probs, 1).view(1, 1)
    return steps / (time.perf_counter() - t0)


def rnngen_rate(model: RNNModel, batch: int, steps: int, precision: str) -> float:
    """Characters/s of rnngen's sampler: the prime, then `steps` batched steps with sampling."""
    t0 = time.perf_counter()
    for _ in generate(model, [0], steps, batch, temperature=0.8, seed=0, precision=precision):
        pass
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measurements per figure; the best is kept")
    args = parser.parse_args()
    keep_freed_memory()  # as the rnngen command does; every loop here runs with it

    models = {"shipped shakespeare (LSTM 2 x 512)": checkpoint.load_model("shakespeare")[0]}
    torch.manual_seed(0)
    models["LSTM 2 x 256"] = RNNModel(ModelConfig(vocab_size=65, hidden=256)).eval()

    fp32_peak = best_of(lambda: matmul_ceiling(torch.float32, seconds=0.5), args.rounds)
    bf16_peak = best_of(lambda: matmul_ceiling(torch.bfloat16, seconds=0.5), args.rounds)
    print(f"matmul ceiling: fp32 {fp32_peak / 1e12:.3f} TFLOP/s, bf16 {bf16_peak / 1e12:.3f} TFLOP/s "
          f"({torch.get_num_threads()} threads); each figure is the best of {args.rounds} runs\n")
    print("| model | sampler | precision | batch | chars/s | x reference | share of bf16 ceiling |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    cpu = torch.device("cpu")
    for name, model in models.items():
        flops = flops_per_char(model.cfg)
        variants = {("reference nn.LSTM loop", "fp32", 1): lambda: reference(model, 200)}
        # A batch generates the default length, 500 characters a sample (the step's set-up included).
        for batch, steps, precision in ((1, 400, "fp32"), (1, 400, "auto"), (64, 500, "auto"), (256, 500, "bf16"),
                                        (256, 500, "auto")):
            label = step_precision(precision, cpu, model, batch) + (" (auto)" if precision == "auto" else "")
            variants[("rnngen", label, batch)] = lambda b=batch, n=steps, p=precision: rnngen_rate(model, b, n, p)
        for measure in variants.values():  # warm-up
            measure()
        rates = {key: 0.0 for key in variants}
        for _ in range(args.rounds):  # interleaved, so that a busy moment hits every variant alike
            for key, measure in variants.items():
                rates[key] = max(rates[key], measure())
        ref = rates[("reference nn.LSTM loop", "fp32", 1)]
        for (sampler, precision, batch), rate in rates.items():
            share = rate * flops / bf16_peak
            print(f"| {name} | {sampler} | {precision} | {batch} | {rate:,.0f} | {rate / ref:.1f}x | {100 * share:.1f}% |")


if __name__ == "__main__":
    main()
