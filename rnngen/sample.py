"""Batched sampling: run the prime once through the fused layer, copy its state to every row,
then step all rows together with the cheap explicit cell. Works for any codec.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from rnngen import step_int8
from rnngen.device import cpu_has_fast_bf16
from rnngen.errors import RnngenError
from rnngen.model import RNNModel, StepModel, int8_fits

# mask(tokens[B] just sampled or None before the first) -> bool[B, V] of allowed next tokens.
Mask = Callable[[torch.Tensor | None], torch.Tensor]


PRECISIONS = ("auto", *StepModel.PRECISIONS)


def step_precision(name: str, device: torch.device, model: RNNModel, batch: int) -> str:
    """The sampler's matmul precision for `--precision` (see `make_step`). `auto` takes the fastest
    one measured within 0.001 nats of fp32 on the shipped models, on CPUs that do bf16 in hardware: int8
    where the model's sizes allow it (and for a batch, where PyTorch has oneDNN's int8 matmul),
    else bf16; fp32 elsewhere."""
    if name == "auto":
        if device.type != "cpu" or not cpu_has_fast_bf16():
            return "fp32"
        return "int8" if int8_fits(model.cfg) and (batch == 1 or step_int8.available()) else "bf16"
    if name not in PRECISIONS:
        raise RnngenError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    if name == "int8" and device.type != "cpu":
        raise RnngenError("--precision int8 is for sampling on a CPU; use bf16 or fp32 on a GPU")
    if name == "int8" and not int8_fits(model.cfg):
        raise RnngenError("--precision int8 needs the embedding and hidden sizes to be multiples of 16 "
                          f"(this model: {model.cfg.embed} and {model.cfg.hidden}); use bf16 or fp32")
    return name


def make_step(model: RNNModel, precision: str, batch: int, device: torch.device) -> StepModel | step_int8.Int8Step:
    """The step for a resolved precision: int8 is `StepModel`'s int8 weights with bf16 activations
    for one sample, and `Int8Step` (int8 activations too) for a batch of an untagged model, the faster
    of the two there."""
    if precision == "int8" and batch > 1 and step_int8.available() and not model.cfg.tags:
        return step_int8.Int8Step(model)
    return StepModel(model, precision).to(device)


class Sampler:
    """Picks one token per row of logits[n, V]: greedy at temperature 0, else a draw from
    softmax(logits / temperature) restricted to the top-k / top-p set.

    Draws use the Gumbel-max trick, argmax(logits - temperature * log(E)) with E = -log(U) ~ Exp(1),
    which is an exact sample from that softmax. The noise is made `chunk` steps at a time from the
    seeded generator and scaled by the temperature then, so a step costs one subtraction and a max.

    A row's draw depends only on its own logits and noise, and the subtraction is exact in any
    layout, so `rnngen serve` can gather many samplers' `noise` into one batch and `pick` once:
    each request gets the tokens that this sampler alone would give (rnngen/serve_loop.py).
    """

    def __init__(self, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, chunk: int = 64):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generator, self.chunk = generator, chunk
        self.buffer: torch.Tensor | None = None  # (chunk, n, V): temperature * log(E)
        self.used = chunk

    def refill(self, rows: int, vocab: int, device: torch.device | None = None) -> torch.Tensor:
        """The next `chunk` steps of noise for (rows, vocab) logits, times the temperature: (chunk, rows,
        vocab), zeros at temperature 0. `noise` hands it out a step at a time; a server copies it whole."""
        if self.buffer is None or self.buffer.shape[1:] != (rows, vocab):
            self.buffer = torch.empty((self.chunk, rows, vocab), device=device)  # (chunk, n, V)
            if self.temperature == 0:
                self.buffer.zero_()
        if self.temperature != 0:  # refilled in place: a fresh buffer of this size costs page faults
            # uniform_ is several times faster than exponential_ on a CPU; U stays inside (0, 1).
            self.buffer.uniform_(generator=self.generator).clamp_(1e-30, 1 - 2**-24).log_().neg_().log_()
            self.buffer.mul_(self.temperature)
        self.used = 0
        return self.buffer

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """This step's noise for logits shaped like `like` (n, V), already times the temperature."""
        if self.used == self.chunk or self.buffer is None or self.buffer.shape[1:] != like.shape:
            self.refill(*like.shape, device=like.device)
        self.used += 1
        return self.buffer[self.used - 1]

    @property
    def filters(self) -> bool:
        """Whether `filter` can change anything."""
        return self.temperature != 0 and (self.top_k is not None or (self.top_p is not None and self.top_p < 1.0))

    def filter(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits with tokens outside the top-k / top-p set at -inf (unchanged at temperature 0)."""
        if self.temperature == 0:
            return logits
        if self.top_k is not None and self.top_k < logits.size(-1):
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]  # (n, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            logits = _nucleus(logits, self.top_p, self.temperature)
        return logits

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return logits.max(dim=-1).indices  # (n,); max is several times faster than argmax here
        return pick(self.filter(logits), self.noise(logits))


def pick(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(B,) the Gumbel-max draw of each row from logits[B, V] and its scaled noise[B, V]."""
    return torch.sub(logits.float(), noise).max(dim=-1).indices


# BLAS picks its matmul kernel by the number of columns, and kernels add up in different orders: on
# the AVX2 machine (MKL) a column's fp32 result was the same bit for bit at every width from 12 up,
# but 1, 2-4 and 8, 5, 6 and 10, and 7, 9 and 11 columns each gave their own last bits. Element-wise
# kernels also round the tail past the last full vector differently. So a batch steps at a multiple of
# STEP_COLUMNS columns (idle ones padding it), and a row's numbers are the same whatever shares its
# batch: `rnngen sample -b 5` and `rnngen serve` with five or fifty rows in flight agree exactly.
STEP_COLUMNS = 16


def step_width(batch: int) -> int:
    """The columns a step runs for `batch` rows: one row alone as it is (the fastest for one sample),
    else rounded up to a multiple of STEP_COLUMNS."""
    return batch if batch == 1 else -(-batch // STEP_COLUMNS) * STEP_COLUMNS


def _nucleus(logits: torch.Tensor, top_p: float, temperature: float) -> torch.Tensor:
    """Keep the likeliest tokens whose probabilities (at this temperature) first reach top_p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float() / temperature, dim=-1)
    # Drop a token when the tokens ranked above it already cover top_p; the first always stays.
    drop = (probs.cumsum(dim=-1) - probs) >= top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


# oneDNN's fused LSTM costs milliseconds to set up on every call, which a short prime does not earn
# back: PyTorch's own kernel ran the shipped model's prime of 1 token in 0.7-2 ms against 5-8, of 20 in
# 3.3 against 7.2, of 300 about even, and of 3000 in 429 against 331 ms.
ONEDNN_PRIME_FROM = 256


@contextlib.contextmanager
def _prime_kernel(length: int, device: torch.device) -> Iterator[None]:
    """Runs a prime shorter than ONEDNN_PRIME_FROM on a CPU without oneDNN; anything else as usual."""
    if device.type != "cpu" or length >= ONEDNN_PRIME_FROM or not torch.backends.mkldnn.enabled:
        yield
        return
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True


@torch.inference_mode()
def generate(model: RNNModel, prime: Sequence[int], length: int, batch: int = 1, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             device: torch.device | None = None, mask: Mask | None = None,
             stepper: StepModel | step_int8.Int8Step | None = None, precision: str = "auto",
             tags: Sequence[int] | None = None) -> Iterator[torch.Tensor]:
    """Yield `length` steps of sampled tokens, each a (batch,) tensor on the model's device.

    The prime runs once through the fused layer; its state is copied to every row; then all rows
    step together (at `step_width(batch)` columns). A tagged model takes each row's tag index in
    `tags`; the prime then runs once per distinct tag.
    """
    if not prime:
        raise ValueError("generate needs at least one prime token")
    device = device or next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sampler = Sampler(temperature, top_k, top_p, generator)
    step = stepper or make_step(model, step_precision(precision, device, model, batch), batch, device)
    row_tags = None if tags is None else torch.tensor(list(tags), dtype=torch.long, device=device)  # (B,)

    logits, state = prime_state(model, step, prime, batch, device, row_tags)
    width = step_width(batch)
    if width > batch:  # idle columns, so that each row's numbers do not depend on the batch size
        state = pad_state(step, state, width)
    hb, carry = state
    tokens = torch.zeros(width, dtype=torch.long, device=device)  # (W,) the last draw, idle columns 0
    by_tag = () if row_tags is None else (pad_tags(row_tags, width),)  # a tagged model's steps take the rows' tags
    last = None
    for i in range(length):
        if mask is not None:
            logits = logits.masked_fill(~mask(last), float("-inf"))
        last = sampler(logits)  # (B,)
        yield last
        if i + 1 < length:
            tokens[:batch] = last
            logits = step.step(tokens, hb, carry, *by_tag)[:batch]


def prime_state(model: RNNModel, step, prime: Sequence[int], rows: int, device: torch.device,
                tags: torch.Tensor | None = None):
    """Run the prime once through the fused layer (for a tagged model, once for each distinct tag of
    `tags`, each row's tag index): (logits[rows, V] for the first draw, and the step's state with the
    prime's state in each of `rows` columns)."""
    tokens = torch.tensor([list(prime)], dtype=torch.long, device=device)  # (1, P)
    if tags is None:
        with _prime_kernel(len(prime), device):
            logits, state = model(tokens)  # (1, P, V)
        return logits[:, -1].float().expand(rows, -1), step.new_state(*(s.expand(-1, rows, -1) for s in state))
    distinct, which = torch.unique(tags, return_inverse=True)  # (D,), (rows,)
    with _prime_kernel(len(prime), device):
        logits, state = model(tokens.expand(len(distinct), -1), tags=distinct)  # (D, P, V)
    return logits[:, -1].float()[which], step.new_state(*(s[:, which] for s in state))


def pad_tags(tags: torch.Tensor, width: int) -> torch.Tensor:
    """Each column's tag (W,): the rows' own, then tag 0 for the idle columns."""
    return torch.cat([tags, tags.new_zeros(width - len(tags))]) if width > len(tags) else tags


# A step's state is (hb, carry): hb a tensor (StepModel) or a list of them (Int8Step), carry a list.
# Which dimension holds the samples is the step's `batch_dim`: StepModel keeps them as columns.
State = tuple


def _tensors(state: State) -> list[torch.Tensor]:
    hb, carry = state
    return [*(hb if isinstance(hb, list) else [hb]), *carry]


def _rebuild(like: State, tensors: list[torch.Tensor]) -> State:
    hb, carry = like
    n = len(hb) if isinstance(hb, list) else 1
    return (tensors[:n] if isinstance(hb, list) else tensors[0]), tensors[n:]


def pad_state(step, state: State, width: int) -> State:
    """The state with idle zero samples added up to `width`."""
    dim = getattr(step, "batch_dim", -1)
    grow = lambda t: torch.cat([t, t.new_zeros(_resized(t, dim, width - t.size(dim)))], dim=dim)  # noqa: E731
    return _rebuild(state, [grow(t) for t in _tensors(state)])


def select_state(step, state: State, index: torch.Tensor) -> State:
    """The samples `index` (a long tensor) of the state, in that order: copies the step may change."""
    dim = getattr(step, "batch_dim", -1)
    return _rebuild(state, [t.index_select(dim, index) for t in _tensors(state)])


def cat_states(step, states: Sequence[State]) -> State:
    """The samples of several states side by side, as one state."""
    dim = getattr(step, "batch_dim", -1)
    return _rebuild(states[0], [torch.cat(ts, dim=dim) for ts in zip(*(_tensors(s) for s in states))])


def _resized(t: torch.Tensor, dim: int, size: int) -> list[int]:
    shape = list(t.shape)
    shape[dim] = size
    return shape


class StopScanner:
    """Holds back just enough text to find stop strings that arrive one character at a time."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is safe to emit now; sets `stopped` at the first stop string (not emitted)."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops]
        hits = [h for h in hits if h >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        cut = len(self.pending) - self.keep
        if cut <= 0:
            return ""
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
