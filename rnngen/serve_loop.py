"""Continuous batching for `rnngen serve`: one thread per model steps every request in flight together.

A request (a `Job`) joins between two steps: its prime runs once through the fused layer at batch 1,
as `generate` runs it, and its state columns are appended to the batch's. Each step then samples
every row at once and hands each job its rows' tokens; a job that is done (its length reached, its
stop strings or EOS met, its client gone) leaves before the next step and its columns are dropped.

A job's tokens are the ones `rnngen sample` gives for the same prime, seed and options, because
everything a row's draw depends on is its own: the job's `Sampler` holds a generator seeded as the
command seeds it and draws the same (64, rows, V) noise chunks; its grammar mask and top-k / top-p
filter see only its rows' logits, shaped as in the command; and the step runs at a padded width
(`sample.step_width`), at which a column's numbers do not depend on the others (exact in fp32;
one row alone runs unpadded, as `rnngen sample` runs one sample).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from rnngen.sample import Mask, Sampler, cat_states, pad_state, pick, prime_state, select_state, step_width


@dataclass(eq=False)
class Job:
    """One request's rows in a sampling loop: everything that is per request lives here.

    `take(tokens)` is called on the loop's thread after each step with the rows' new tokens (a list
    of `rows` ints) and returns True when the job is done; it must be quick. `end(error)` is called
    once when the job leaves: with None when it is done (its length reached, `take` said so, or it
    was cancelled), else with what went wrong, so that its client can be answered.
    """

    prime: Sequence[int]  # token ids the rows start from (at least one)
    rows: int
    length: int  # tokens to draw at most
    sampler: Sampler  # its own seeded generator and noise, as `rnngen sample -b rows` makes them
    take: Callable[[list[int]], bool]
    end: Callable[[str | None], None] = lambda error: None
    mask: Mask | None = None  # the grammar of a MIDI model, for these rows
    cancelled: bool = False  # set from any thread (a client that went away); seen at the next step
    drawn: int = field(default=0, init=False)
    last: torch.Tensor | None = field(default=None, init=False)  # (rows,) the last draw


class BatchLoop:
    """Steps every job in flight together on one thread; `submit` from any thread."""

    def __init__(self, model, step, device: torch.device, max_rows: int = 256):
        self.model, self.step, self.device, self.max_rows = model, step, device, max_rows
        self.jobs: list[Job] = []  # in flight, in column order
        self.waiting: list[Job] = []
        self.state = None  # the step's state: sum(job.rows) columns, padded to step_width
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="rnngen-batch", daemon=True)

    def start(self) -> BatchLoop:
        self.thread.start()
        return self

    def submit(self, job: Job) -> None:
        with self.cond:
            if self.stopping:
                job.end("the server is shutting down")
                return
            self.waiting.append(job)
            self.cond.notify()

    def stop(self) -> None:
        """End every job (waiting or in flight) at the next step and let the thread finish."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def rows(self) -> int:
        return sum(job.rows for job in self.jobs)

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while self._wait():
                    self._once()
        except Exception as e:  # noqa: BLE001 - every client hears of it; the thread ends
            self._end_all(f"sampling failed: {e}")
            raise
        self._end_all("the server is shutting down")

    def _wait(self) -> bool:
        """Block while there is nothing to do; False when the loop should end."""
        with self.cond:
            while not self.stopping and not self.jobs and not self.waiting:
                self.cond.wait()
            return not self.stopping

    def _end_all(self, error: str) -> None:
        with self.cond:
            self.stopping = True
            left, self.jobs, self.waiting = self.jobs + self.waiting, [], []
        for job in left:
            job.end(error)

    def _once(self) -> None:
        """One step: advance the jobs in flight, let waiting ones join, draw for all, drop the done."""
        logits = self._advance() + self._admit()  # per job, in column order: (rows, V) each
        filtered, noise = [], []
        for job, own in zip(self.jobs, logits):  # each shaped as in `rnngen sample -b rows`
            if job.mask is not None:
                own = own.masked_fill(~job.mask(job.last), float("-inf"))
            filtered.append(job.sampler.filter(own))
            noise.append(job.sampler.noise(own))
        if len(filtered) == 1:
            tokens = pick(filtered[0], noise[0])
        else:
            tokens = pick(torch.cat(filtered), torch.cat(noise))  # (B,)
        self._deliver(tokens)

    def _advance(self) -> list[torch.Tensor]:
        """Each in-flight job's logits (rows, V) after stepping its last tokens."""
        if not self.jobs:
            return []
        n = self.rows()
        tokens = torch.zeros(step_width(n), dtype=torch.long, device=self.device)  # (W,) idle columns 0
        tokens[:n] = torch.cat([job.last for job in self.jobs])
        logits = self.step.step(tokens, *self.state)[:n]  # (B, V)
        return list(torch.split(logits, [job.rows for job in self.jobs]))

    def _admit(self) -> list[torch.Tensor]:
        """Prime the waiting jobs that fit and append their columns; their first logits (rows, V)."""
        with self.cond:
            room, joining = self.max_rows - self.rows(), []
            while self.waiting and (self.waiting[0].rows <= room or not self.jobs and not joining):
                joining.append(self.waiting.pop(0))
                room -= joining[-1].rows
        if not joining:
            return []
        first, states = [], []
        for job in joining:
            logits, state = prime_state(self.model, self.step, job.prime, job.rows, self.device)
            first.append(logits)
            states.append(state)
        n = self.rows()
        if n:  # the in-flight columns without their padding
            states.insert(0, select_state(self.step, self.state, torch.arange(n, device=self.device)))
        self.jobs = self.jobs + joining
        self._set_state(cat_states(self.step, states))
        return first

    def _set_state(self, state) -> None:
        """The columns of the jobs in flight, padded to the width the step runs at."""
        n = self.rows()
        self.state = pad_state(self.step, state, step_width(n)) if step_width(n) > n else state

    def _deliver(self, tokens: torch.Tensor) -> None:
        """Hand each job its rows' tokens; the jobs that are done or whose client left, leave."""
        values = tokens.tolist()
        kept, keep, gone, start = [], [], [], 0
        for job in self.jobs:
            job.last = tokens[start : start + job.rows]  # (rows,)
            job.drawn += 1
            if job.cancelled or job.take(values[start : start + job.rows]) or job.drawn >= job.length:
                gone.append(job)
            else:
                kept.append(job)
                keep.extend(range(start, start + job.rows))
            start += job.rows
        if not gone:
            return
        self.jobs = kept
        if kept:
            self._set_state(select_state(self.step, self.state, torch.tensor(keep, device=self.device)))
        else:
            self.state = None
        for job in gone:
            job.end(None)
