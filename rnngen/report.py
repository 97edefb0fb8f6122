"""Training progress on stderr: a live rich bar on a terminal, plain periodic lines elsewhere,
and an optional JSON-lines metrics log."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from rnngen.config import format_duration
from rnngen.train_parts import Event

LN2 = math.log(2)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def eta(event: Event) -> str:
    if event.progress <= 0:
        return "?"
    return format_duration(event.elapsed * (1 - event.progress) / event.progress)


def describe(event: Event, unit: str) -> str:
    parts = [f"step {event.step}", f"epoch {event.epoch:.2f}",
             f"loss {event.loss:.3f} ({event.loss / LN2:.3f} bits/{unit})"]
    if event.val_loss is not None:
        parts.append(f"val {event.val_loss:.3f}" + (" (best, saved)" if event.saved else f" (best {event.best_val:.3f})"))
    parts += [f"{event.tokens_per_s:,.0f} {unit}s/s", f"lr {event.lr:.1e}",
              f"{format_duration(event.elapsed)} elapsed, ETA {eta(event)}"]
    return " | ".join(parts)


class Reporter:
    """Callable the trainer calls after every step."""

    def __init__(self, unit: str = "char", quiet: bool = False, log: Path | None = None,
                 every: float = 10.0, stream: TextIO | None = None, append: bool = True):
        self.unit, self.quiet, self.every = unit, quiet, every
        self.stream = stream or sys.stderr
        self.console = stderr_console()
        self.live = not quiet and self.console.is_terminal and stream is None
        self.log = open(log, "a" if append else "w", encoding="utf-8") if log else None  # append: a resumed run
        self.last_line = 0.0
        self.val = "-"
        self.progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("step {task.fields[step]}"), TextColumn("loss {task.fields[loss]}"),
                TextColumn("val {task.fields[val]}"), TextColumn("{task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console, redirect_stdout=False, redirect_stderr=False, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=1.0, step=0, loss="-", val="-", rate="-", eta="?")
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.log:
            self.log.close()

    def __call__(self, event: Event) -> None:
        if self.log:
            record = {"step": event.step, "epoch": round(event.epoch, 4), "loss": event.loss,
                      "lr": event.lr, "tokens_per_s": round(event.tokens_per_s, 1),
                      "elapsed": round(event.elapsed, 3)}
            if event.val_loss is not None:
                record["val_loss"] = event.val_loss
            self.log.write(json.dumps(record) + "\n")
        if self.quiet:
            return
        if event.val_loss is not None:
            self.val = f"{event.val_loss:.3f}"
        if self.progress is not None:
            self.progress.update(
                self.task, completed=event.progress, step=event.step,
                loss=f"{event.loss:.3f} ({event.loss / LN2:.2f} bits)", val=self.val,
                rate=f"{event.tokens_per_s:,.0f} {self.unit}s/s", eta=eta(event),
            )
            if event.val_loss is not None:
                self.progress.console.print(describe(event, self.unit), markup=False, soft_wrap=True)
            return
        now = time.monotonic()
        if event.val_loss is not None or now - self.last_line >= self.every:
            self.last_line = now
            print(describe(event, self.unit), file=self.stream, flush=True)

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, soft_wrap=True)
