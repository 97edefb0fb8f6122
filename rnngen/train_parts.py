"""The small parts the training loop calls, each testable without a model: what it reports, the
clock and budget, when to evaluate, the weight average, and signals."""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from rnngen.config import LIMITS, TrainConfig


@dataclass
class Event:
    """What the loop tells its reporter after a step or an evaluation."""

    step: int
    epoch: float
    loss: float
    lr: float
    tokens_per_s: float
    progress: float
    elapsed: float
    val_loss: float | None = None
    best_val: float | None = None
    saved: bool = False


class Clock:
    """Seconds of training, across resumes: what was spent before plus this process's run. The
    decisions read `now`, the time as last agreed by every rank (see `Trainer._agree`)."""

    def __init__(self, before: float = 0.0):
        self.before = before
        self.start: float | None = None
        self.now = before

    def begin(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return self.before + (time.monotonic() - self.start if self.start is not None else 0.0)


def progress(cfg: TrainConfig, step: int, seconds: float, epochs: float) -> float:
    """How far the run is towards whichever of its limits comes first: 0 to 1."""
    parts = []
    if cfg.max_steps:
        parts.append(step / cfg.max_steps)
    if cfg.max_time:
        parts.append(seconds / cfg.max_time)
    if cfg.epochs:
        parts.append(epochs / cfg.epochs)
    return min(1.0, max(parts))


@dataclass
class Schedule:
    """How far the learning rate's decay has gone, as the run progresses: from `start[1]` at progress
    `start[0]` to its end when the run ends. A new run starts at (0, 0): the decay follows progress.
    A run resumed with other limits starts where its decay was, so that the rate never jumps back
    up, and the rest of the decay is spread over what is left of the new budget."""

    limits: dict  # max_steps, max_time and epochs, against which progress is measured
    start: tuple[float, float] = (0.0, 0.0)
    renewed: bool = False  # resumed with other limits than the run had

    @classmethod
    def of(cls, cfg: TrainConfig) -> Schedule:
        return cls({k: getattr(cfg, k) for k in LIMITS})

    def position(self, progress_now: float) -> float:
        begun, done = self.start
        if begun >= 1.0:
            return 1.0
        return done + (1.0 - done) * max(0.0, progress_now - begun) / (1.0 - begun)

    def to_dict(self) -> dict:
        return {"limits": dict(self.limits), "start": list(self.start)}

    @classmethod
    def resumed(cls, saved: dict | None, cfg: TrainConfig, step: int, seconds: float, epochs: float) -> Schedule:
        """The schedule of a run resumed at this point under `cfg`'s limits; the same limits keep the
        very same schedule (a checkpoint without one: the decay follows the progress, as it used to)."""
        now = cls.of(cfg)
        if saved is None:
            return now
        before = cls(dict(saved["limits"]), tuple(saved["start"]))
        if before.limits == now.limits:
            return before
        done = before.position(progress(replace(cfg, **before.limits), step, seconds, epochs))
        return cls(now.limits, (progress(cfg, step, seconds, epochs), done), renewed=True)


class EvalTimer:
    """Whether to validate now: every `eval_every` steps when given, else ten times per run, but never
    so often that validation takes over 5% of the time."""

    def __init__(self, eval_every: int | None, progress_now: float):
        self.every = eval_every
        self.last_tenth = int(progress_now * 10)
        self.last_end = -math.inf  # seconds on the clock when the last evaluation ended
        self.cost = 0.0  # seconds the last evaluation took

    def due(self, step: int, progress_now: float, seconds: float) -> bool:
        if self.every:
            return step % self.every == 0
        tenth = int(progress_now * 10)
        if tenth <= self.last_tenth or seconds - self.last_end < 19 * self.cost:
            return False
        self.last_tenth = tenth
        return True

    def done(self, seconds: float, cost: float) -> None:
        self.last_end, self.cost = seconds, cost


class WeightAverage:
    """An exponential moving average of the weights, which is what gets evaluated and saved; early on
    it forgets faster, so that the random initial weights do not linger in it. decay 0: no average."""

    def __init__(self, params: list[torch.Tensor], decay: float):
        self.params, self.decay = params, decay
        self.average = [p.detach().clone() for p in params] if decay else None
        self.set_aside: list[torch.Tensor] | None = None  # the trained weights, while the average stands in

    def update(self, step: int) -> None:
        if self.average is not None:
            decay = min(self.decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(self.average, self.params, 1.0 - decay)

    def raw_weights(self) -> list[torch.Tensor]:
        """The weights being trained: inside `averaged()`, the ones set aside."""
        return self.set_aside or self.params

    def restore(self, raw: list[torch.Tensor] | None) -> None:
        """A run saved with averaging saved the average as its weights and the trained ones apart:
        the average is taken back, and training goes on from the trained weights."""
        with torch.no_grad():
            for p, a in zip(self.params, self.average or []):
                a.copy_(p)
            if raw is not None:
                for p, w in zip(self.params, raw, strict=True):
                    p.copy_(w)

    @contextmanager
    def averaged(self):
        """Evaluate and save the averaged weights; the trained ones come back afterwards."""
        if self.average is None:
            yield
            return
        with torch.no_grad():
            self.set_aside = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, self.set_aside):
                    p.copy_(w)
            self.set_aside = None


class Signals:
    """SIGINT and SIGTERM while training: the first is noted, for the loop to save and stop at the end of
    its step (or of the window being validated); a second stops at once, the last checkpoint kept."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    @contextmanager
    def caught(self):
        handlers = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            yield self
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
