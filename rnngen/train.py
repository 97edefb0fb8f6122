"""The training loop. Nothing in this file knows about text or MIDI: it sees token ids.

AdamW, gradient clipping, linear warm-up then cosine decay to the end of the run (the end being
whichever of --max-steps, --max-time or --epochs comes first), stateful truncated BPTT, periodic
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
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from rnngen import __version__, checkpoint, distributed
from rnngen.config import TrainConfig
from rnngen.data import Streams, eval_windows, row_windows
from rnngen.device import precision_name
from rnngen.distributed import World
from rnngen.errors import RnngenError
from rnngen.model import RNNModel


class Interrupted(Exception):
    """Training stopped by a signal after saving a resumable checkpoint."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"stopped by signal {signum} at step {step}")
        self.signum, self.step, self.path = signum, step, path


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


@torch.no_grad()
def evaluate(model: RNNModel, ids: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None,
             batch: int = 64, seq_len: int = 256, should_stop: Callable[[], bool] | None = None) -> float:
    """Mean cross-entropy in nats per token over `ids`, reading it as parallel streams from a zero state.
    `ids` 2-D (K, S) (see `data.val_sample`): its rows are the streams."""
    was_training = model.training
    model.eval()
    ids = ids.to(device)
    if ids.dim() == 2:
        windows = row_windows(ids, seq_len)
    else:
        # Long streams: each one starts cold, so fewer, longer streams measure the model more fairly.
        windows = eval_windows(ids, max(1, min(batch, len(ids) // 2048)), seq_len)
    total, count, state = 0.0, 0, None
    for x, y in windows:
        if should_stop is not None and should_stop():
            model.train(was_training)
            raise EvaluationStopped
        with autocast(device, dtype):
            logits, state = model(x.long(), state)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.long().flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    if count == 0:
        raise RnngenError("the validation data is too short to evaluate (fewer than two tokens)")
    return total / count


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
    then cosine decay to `min_lr_frac` of the peak at the end of the run."""
    warm = min(1.0, max((step + 1) / max(1, cfg.warmup_steps), progress / 0.05))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * warm * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * cosine)


class Trainer:
    def __init__(self, model: RNNModel, codec, train_ids: torch.Tensor, val_ids: torch.Tensor,
                 cfg: TrainConfig, device: torch.device, dtype: torch.dtype | None, out: Path,
                 report: Callable[[Event], None] = lambda e: None, resume: dict | None = None,
                 meta: dict | None = None, world: World | None = None):
        if not (cfg.max_steps or cfg.max_time or cfg.epochs):
            raise ValueError("a run needs at least one of max_steps, max_time, epochs")
        self.world, self.main = world, world is None or world.main
        self.nproc = world.size if world is not None else 1
        if cfg.batch_size % self.nproc:
            raise RnngenError(f"--batch-size {cfg.batch_size} is the total over {self.nproc} processes and must "
                              f"divide evenly among them; use a multiple of {self.nproc}")
        self.rows = world.rows(cfg.batch_size) if world is not None else slice(0, cfg.batch_size)
        self.model, self.codec, self.cfg = model.to(device), codec, cfg
        self.device, self.dtype, self.report = device, dtype, report
        self.best_path, self.last_path = Path(out), checkpoint.last_path(Path(out))
        self.meta = meta or {}
        self.streams = Streams(train_ids.to(device), cfg.batch_size, cfg.seq_len, cfg.seed)
        self.val_ids = val_ids
        self.opt = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        self.params = list(model.parameters())
        self.ema = [p.detach().clone() for p in self.params] if cfg.ema else None
        self._set_aside: list[torch.Tensor] | None = None  # the trained weights, while the average stands in
        self.step = self.epoch = self.window = self.tokens = 0
        self.elapsed_before = 0.0
        self.best_val = self.last_val = math.inf
        self.state = model.init_state(cfg.batch_size // self.nproc, device)
        self.history: list[Event] = []
        self._signal: int | None = None  # set by this process's signal handler
        self._stop: int | None = None  # distributed: a signal any rank received, agreed at the last step
        self._clock = 0.0  # distributed: rank 0's elapsed seconds, agreed at the last step
        if resume is not None:
            self._restore(resume)
        else:
            torch.manual_seed(cfg.seed + (world.rank if world is not None else 0))  # own dropout masks per rank
        self._clock = self.elapsed_before
        self.net = model
        if world is not None:  # the wrapper averages gradients in backward(); rank 0's weights go to all
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # -- state for --resume -------------------------------------------------------------------

    def _resume_state(self) -> dict:
        """Distributed: every rank must call this (it gathers), and rank 0's answer is the one to save."""
        rng_cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        state = {
            "step": self.step, "epoch": self.epoch, "window": self.window, "tokens": self.tokens,
            "elapsed": self.elapsed(), "best_val": self.best_val, "last_val": self.last_val,
            "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(),
            "hidden": [s.detach().cpu().clone() for s in self.state],
            "rng_cpu": torch.get_rng_state(), "rng_cuda": rng_cuda,
        }
        if self.ema is not None:  # the checkpoint's weights are the average; these are the ones being trained
            state["raw_weights"] = [p.detach().cpu().clone() for p in self.raw_weights()]
        if self.world is not None:  # the whole (layers, B, hidden) state, and each rank's random state
            state["hidden"] = [torch.cat(distributed.gather(s, self.world), dim=1) for s in self.state]
            state["processes"] = self.world.size
            state["rng_cpu_ranks"] = distributed.gather(torch.get_rng_state(), self.world)
            if rng_cuda is not None:
                state["rng_cuda_ranks"] = distributed.gather(rng_cuda, self.world)
        return state

    def _restore(self, r: dict) -> None:
        try:
            self.step, self.epoch, self.window, self.tokens = r["step"], r["epoch"], r["window"], r["tokens"]
            self.elapsed_before = float(r["elapsed"])
            self.best_val, self.last_val = float(r["best_val"]), float(r["last_val"])
            self.opt.load_state_dict(r["optimizer"])
            self._restore_raw(r.get("raw_weights"))
            if r.get("scaler"):
                self.scaler.load_state_dict(r["scaler"])
            hidden = tuple(h.to(self.device) for h in r["hidden"])  # (layers, B, hidden): all the streams
            whole = self.model.init_state(self.cfg.batch_size, "meta")
            if [tuple(h.shape) for h in hidden] != [tuple(s.shape) for s in whole]:
                raise RnngenError("the resumed run's batch size differs from the checkpoint's; keep --batch-size")
            self.state = tuple(h[:, self.rows].contiguous() for h in hidden)  # this rank's streams
            self._restore_rng(r)
        except (KeyError, TypeError, ValueError) as e:
            raise RnngenError(f"the checkpoint's training state is damaged or incomplete ({e})") from e
        for group in self.opt.param_groups:  # a resumed run may change the peak learning rate
            group["lr"] = self.cfg.lr

    def _restore_raw(self, raw: list | None) -> None:
        """A run saved with averaging saved the average as its weights and the trained ones apart:
        the average is taken back, and training goes on from the trained weights."""
        with torch.no_grad():
            for p, a in zip(self.params, self.ema or []):
                a.copy_(p)
            if raw is not None:
                for p, w in zip(self.params, raw, strict=True):
                    p.copy_(w)

    def _restore_rng(self, r: dict) -> None:
        """Each rank takes back its own random state when the process count is unchanged. With another
        count, rank 0 takes the saved rank 0's and the others draw fresh seeds: the run then continues
        statistically rather than bit for bit (and exactly where nothing is random, as with dropout 0)."""
        rank = self.world.rank if self.world is not None else 0
        cpu, cuda = r["rng_cpu"], r.get("rng_cuda")
        if rank > 0:
            same = len(r.get("rng_cpu_ranks") or []) == self.nproc
            if not same:
                torch.manual_seed(self.cfg.seed + 1_000_003 * self.step + rank)
                return
            cpu = r["rng_cpu_ranks"][rank]
            cuda = (r.get("rng_cuda_ranks") or [None] * self.nproc)[rank]
        torch.set_rng_state(cpu)
        if cuda is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda, self.device)

    def train_info(self) -> dict:
        return {
            "config": asdict(self.cfg), "step": self.step, "epoch": self.epoch_position(),
            "tokens": self.tokens, "elapsed": self.elapsed(), "val_loss": self.best_val,
            "last_val_loss": self.last_val, "device": str(self.device), "processes": self.nproc,
            "precision": precision_name(self.dtype), "rnngen": __version__, **self.meta,
        }

    # -- progress -------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._t0 if hasattr(self, "_t0") else 0.0)

    def epoch_position(self) -> float:
        return self.epoch + self.window / self.streams.windows_per_epoch

    def _now(self) -> float:
        """The elapsed seconds that decisions use: distributed, rank 0's as agreed at the last step."""
        return self.elapsed() if self.world is None else self._clock

    def progress(self) -> float:
        cfg, parts = self.cfg, []
        if cfg.max_steps:
            parts.append(self.step / cfg.max_steps)
        if cfg.max_time:
            parts.append(self._now() / cfg.max_time)
        if cfg.epochs:
            parts.append(self.epoch_position() / cfg.epochs)
        return min(1.0, max(parts))

    def _eval_due(self) -> bool:
        if self.cfg.eval_every:
            return self.step % self.cfg.eval_every == 0
        # Ten times per run, but never so often that validation takes over 5% of the time.
        tenth = int(self.progress() * 10)
        if tenth <= self._last_tenth:
            return False
        if self._now() - self._last_eval_end < 19 * self._eval_cost:
            return False
        self._last_tenth = tenth
        return True

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self._t0 = time.monotonic()
        handlers = self._install_signals()
        try:
            return self._loop()
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self.net = self.model  # let the DDP wrapper go before the process group does (see distributed.shutdown)

    def _install_signals(self) -> dict:
        def on_signal(signum, frame):
            if self._signal is not None:  # a second Ctrl-C: stop now, the last checkpoint stays
                raise KeyboardInterrupt
            self._signal = signum

        handlers = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return handlers

    def _loop(self) -> Outcome:
        model, cfg, V = self.model, self.cfg, self.model.cfg.vocab_size
        model.train()
        self._last_tenth, self._last_eval_end, self._eval_cost = int(self.progress() * 10), -math.inf, 0.0
        train_time, train_tokens, tokens_per_s = 0.0, 0, 0.0  # throughput excludes evaluation
        loss_value = math.nan
        while self.progress() < 1.0:
            for x, y in self.streams.epoch(self.epoch, self.window):
                x, y = x[self.rows], y[self.rows]  # (B/N, T): this rank's streams (all of them in one process)
                t_step = time.monotonic()
                lr = learning_rate(cfg, self.step, self.progress())
                for group in self.opt.param_groups:
                    group["lr"] = lr
                with autocast(self.device, self.dtype):
                    logits, state = self.net(x.long(), self.state)  # (B, T, V)
                loss = F.cross_entropy(logits.float().view(-1, V), y.long().view(-1))
                self.opt.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                self.scaler.step(self.opt)
                self.scaler.update()
                self._update_average()
                self.state = tuple(s.detach() for s in state)

                loss_value = loss.item()
                if self.world is not None:
                    loss_value = self._agree(loss_value)  # the mean over all streams, as one process sees it
                if not math.isfinite(loss_value):
                    self._fail_non_finite()
                self.step += 1
                self.window += 1
                self.tokens += x.numel() * self.nproc
                train_tokens += x.numel() * self.nproc
                train_time += time.monotonic() - t_step
                tokens_per_s = train_tokens / train_time

                event = Event(self.step, self.epoch_position(), loss_value, lr, tokens_per_s,
                              self.progress(), self.elapsed())
                finished = event.progress >= 1.0
                if finished or self._eval_due():
                    self._evaluate_and_save(event)
                if self.main:
                    self.report(event)
                if (self._signal if self.world is None else self._stop) is not None:
                    self._stop_on_signal()
                if finished:
                    break
            else:
                self.epoch += 1
                self.window = 0
                self.state = model.init_state(cfg.batch_size // self.nproc, self.device)  # a new epoch starts cold
        if self.step == 0 or not math.isfinite(self.last_val):
            event = Event(self.step, self.epoch_position(), loss_value, 0.0, tokens_per_s, 1.0, self.elapsed())
            self._evaluate_and_save(event)
            if self.main:
                self.report(event)
        return Outcome(self.step, self.best_val, self.last_val, self.elapsed(), self.tokens,
                       self.best_path, self.last_path, self.history)

    # -- weight averaging ---------------------------------------------------------------------

    def _update_average(self) -> None:
        """An exponential moving average of the weights; early on it forgets faster, so that the
        random initial weights do not linger in it."""
        if self.ema is not None:
            decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, self.params, 1.0 - decay)

    def raw_weights(self) -> list[torch.Tensor]:
        """The weights being trained: inside `averaged()`, the ones set aside."""
        return self._set_aside or self.params

    @contextmanager
    def averaged(self):
        """Evaluate and save the averaged weights; the trained ones come back afterwards."""
        if self.ema is None:
            yield
            return
        with torch.no_grad():
            self._set_aside = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.ema):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, self._set_aside):
                    p.copy_(w)
            self._set_aside = None

    def _agree(self, loss: float) -> float:
        """One all-reduce a step: the mean loss, rank 0's clock, and a signal that reached any rank.
        A non-finite loss anywhere makes the mean non-finite, so every rank stops on it together."""
        sig = self._signal
        mine = [loss / self.nproc, self.elapsed() if self.main else 0.0,
                float(sig == signal.SIGINT), float(sig is not None and sig != signal.SIGINT)]
        mean, self._clock, interrupts, others = distributed.all_sum(mine, self.world)
        if others:
            self._stop = int(signal.SIGTERM)
        elif interrupts:
            self._stop = int(signal.SIGINT)
        return mean

    def _evaluate_and_save(self, event: Event) -> None:
        with self.averaged():
            self._evaluate_and_save_now(event)

    def _evaluate_and_save_now(self, event: Event) -> None:
        t0 = time.monotonic()
        val = math.nan
        if self.main:  # distributed: validation runs once, on rank 0, with the unwrapped model
            val = evaluate(self.model, self.val_ids, self.device, self.dtype, seq_len=max(self.cfg.seq_len, 128))
            self.model.train()
        if self.world is not None:  # every rank keeps rank 0's books, so their decisions stay the same
            val, self._eval_cost, self._clock = distributed.broadcast([val, time.monotonic() - t0, self.elapsed()],
                                                                      self.world)
        self.last_val = val
        improved = val < self.best_val
        if improved:
            self.best_val = val
            if self.main:
                checkpoint.save(checkpoint.make(self.model, self.codec, self.train_info()), self.best_path)
        self._save_last()
        event.val_loss, event.best_val, event.saved = val, self.best_val, improved
        self._last_eval_end = self._now()
        if self.world is None:
            self._eval_cost = time.monotonic() - t0
        self.history.append(event)

    def _save_last(self) -> None:
        resume = self._resume_state()  # distributed: a collective, so on every rank
        if self.main:
            checkpoint.save(checkpoint.make(self.model, self.codec, self.train_info(), resume=resume), self.last_path)

    def _stop_on_signal(self) -> None:
        with self.averaged():
            self._save_last()
        raise Interrupted(self._signal if self.world is None else self._stop, self.step, self.last_path)

    def _fail_non_finite(self) -> None:
        kept = f"; the best checkpoint ({self.best_path}) is kept" if self.best_path.exists() else ""
        raise RnngenError(f"the loss became non-finite at step {self.step + 1}; lower --lr or --grad-clip{kept}")
