"""Batched sampling: run the prime once through the fused layer, copy its state to every row,
then step all rows together with the cheap explicit cell. Works for any codec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from rnngen.device import cpu_has_fast_bf16
from rnngen.model import RNNModel, StepModel

# mask(tokens[B] just sampled or None before the first) -> bool[B, V] of allowed next tokens.
Mask = Callable[[torch.Tensor | None], torch.Tensor]


def step_dtype(device: torch.device, batch: int) -> torch.dtype:
    """bf16 matmuls pay off from moderate batches on CPUs with AMX/AVX512-BF16."""
    if device.type == "cpu" and batch >= 16 and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def pick(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits[B, V]: greedy at temperature 0, else sampled after top-k/top-p."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p; the first always stays.
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


@torch.inference_mode()
def generate(model: RNNModel, prime: Sequence[int], length: int, batch: int = 1, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             device: torch.device | None = None, mask: Mask | None = None,
             stepper: StepModel | None = None) -> Iterator[torch.Tensor]:
    """Yield `length` steps of sampled tokens, each a (batch,) tensor on the model's device."""
    if not prime:
        raise ValueError("generate needs at least one prime token")
    device = device or next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    step = stepper or StepModel(model, step_dtype(device, batch)).to(device)

    tokens = torch.tensor([list(prime)], dtype=torch.long, device=device)  # (1, P)
    logits, state = model(tokens)  # (1, P, V)
    logits = logits[:, -1].expand(batch, -1)  # (B, V)
    state = tuple(s.expand(-1, batch, -1).contiguous() for s in state)  # (L, B, H) each
    last = None
    for i in range(length):
        if mask is not None:
            logits = logits.masked_fill(~mask(last), float("-inf"))
        last = pick(logits, temperature, top_k, top_p, generator)  # (B,)
        yield last
        if i + 1 < length:
            logits, *state = step(last, *state)


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
