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

from rnngen.sample import Mask, Sampler, cat_states, pad_state, pad_tags, pick, prime_state, select_state, step_width


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
    tags: list[int] | None = None  # a tagged model: each row's tag index, as `rnngen sample --tag` gives them
    cancelled: bool = False  # set from any thread (a client that went away); seen at the next step
    drawn: int = field(default=0, init=False)


class BatchLoop:
    """Steps every job in flight together on one thread; `submit` from any thread."""

    def __init__(self, model, step, device: torch.device, max_rows: int = 256):
        self.model, self.step, self.device, self.max_rows = model, step, device, max_rows
        self.jobs: list[Job] = []  # in flight, in column order (set by _set_jobs with what goes with them)
        self.starts: list[int] = []  # each job's first column
        self.n = 0  # rows in flight
        self.own_logits = False
        self.waiting: list[Job] = []
        self.state = None  # the step's state: sum(job.rows) columns, padded to step_width
        self.tokens = torch.zeros(0, dtype=torch.long, device=device)  # (W,) each column's last draw
        self.noise = torch.zeros(0, 0, 0, device=device)  # (chunk, B, V) each job's chunk of Gumbel noise
        self.phase = torch.zeros(0, dtype=torch.long, device=device)  # (B,) each column's step in its chunk
        self.columns = torch.zeros(0, dtype=torch.long, device=device)  # (B,) 0 .. B-1
        self.by_tag: tuple = ()  # a tagged model: ((W,) each column's tag,) for the step; idle columns 0
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
        """Rows in flight (read from any thread)."""
        return self.n

    def _set_jobs(self, jobs: list[Job]) -> None:
        """The jobs in flight, and what the step reads of them: column offsets, rows, whether any
        needs its own logits (a mask or a filter)."""
        self.jobs, self.starts, at = jobs, [], 0
        for job in jobs:
            self.starts.append(at)
            at += job.rows
        self.n = at
        self.own_logits = any(job.mask is not None or job.sampler.filters for job in jobs)

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
            left, self.waiting = self.jobs + self.waiting, []
            self._set_jobs([])
        for job in left:
            job.end(error)

    def _once(self) -> None:
        """One step: advance the jobs in flight, let waiting ones join, draw for all, drop the done."""
        stepped = self._advance()  # (n, V) for the jobs already in flight, or None
        first = self._admit()  # (rows, V) for each job that joined
        logits = [stepped] if stepped is not None else []
        logits = torch.cat(logits + first) if len(logits) + len(first) > 1 else (logits + first)[0]  # (B, V)
        jobs, starts = self.jobs, self.starts
        if self.own_logits:
            logits = torch.cat([self._filter(job, own, start) for job, own, start in
                                zip(jobs, torch.split(logits, [job.rows for job in jobs]), starts)])
        for job, start in zip(jobs, starts):
            if job.drawn % job.sampler.chunk == 0:  # its next chunk, drawn as `rnngen sample` draws it
                self.noise[:, start : start + job.rows] = job.sampler.refill(job.rows, logits.size(1), self.device)
                self.phase[start : start + job.rows] = 0
        tokens = pick(logits, self.noise[self.phase, self.columns])  # (B,): each row's noise at its own step
        self.phase += 1
        self.tokens[: len(tokens)] = tokens
        self._deliver(tokens.tolist())

    def _filter(self, job: Job, logits: torch.Tensor, start: int) -> torch.Tensor:
        """A job's logits (rows, V) after its mask and its top-k / top-p filter, shaped as in the command."""
        if job.mask is not None:
            last = self.tokens[start : start + job.rows] if job.drawn else None
            logits = logits.masked_fill(~job.mask(last), float("-inf"))
        return job.sampler.filter(logits)

    def _advance(self) -> torch.Tensor | None:
        """The in-flight rows' logits (n, V) after stepping their last tokens."""
        if not self.jobs:
            return None
        return self.step.step(self.tokens, *self.state, *self.by_tag)[: self.n]

    def _admit(self) -> list[torch.Tensor]:
        """Prime the waiting jobs that fit and append their columns; their first logits (rows, V)."""
        if not self.waiting:  # read without the lock: a job submitted now joins at the next step
            return []
        with self.cond:
            room, joining = self.max_rows - self.n, []
            while self.waiting and (self.waiting[0].rows <= room or not self.jobs and not joining):
                joining.append(self.waiting.pop(0))
                room -= joining[-1].rows
        if not joining:
            return []
        first, states = [], []
        for job in joining:
            tags = None if job.tags is None else torch.tensor(job.tags, dtype=torch.long, device=self.device)
            logits, state = prime_state(self.model, self.step, job.prime, job.rows, self.device, tags)
            first.append(logits)
            states.append(state)
        n, vocab = self.n, first[0].size(1)
        keep = torch.arange(n, device=self.device)
        if n:  # the in-flight columns without their padding
            states.insert(0, select_state(self.step, self.state, keep))
        self._set_jobs(self.jobs + joining)
        fresh = sum(job.rows for job in joining)
        noise = torch.empty(self.noise.size(0) if n else joining[0].sampler.chunk, fresh, vocab, device=self.device)
        self._set_state(cat_states(self.step, states), keep,
                        torch.cat([self.noise[:, :n], noise], dim=1) if n else noise)
        return first

    def _set_state(self, state, keep: torch.Tensor, noise: torch.Tensor | None = None) -> None:
        """The state of the in-flight columns (padded to the step's width) and their last tokens, noise
        chunks (chunk, B, V) and places in them; `keep` says which of the old columns stay, in order."""
        n = self.n
        width = step_width(n)
        self.state = pad_state(self.step, state, width) if width > n else state
        tokens = torch.zeros(width, dtype=torch.long, device=self.device)  # (W,) idle columns 0
        tokens[: len(keep)] = self.tokens[keep]
        phase = torch.zeros(n, dtype=torch.long, device=self.device)  # joining columns refill at once
        phase[: len(keep)] = self.phase[keep]
        self.tokens, self.phase = tokens, phase
        self.noise = noise if noise is not None else self.noise.index_select(1, keep)
        self.columns = torch.arange(n, device=self.device)
        if self.model.cfg.tags:
            tags = torch.tensor([t for job in self.jobs for t in job.tags], dtype=torch.long, device=self.device)
            self.by_tag = (pad_tags(tags, width),)

    def _deliver(self, values: list[int]) -> None:
        """Hand each job its rows' tokens; the jobs that are done or whose client left, leave."""
        kept, keep, gone, start = [], [], [], 0
        for job in self.jobs:
            job.drawn += 1
            if job.cancelled or job.take(values[start : start + job.rows]) or job.drawn >= job.length:
                gone.append(job)
            else:
                kept.append(job)
                keep.extend(range(start, start + job.rows))
            start += job.rows
        if not gone:
            return
        self._set_jobs(kept)
        if kept:
            index = torch.tensor(keep, device=self.device)
            self._set_state(select_state(self.step, self.state, index), index)
        else:
            self.state = None
        for job in gone:
            job.end(None)
