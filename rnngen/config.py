"""Typed configuration: every option becomes a field here, and `asdict()` goes into the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

CELLS = ("lstm", "gru", "rnn")


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    embed: int = 64
    dropout: float = 0.0
    weight_drop: float = 0.0  # training only: dropout on the recurrent weight matrices, one mask per step
    embed_dropout: float = 0.0  # training only: drops whole input tokens (their embedding vectors)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")


@dataclass
class TrainConfig:
    seq_len: int = 128
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_frac: float = 0.1  # cosine decay ends at lr * min_lr_frac
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    ema: float = 0.0  # decay of the weight average that is evaluated and saved; 0: no average
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    epochs: float | None = None
    eval_every: int | None = None  # None: ten evaluations over the run
    val_frac: float = 0.1
    transpose: int = 0  # MIDI: training pieces also moved by up to this many semitones each way
    seed: int = 1337
    sources: list[str] = field(default_factory=list)


@dataclass
class SampleConfig:
    length: int = 500
    num_samples: int = 1
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


# Defaults chosen by the time budget, for every option the user leaves unset. A short run learns
# most from a fast model that needs no regularisation: on tiny shakespeare in 73 s (2-core CPU, bf16)
# one 512-wide layer at lr 8e-3 reached 1.443 nats/char, against 1.483 for 2 x 256 at lr 5e-3, 1.526
# for 2 x 384 and 1.515 for 1 x 768 (benchmarks/RESULTS.md). A longer run can afford depth, longer
# windows and dropout, and at 10 minutes it overfits (training loss 1.2 against 1.44 on validation):
# dropout 0.35 at lr 3e-3 reached 1.440 against 1.462 for dropout 0.2 at 2e-3 (part of that is a
# faster day), and over the same 1,500 steps evaluating a moving average of the weights (decay 0.995)
# took it to 1.437; weight drop 0.3 with dropout 0.25 did no better (1.439). The average also helps at
# 73 s: seven runs with it averaged 1.434, three without 1.440. With that, dropout and weight decay
# alone stayed near 1.42 in ten minutes (lighter dropout learns faster, then overfits); dropping whole
# input tokens (embed_dropout 0.1) is what kept the run improving to its end: 1.414 on its own, 1.405
# with dropout 0.25 and weight decay 0.3, and 1.396 with those at lr 4e-3.
BUDGET_TIERS: list[tuple[float, dict]] = [
    (180.0, dict(layers=1, hidden=512, embed=64, dropout=0.0, weight_drop=0.0, embed_dropout=0.0, seq_len=64,
                 batch_size=32, lr=8e-3, weight_decay=0.1, ema=0.995)),
    (float("inf"), dict(layers=2, hidden=512, embed=64, dropout=0.25, weight_drop=0.0, embed_dropout=0.1,
                        seq_len=128, batch_size=64, lr=4e-3, weight_decay=0.3, ema=0.995)),
]
DEFAULT_MAX_TIME = 600.0  # the stop when none of --max-steps, --max-time, --epochs is given


def defaults_for_budget(seconds: float | None) -> dict:
    """Model and optimisation defaults for a run of `seconds` (None: no time limit)."""
    for limit, values in BUDGET_TIERS:
        if seconds is not None and seconds <= limit:
            return dict(values)
    return dict(BUDGET_TIERS[-1][1])


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '1h30m' or plain seconds -> seconds."""
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration; use forms like 90s, 10m, 1h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
