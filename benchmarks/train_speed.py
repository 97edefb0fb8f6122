"""Training throughput: rnngen's training step against a plain fp32 nn.LSTM loop of the same shape,
and as a share of the machine's matrix-multiply ceiling, all measured in one run; then validation loss
at equal steps for fp32 and rnngen's precision, from the same initial weights.

    python benchmarks/train_speed.py                       # 2 x 512 LSTM, batch 64 x 128
    python benchmarks/train_speed.py --hidden 256 --batch 32 --seq 64 --quality-steps 0
    python benchmarks/train_speed.py --dropout 0.35 --speed-only   # with dropout between and after the layers

The loops are measured in turn, round after round, and each keeps its best round, so that a busy
moment on a shared machine hits every loop alike. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import time

import rnngen  # noqa: F401  (quiets torch's NumPy warning)
import torch
import torch.nn.functional as F
from torch import nn

from ceiling import matmul_ceiling  # benchmarks/ceiling.py
from rnngen.cli import keep_freed_memory
from rnngen.codec import TextCodec
from rnngen.config import ModelConfig, TrainConfig
from rnngen.data import Streams, split
from rnngen.device import resolve_precision
from rnngen.model import RNNModel
from rnngen.trainer import autocast, evaluate, make_optimizer

CORPUS = "corpora/tinyshakespeare.txt"


def train_flops_per_char(cfg: ModelConfig) -> float:
    """Forward matmul FLOP per character, times 3 for forward + backward."""
    forward = 2 * 4 * cfg.hidden * (cfg.embed + cfg.hidden)
    forward += (cfg.layers - 1) * 2 * 4 * cfg.hidden * 2 * cfg.hidden
    forward += 2 * cfg.hidden * cfg.vocab_size
    return 3 * forward


def plain_loop(cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor):
    """The textbook loop: fp32 nn.LSTM (with its own dropout between layers and nn.Dropout before the
    head), Adam, cross-entropy. Returns run(steps) -> characters per second."""
    torch.manual_seed(0)
    embed = nn.Embedding(cfg.vocab_size, cfg.embed)
    lstm = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout)
    head, drop = nn.Linear(cfg.hidden, cfg.vocab_size), nn.Dropout(cfg.dropout)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)

    def run(steps: int) -> float:
        for i in range(steps + 1):  # the first step warms up and is not timed
            if i == 1:
                t0 = time.perf_counter()
            out, _ = lstm(embed(x))
            loss = F.cross_entropy(head(drop(out)).view(-1, cfg.vocab_size), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return x.numel() * steps / (time.perf_counter() - t0)

    return run


def rnngen_steps(model: RNNModel, tcfg: TrainConfig, streams: Streams, dtype, steps: int) -> float:
    """rnngen's training step (the loop in rnngen/trainer.py, minus logging): characters per second."""
    opt = make_optimizer(model, tcfg)
    state = model.init_state(tcfg.batch_size)
    device = torch.device("cpu")
    windows = (w for epoch in itertools.count() for w in streams.epoch(epoch))
    t0 = None
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        x, y, _ = next(windows)
        with autocast(device, dtype):
            logits, state = model(x.long(), state)
        loss = F.cross_entropy(logits.float().view(-1, model.cfg.vocab_size), y.long().view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        state = tuple(s.detach() for s in state)
    return streams.batch * streams.seq_len * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per loop, interleaved; the best is kept")
    parser.add_argument("--quality-steps", type=int, default=200, help="steps for the equal-steps loss check")
    parser.add_argument("--speed-only", action="store_true", help="skip the equal-steps loss check")
    args = parser.parse_args()
    keep_freed_memory()  # as the rnngen command does; every loop here runs with it

    text = open(CORPUS, encoding="utf-8").read()
    codec = TextCodec.fit(text)
    train_ids, val_ids = split(codec.encode_corpus(text), 0.1)
    cfg = ModelConfig(vocab_size=codec.vocab_size, layers=args.layers, hidden=args.hidden, dropout=args.dropout)
    tcfg = TrainConfig(batch_size=args.batch, seq_len=args.seq, lr=2e-3, warmup_steps=1)
    streams = Streams(train_ids, args.batch, args.seq)
    x, y, _ = next(streams.epoch(0))
    x, y = x.long(), y.long()
    dtype = resolve_precision("auto", torch.device("cpu"))

    bf16_peak = matmul_ceiling(torch.bfloat16)
    fp32_peak = matmul_ceiling(torch.float32)
    loops = {"plain fp32 nn.LSTM loop": plain_loop(cfg, x, y)}
    for name, dt in (("rnngen, fp32", None), (f"rnngen, --precision auto ({'bf16' if dtype else 'fp32'})", dtype)):
        torch.manual_seed(0)
        model = RNNModel(cfg)
        loops[name] = lambda steps, m=model, d=dt: rnngen_steps(m, tcfg, streams, d, steps)
    rates = {name: 0.0 for name in loops}
    for _ in range(args.rounds):  # interleaved, so that a busy moment hits every loop alike; the best is kept
        for name, run in loops.items():
            rates[name] = max(rates[name], run(args.steps))
    plain = rates["plain fp32 nn.LSTM loop"]
    flops = train_flops_per_char(cfg)
    print(f"LSTM {args.layers} x {args.hidden}, batch {args.batch} x {args.seq}, dropout {args.dropout:g}; matmul ceiling fp32 "
          f"{fp32_peak / 1e12:.3f}, bf16 {bf16_peak / 1e12:.3f} TFLOP/s; {flops / 1e6:.1f} MFLOP per character; "
          f"each figure is the best of {args.rounds} interleaved measurements of {args.steps} steps\n")
    print("| loop | chars/s | x plain fp32 | share of bf16 ceiling |")
    print("| --- | --- | --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / plain:.2f}x | {100 * rate * flops / bf16_peak:.1f}% |")

    if args.quality_steps and not args.speed_only:
        print(f"\nvalidation loss after {args.quality_steps} steps from the same initial weights:")
        for name, dt in [("fp32", None), ("auto", dtype)]:
            torch.manual_seed(0)
            model = RNNModel(cfg)
            rnngen_steps(model, tcfg, streams, dt, args.quality_steps)
            print(f"  {name}: {evaluate(model, val_ids, torch.device('cpu'), dt):.4f} nats/char")


if __name__ == "__main__":
    main()
