"""The training loop. Nothing in this file knows about text or MIDI: it sees token ids, and it saves
through a `checkpoint.Saver` it is given, which knows what else goes into a checkpoint.

AdamW, gradient clipping, linear warm-up then cosine decay to the end of the run (the end being
whichever of --max-steps, --max-time or --epochs comes first; a run resumed with new limits carries
its decay on from where it was, see `train_parts.Schedule`), stateful truncated BPTT, periodic
validation, the best checkpoint by validation loss and a resumable last-state checkpoint.

Under torchrun (`world` given) the same loop trains data-parallel: `--batch-size` is the total over
all processes and rank r takes streams r*B/N up to (r+1)*B/N, so N processes follow the optimisation
of one process with the same batch (same learning rate, same schedule). DistributedDataParallel
averages the gradients; once a step the ranks agree on the mean loss, rank 0's clock and whether
any rank was signalled, so that every stop happens on every rank at the same step. Rank 0 validates
and writes the checkpoints; the hidden state saved for --resume is the whole (layers, B, hidden)
state gathered from all ranks, so a run resumes with any number of processes.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from rnngen.checkpoint import Saver
from rnngen.config import TrainConfig
from rnngen.data import Streams, eval_windows, row_windows, val_sample
from rnngen.distributed import OneProcess, World
from rnngen.errors import RnngenError
from rnngen.model import RNNModel
from rnngen.train_parts import Clock, EvalTimer, Event, Schedule, Signals, WeightAverage, progress
from rnngen.train_state import capture, info, restore


class Interrupted(Exception):
    """Training stopped by a signal after saving a resumable checkpoint."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"stopped by signal {signum} at step {step}")
        self.signum, self.step, self.path = signum, step, path


@dataclass
class Outcome:
    steps: int
    best_val: float
    last_val: float
    elapsed: float
    tokens: int
    best_path: Path
    last_path: Path
    history: list[Event] = field(default_factory=list)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


class EvaluationStopped(Exception):
    """`should_stop` said so between two windows: no loss figure (a partial mean would mislead)."""


def evaluate(model: RNNModel, ids: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None,
             batch: int = 64, seq_len: int = 256, should_stop: Callable[[], bool] | None = None,
             tags: torch.Tensor | None = None) -> float:
    """Mean cross-entropy in nats per token over `ids`, reading it as parallel streams from a zero state.
    `ids` 2-D (K, S) (see `data.val_sample`): its rows are the streams. `tags`: each token's tag,
    shaped as `ids`, for a tagged model."""
    return sum(loss_by_tag(model, ids, device, dtype, batch, seq_len, should_stop, tags).values(), Loss()).mean


@dataclass
class Loss:
    total: float = 0.0  # nats
    count: int = 0  # tokens

    def __add__(self, other: Loss) -> Loss:
        return Loss(self.total + other.total, self.count + other.count)

    @property
    def mean(self) -> float:
        if self.count == 0:
            raise RnngenError("the validation data is too short to evaluate (fewer than two tokens)")
        return self.total / self.count


@torch.no_grad()
def loss_by_tag(model: RNNModel, ids: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None,
                batch: int = 64, seq_len: int = 256, should_stop: Callable[[], bool] | None = None,
                tags: torch.Tensor | None = None) -> dict[int, Loss]:
    """`evaluate`'s sums kept apart for each tag index (all under 0 for an untagged model)."""
    was_training = model.training
    model.eval()
    ids = ids.to(device)
    if ids.dim() == 2:
        windows = row_windows(ids, seq_len)
        tag_windows = row_windows(tags.to(device), seq_len) if tags is not None else None
    else:
        # Long streams: each one starts cold, so fewer, longer streams measure the model more fairly.
        streams = max(1, min(batch, len(ids) // 2048))
        windows = eval_windows(ids, streams, seq_len)
        tag_windows = eval_windows(tags.to(device), streams, seq_len) if tags is not None else None
    sums: dict[int, Loss] = {}
    state = None
    for x, y in windows:
        t = next(tag_windows)[0] if tag_windows is not None else None  # (B, T): the inputs' tags
        if should_stop is not None and should_stop():
            model.train(was_training)
            raise EvaluationStopped
        with autocast(device, dtype):
            logits, state = model(x.long(), state, t)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.long().flatten(), reduction="none")  # (B*T,)
        groups = torch.zeros_like(losses, dtype=torch.long) if t is None else t.flatten().long()
        total = losses.new_zeros(int(groups.max()) + 1, dtype=torch.float64).index_add_(0, groups, losses.double())
        count = torch.bincount(groups, minlength=len(total))
        for k in torch.nonzero(count).flatten().tolist():
            sums[k] = sums.get(k, Loss()) + Loss(total[k].item(), int(count[k]))
    model.train(was_training)
    return sums


def make_optimizer(model: RNNModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on the weight matrices only; biases and the embedding table are left alone."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith("embed") else rest).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type in ("cpu", "cuda")  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=fused)


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up (over `warmup_steps` or the first 5% of the run, whichever ends first),
    then cosine decay to `min_lr_frac` of the peak at the end of the run. `progress`: how far the
    schedule has gone (`Schedule.position`: the run's progress, unless it was resumed with new limits)."""
    warm = min(1.0, max((step + 1) / max(1, cfg.warmup_steps), progress / 0.05))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * warm * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * cosine)

class Trainer:
    """Trains `model` on `train_ids` until the config's first limit, validating on `val_ids` and saving through
    `saver`; `report` hears of every step. In a data-parallel `world` each rank trains its share of the streams."""

    def __init__(self, model: RNNModel, train_ids: torch.Tensor, val_ids: torch.Tensor, cfg: TrainConfig,
                 device: torch.device, dtype: torch.dtype | None, saver: Saver,
                 report: Callable[[Event], None] = lambda e: None, resume: dict | None = None,
                 world: World | None = None, train_tags: torch.Tensor | None = None, val_tags: torch.Tensor | None = None):
        if not (cfg.max_steps or cfg.max_time or cfg.epochs):
            raise ValueError("a run needs at least one of max_steps, max_time, epochs")
        self.world = world or OneProcess(device)
        self.rows = self.world.rows(cfg.batch_size)
        self.model, self.cfg, self.saver = model.to(device), cfg, saver
        self.device, self.dtype, self.report = device, dtype, report
        tags = None if train_tags is None else train_tags.to(device)  # each token's tag, for a tagged model
        self.streams = Streams(train_ids.to(device), cfg.batch_size, cfg.seq_len, cfg.seed, tags)
        self.val_ids, self.val_sample = val_ids, val_sample(val_ids, seed=cfg.seed)  # the same windows each time
        self.val_tags = None if val_tags is None else val_sample(val_tags, seed=cfg.seed)  # at the same places
        self.val_by_tag: list[float] = []  # a tagged model's last validation loss for each tag
        self.opt = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        self.params = list(model.parameters())
        self.average = WeightAverage(self.params, cfg.ema)
        self.step = self.epoch = self.window = self.tokens = 0
        self.best_val = self.last_val = math.inf
        self.state = model.init_state(cfg.batch_size // self.world.size, device)
        self.clock, self.signals = Clock(), Signals()
        self.schedule = Schedule.of(cfg)
        self.stop_signal: int | None = None  # a signal any rank received, as agreed at the last step
        self.history: list[Event] = []
        self.val_history: list[list[float]] = []  # [step, loss] of every evaluation, across resumes
        self.train_time, self.train_tokens = 0.0, 0  # throughput leaves evaluation out
        if resume is not None:
            restore(self, resume)
        else:
            torch.manual_seed(cfg.seed + self.world.rank)  # own dropout masks per rank
        self.clock.now = self.clock.before
        self.net = self.world.wrap(model)

    def epoch_position(self) -> float:
        return self.epoch + self.window / self.streams.windows_per_epoch

    def progress(self) -> float:
        return progress(self.cfg, self.step, self.clock.now, self.epoch_position())

    def learning_rate(self) -> float:
        """The rate of the next step."""
        return learning_rate(self.cfg, self.step, self.schedule.position(self.progress()))

    def resuming(self) -> str:
        """What a resumed run does with its learning rate (new limits stretch or shorten the rest of the decay)."""
        lr, end = self.learning_rate(), self.cfg.lr * self.cfg.min_lr_frac
        if self.schedule.position(self.progress()) >= 1.0:
            return f"resuming at step {self.step}, lr {lr:.1e}: its decay has ended, and the run goes on at that rate"
        new = " over the new budget" if self.schedule.renewed else ""
        return f"resuming at step {self.step}, lr {lr:.1e}, decaying to {end:.1e}{new}"

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self.clock.begin()
        try:
            with self.signals.caught():
                return self._loop()
        finally:
            self.net = self.model  # let the DDP wrapper go before the process group does (see distributed.shutdown)

    def _loop(self) -> Outcome:
        self.timer = EvalTimer(self.cfg.eval_every, self.progress())
        self.model.train()
        event = None
        while self.progress() < 1.0:
            for window in self.streams.epoch(self.epoch, self.window):  # x, y and the tags of x (or None)
                event = self._step(*(None if w is None else w[self.rows] for w in window))  # (B/N, T): this rank's streams
                finished = event.progress >= 1.0
                if finished or self.timer.due(self.step, event.progress, self.clock.now):
                    self._evaluate_and_save(event)
                if self.world.main:
                    self.report(event)
                if self.world.stop_signal(self.stop_signal, self.signals.received) is not None:
                    self._stop_on_signal()
                if finished:
                    break
            else:
                self.epoch += 1
                self.window = 0
                self.state = self.model.init_state(self.cfg.batch_size // self.world.size, self.device)  # cold start
        if self.step == 0 or not math.isfinite(self.last_val):  # nothing evaluated yet: evaluate and save now
            loss, rate = (event.loss, event.tokens_per_s) if event else (math.nan, 0.0)
            event = Event(self.step, self.epoch_position(), loss, 0.0, rate, 1.0, self.clock.elapsed())
            self._evaluate_and_save(event)
            if self.world.main:
                self.report(event)
        return Outcome(self.step, self.best_val, self.last_val, self.clock.elapsed(), self.tokens,
                       self.saver.best_path, self.saver.last_path, self.history)

    def _step(self, x: torch.Tensor, y: torch.Tensor, tags: torch.Tensor | None) -> Event:
        """One optimisation step on this rank's windows x, y (B/N, T) (and the tags of x)."""
        t0 = time.monotonic()
        lr = self.learning_rate()
        for group in self.opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.dtype):
            logits, state = self.net(x.long(), self.state, tags)  # (B, T, V)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.long().view(-1))
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.average.update(self.step)
        self.state = tuple(s.detach() for s in state)
        loss_value = self._agree(loss.item())  # the mean over all streams, as one process sees it
        if not math.isfinite(loss_value):
            self._fail_non_finite()
        self.step += 1
        self.window += 1
        self.tokens += x.numel() * self.world.size
        self.train_tokens += x.numel() * self.world.size
        self.train_time += time.monotonic() - t0
        return Event(self.step, self.epoch_position(), loss_value, lr, self.train_tokens / self.train_time,
                     self.progress(), self.clock.elapsed())

    def _agree(self, loss: float) -> float:
        """One all-reduce a step: the mean loss, rank 0's clock, and a signal that reached any rank.
        A non-finite loss anywhere makes the mean non-finite, so every rank stops on it together."""
        sig = self.signals.received
        mine = [loss / self.world.size, self.clock.elapsed() if self.world.main else 0.0,
                float(sig == signal.SIGINT), float(sig is not None and sig != signal.SIGINT)]
        mean, self.clock.now, interrupts, others = self.world.all_sum(mine)
        if others:
            self.stop_signal = int(signal.SIGTERM)
        elif interrupts:
            self.stop_signal = int(signal.SIGINT)
        return mean

    # -- evaluating and saving ----------------------------------------------------------------

    def _evaluate_and_save(self, event: Event) -> None:
        with self.average.averaged():
            t0 = time.monotonic()
            val, stopped = self._validate()
            # every rank keeps rank 0's books, so that their decisions stay the same
            val, cost, self.clock.now, stopped = self.world.broadcast(
                [val, time.monotonic() - t0, self.clock.elapsed(), stopped])
            if stopped:  # a signal came during validation: save where the run is, without a figure
                self.stop_signal = int(stopped)
                self._save_last()
                raise self._interrupted()
            self.last_val = val
            self.val_history.append([self.step, val])
            improved = val < self.best_val
            if improved:
                self.best_val = val
                if self.world.main:
                    self.saver.best(self.model, info(self))
            self._save_last()
        event.val_loss, event.best_val, event.saved = val, self.best_val, improved
        self.timer.done(self.clock.now, cost)
        self.history.append(event)

    def _validate(self) -> tuple[float, int]:
        """(loss, 0), or (nan, the signal) when one arrived while validating; rank 0 validates, with
        the unwrapped model, and the others wait for its figure."""
        if not self.world.main:
            return math.nan, 0
        try:  # (the model is back in training mode either way)
            by_tag = loss_by_tag(self.model, self.val_sample, self.device, self.dtype, seq_len=max(self.cfg.seq_len, 128),
                                 should_stop=lambda: self.signals.received is not None, tags=self.val_tags)
        except EvaluationStopped:
            return math.nan, int(self.signals.received)
        self.val_by_tag = [by_tag[k].mean if k in by_tag else math.nan for k in range(len(self.model.cfg.tags))]
        return sum(by_tag.values(), Loss()).mean, 0

    def _save_last(self) -> None:
        resume = capture(self)  # distributed: a collective, so on every rank
        if self.world.main:
            self.saver.last(self.model, info(self), resume)

    def _stop_on_signal(self) -> None:
        with self.average.averaged():
            self._save_last()
        raise self._interrupted()

    def _interrupted(self) -> Interrupted:
        return Interrupted(self.world.stop_signal(self.stop_signal, self.signals.received), self.step,
                           self.saver.last_path)

    def _fail_non_finite(self) -> None:
        path = self.saver.best_path
        kept = f"; the best checkpoint ({path}) is kept" if path.exists() else ""
        raise RnngenError(f"the loss became non-finite at step {self.step + 1}; lower --lr or --grad-clip{kept}")
