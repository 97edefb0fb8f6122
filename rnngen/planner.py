"""What a new run trains when the user leaves the shape to rnngen: a planner, not a table.

A budget (wall time, steps or epochs) becomes the tokens each candidate shape would see: for wall time,
from this machine's measured speed for that shape (a calibration of a few seconds, cached per machine,
torch version and precision). The largest shape that sees at least `TOKENS_PER_PARAM` tokens per
parameter, and that is not large beside the corpus, is chosen; regularisation then rises with the epochs
the run will make. The two constants are fitted from measured runs (`benchmarks/planner_fit.py`, data
in `benchmarks/data/planner_runs.csv`). Options given on the command line always win.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EMBED = 64
TOKENS_PER_PARAM = 2.5  # fitted: the largest shape with at least this many training tokens per parameter wins
PARAMS_PER_TOKEN = 8.0  # a model is never larger than this many parameters per training token of the corpus
QUIET_EPOCHS = 4.0  # runs of up to this many epochs train best with no dropout; the 10-minute runs (15 epochs)
HEAVY_EPOCHS = 15.0  # with dropout 0.25, embedding dropout 0.1 and weight decay 0.3
EVAL_SHARE = 0.95  # of a timed budget left for training steps once validation has had its share


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    batch_size: int
    seq_len: int
    lr: float

    @property
    def name(self) -> str:
        return f"{self.layers} x {self.hidden}"

    @property
    def key(self) -> str:
        """What its measured speed is kept under: the windows it trains on change the speed too."""
        return f"{self.layers}x{self.hidden}/{self.batch_size}x{self.seq_len}"

    def params(self, vocab: int) -> int:
        """An LSTM's parameter count with rnngen's embedding width and output layer."""
        recurrent = sum(4 * self.hidden * ((EMBED if i == 0 else self.hidden) + self.hidden + 2)
                        for i in range(self.layers))
        return vocab * EMBED + recurrent + (self.hidden + 1) * vocab


# Smallest first. One layer trains fastest per parameter at short budgets; depth and longer windows pay
# once a run sees tens of millions of tokens.
SHAPES = (
    Shape(1, 128, 32, 64, 8e-3),
    Shape(1, 256, 32, 64, 8e-3),
    Shape(1, 384, 32, 64, 8e-3),
    Shape(1, 512, 32, 64, 8e-3),
    Shape(2, 512, 64, 128, 4e-3),
    Shape(2, 768, 64, 128, 3e-3),
    Shape(3, 1024, 64, 128, 2e-3),
)


@dataclass
class Budget:
    seconds: float | None = None
    steps: int | None = None
    epochs: float | None = None

    def tokens(self, shape: Shape, rate: float | None, corpus: int) -> float:
        """Training tokens this budget gives `shape` (the first limit to be reached counts)."""
        ends = []
        if self.steps:
            ends.append(self.steps * shape.batch_size * shape.seq_len)
        if self.epochs:
            ends.append(self.epochs * corpus)
        if self.seconds and rate:
            ends.append(self.seconds * EVAL_SHARE * rate)
        return min(ends) if ends else 0.0


@dataclass
class Choice:
    shape: Shape
    values: dict[str, Any]  # ModelConfig and TrainConfig defaults for this run
    tokens: float  # training tokens the budget gives it
    epochs: float
    why: str
    rates: dict[Shape, float] = field(default_factory=dict)  # measured tokens/s, for a timed budget
    calibration: str = ""  # where the rates came from


def candidates(given: dict[str, Any]) -> tuple[Shape, ...]:
    """The shapes to choose among: SHAPES, or the one that --layers and --hidden give, with the
    windows and learning rate of the listed shape nearest it in size where those are not given."""
    if "layers" not in given or "hidden" not in given:
        return SHAPES
    size = Shape(given["layers"], given["hidden"], 0, 0, 0.0).params(96)
    like = min(SHAPES, key=lambda s: abs(math.log(s.params(96) / size)))
    return (Shape(given["layers"], given["hidden"], given.get("batch_size", like.batch_size),
                  given.get("seq_len", like.seq_len), given.get("lr", like.lr)),)


def choose(budget: Budget, corpus: int, vocab: int, rate: Callable[[Shape], float] | None = None,
           shapes: tuple[Shape, ...] = SHAPES) -> Choice:
    """The shape and regularisation for `budget` on a corpus of `corpus` training tokens. `rate(shape)`:
    its training tokens/s on this machine, asked only for a timed budget and only for the shapes tried
    (smallest first, up to the first that would see too few tokens)."""
    fits = [s for s in shapes if s.params(vocab) <= PARAMS_PER_TOKEN * corpus] or [shapes[0]]
    rates: dict[Shape, float] = {}
    shape, tokens = fits[0], 0.0
    for candidate in fits:
        if budget.seconds and rate is not None:
            rates[candidate] = rate(candidate)
        seen = budget.tokens(candidate, rates.get(candidate), corpus)
        if candidate is not fits[0] and seen < TOKENS_PER_PARAM * candidate.params(vocab):
            break
        shape, tokens = candidate, seen
    epochs = tokens / max(corpus, 1)
    values = {"layers": shape.layers, "hidden": shape.hidden, "embed": EMBED, "batch_size": shape.batch_size,
              "seq_len": shape.seq_len, "lr": shape.lr, "weight_drop": 0.0, "ema": 0.995, **regularisation(epochs)}
    seen = f"{_tokens(tokens)} training tokens, {epochs:.1f} epochs of {_tokens(corpus)}"
    if len(shapes) == 1:
        why = f"{shape.name} as given, for {seen}"
    else:
        why = (f"{shape.name} for {seen}: the largest shape with {TOKENS_PER_PARAM:g}+ tokens per parameter "
               f"({tokens / shape.params(vocab):.1f})")
        if shape is fits[-1] and len(fits) < len(shapes):
            why += f"; larger ones are big for a corpus of {_tokens(corpus)}"
    return Choice(shape, values, tokens, epochs, why, rates)


def regularisation(epochs: float) -> dict[str, float]:
    """Dropout, embedding dropout and weight decay for a run of `epochs` passes: none up to
    QUIET_EPOCHS, the measured 10-minute setting at HEAVY_EPOCHS, rising with log(epochs) between
    and beyond (capped at twice that)."""
    s = min(max(math.log(max(epochs, 1e-9) / QUIET_EPOCHS) / math.log(HEAVY_EPOCHS / QUIET_EPOCHS), 0.0), 2.0)
    return {"dropout": round(0.25 * s, 2), "embed_dropout": round(0.1 * s, 2), "weight_decay": round(0.1 + 0.2 * s, 2)}


def _tokens(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


# --------------------------------------------------------------------------------------------------
# calibration: this machine's training speed per shape


def machine_key(device, dtype) -> str:
    """What the measured speed depends on: the processor, torch, the precision and the threads."""
    import torch

    cpu = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line for line in info.splitlines() if line.startswith("model name")), "")
        cpu += next((line for line in info.splitlines() if line.startswith("flags")), "")
    except OSError:
        cpu = platform.processor()
    if device.type == "cuda":
        cpu += torch.cuda.get_device_name(device)
    text = f"{cpu}|{torch.__version__}|{device.type}|{dtype}|{torch.get_num_threads()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Calibration:
    """This machine's training tokens/s per shape: measured when first asked for, then kept in the
    cache folder (per processor, torch version, precision and thread count), so later runs start at once."""

    def __init__(self, device, dtype, cache_dir: Path | str | None = None,
                 measure: Callable[[Shape], float] | None = None):
        from rnngen.cache import cache_folder

        self.path = cache_folder(cache_dir, "planner") / f"{machine_key(device, dtype)}.json"
        self.measure = measure or (lambda shape: measure_rate(shape, device, dtype))
        try:
            saved = json.loads(self.path.read_text())
            self.rates = {str(k): float(v) for k, v in saved["rates"].items()}
            self.when = str(saved["when"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.rates, self.when = {}, ""
        self.measured: list[str] = []
        self.busy = 0.0  # the load average when a speed was measured, where that was high

    def __call__(self, shape: Shape) -> float:
        if shape.key not in self.rates:
            from rnngen.cache import write_json

            load, cores = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0, os.cpu_count() or 1
            self.busy = max(self.busy, load if load > 0.75 * cores else 0.0)
            self.rates[shape.key] = self.measure(shape)
            self.measured.append(shape.name)
            self.when = self.when or time.strftime("%Y-%m-%d %H:%M")
            write_json(self.path, {"when": self.when, "rates": self.rates})
        return self.rates[shape.key]

    def describe(self) -> str:
        measured = f"measured {', '.join(self.measured)} now" if self.measured else f"calibrated {self.when}"
        busy = (f" (the machine was busy, load {self.busy:.1f}: delete that file to measure again when it is quiet)"
                if self.busy else "")
        return f"speeds {measured}, kept in {self.path}{busy}"


def measure_rate(shape: Shape, device, dtype, vocab: int = 96, steps: int = 3, seconds: float = 0.5) -> float:
    """Training tokens/s of one shape: forward, backward and the trainer's AdamW step on random windows
    of the shape's own batch and length; the fastest of at least `steps` steps, timed for at least
    `seconds` (the fastest step is the one least disturbed by other work)."""
    import torch
    import torch.nn.functional as F

    from rnngen.config import ModelConfig, TrainConfig
    from rnngen.model import RNNModel
    from rnngen.trainer import autocast, make_optimizer

    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=vocab, layers=shape.layers, hidden=shape.hidden, embed=EMBED)).to(device)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4))  # as the trainer makes it
    ids = torch.randint(vocab, (shape.batch_size, shape.seq_len + 1), device=device)  # the windows it trains on
    best, timed, spent = math.inf, -1, 0.0
    while timed < steps or (spent < seconds and timed < 50):  # step -1 builds the kernels, untimed
        _sync(device)
        start = time.perf_counter()
        with autocast(device, dtype):
            logits, _ = model(ids[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        took = time.perf_counter() - start
        if timed >= 0:
            best, spent = min(best, took), spent + took
        timed += 1
    return shape.batch_size * shape.seq_len / best


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
