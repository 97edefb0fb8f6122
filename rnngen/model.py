"""The one model: embedding -> LSTM/GRU/RNN -> linear head, for text and MIDI alike.

Contract (shared by every kind of data):
    forward(tokens[B, T], state=None) -> (logits[B, T, V], state)
    init_state(batch, device) -> state
A state is a tuple of (layers, B, hidden) tensors: (h, c) for LSTM, (h,) for GRU and RNN.

`StepModel` is the same network written as explicit cells for one time step, which is what
sampling and export need: on a CPU it is several times cheaper per step than calling the fused
layer on a length-1 sequence.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from rnngen.config import ModelConfig

State = tuple[torch.Tensor, ...]

_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout. On a CPU the mask comes from the 16-bit lanes of 64-bit random draws, so p is
    kept to 1/65536: torch's own dropout draws one random number per element (bernoulli_), which on a
    2-core CPU made its masks a large part of a bf16 training step (benchmarks/RESULTS.md)."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p)  # fused and fast on GPUs
    n = x.numel()
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None).view(torch.int16)[:n]
    keep = lanes.view(x.shape) >= round(p * 65536) - 32768  # P(keep) = 1 - round(p * 65536) / 65536
    return x * keep.to(x.dtype).mul_(1 / (1 - p))


@functools.cache
def _one_layer(cell: str, input_size: int, hidden: int) -> nn.Module:
    """A weightless one-layer shell (on the meta device) to run one layer of `RNNModel.rnn` through."""
    return _LAYERS[cell](input_size, hidden, 1, batch_first=True, device="meta")


class RNNModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.rnn = _LAYERS[cfg.cell](
            cfg.embed, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    @property
    def state_size(self) -> int:
        return 2 if self.cfg.cell == "lstm" else 1

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        shape = (self.cfg.layers, batch, self.cfg.hidden)
        return tuple(torch.zeros(shape, device=device) for _ in range(self.state_size))

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x = self.embed(tokens)  # (B, T, E)
        hx = None if state is None else (state if self.cfg.cell == "lstm" else state[0])
        out, hx = self._recur(x, hx)  # (B, T, H)
        logits = self.head(dropout(out, self.cfg.dropout, self.training))  # (B, T, V)
        return logits, (tuple(hx) if self.cfg.cell == "lstm" else (hx,))

    def _recur(self, x: torch.Tensor, hx):
        """The recurrent layers. Training adds weight drop, and on a CPU runs the layers one at a time
        so that the dropout between them is `dropout`'s cheap one (on a GPU, the layer's own is fast)."""
        cfg = self.cfg
        by_layer = x.device.type == "cpu" and cfg.dropout > 0 and cfg.layers > 1
        if not self.training or not (cfg.weight_drop or by_layer):
            return self.rnn(x, hx)
        weights = dict(self.rnn.named_parameters())
        if cfg.weight_drop:
            # Weight drop (DropConnect on the hidden-to-hidden matrices, as in AWD-LSTM): one mask per
            # training step, shared by every time step, so the fused layer still runs the whole window.
            weights = {n: dropout(w, cfg.weight_drop) if n.startswith("weight_hh") else w for n, w in weights.items()}
        if not by_layer:
            return torch.func.functional_call(self.rnn, weights, (x, hx))
        finals = []
        for k in range(cfg.layers):
            layer = {f"{n}_l0": weights[f"{n}_l{k}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            start = None if hx is None else tuple(s[k : k + 1] for s in hx) if cfg.cell == "lstm" else hx[k : k + 1]
            x, final = torch.func.functional_call(_one_layer(cfg.cell, x.size(-1), cfg.hidden), layer, (x, start))
            finals.append(final)
            if k + 1 < cfg.layers:
                x = dropout(x, cfg.dropout)
        if cfg.cell == "lstm":
            return x, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        return x, torch.cat(finals)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class StepModel(nn.Module):
    """One time step of an `RNNModel`: (tokens[B], *state) -> (logits[B, V], *state).

    Written for a cheap step on a CPU, where per-call overhead, weight traffic and element-wise
    passes dominate:
    - the state is kept transposed, one column per sample: every layer's input and h live stacked
      in one (E + L*H, B) buffer `hb`, rows [x | h_0 | h_1 | ...], so layer k's input and its own
      previous h are one slice of rows; with W_ih and W_hh side by side, a layer is one matmul
      W_k @ [x_k; h_k] (GRU keeps two, as r scales only the hidden part);
    - gates come out as (G*H, B), so each gate is a contiguous block of rows, which the element-wise
      kernels run several times faster on than on strided columns;
    - LSTM gate rows are reordered from (i, f, g, o) to (i, f, o, g), so one sigmoid covers three gates.
    `dtype` is the matmul dtype, and the buffer's: bf16 is several times faster on CPUs with
    AMX/AVX512-BF16 at large batches. Products become fp32 as the bias is added, so the gate
    arithmetic, the carried state (LSTM's c, GRU's h, both (H, B)) and the logits are fp32.
    """

    def __init__(self, model: RNNModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        cfg = model.cfg
        self.cell, self.layers, self.hidden, self.dtype = cfg.cell, cfg.layers, cfg.hidden, dtype
        self.embed_size = cfg.embed
        rnn, H = model.rnn, cfg.hidden
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])

        def param(name: str, k: int) -> torch.Tensor:
            p = getattr(rnn, f"{name}_l{k}").detach().float()
            return p[order] if cfg.cell == "lstm" else p  # rows are gates

        def keep(name: str, t: torch.Tensor, low: bool = False) -> None:
            self.register_buffer(name, (t.to(dtype) if low else t).contiguous())

        with torch.no_grad():
            keep("embed", model.embed.weight.detach().float().T)  # (E, V): columns are tokens
            for k in range(cfg.layers):
                w_ih, w_hh, b_ih, b_hh = (param(n, k) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                if cfg.cell == "gru":  # b_hh stays apart: the candidate gate scales (W_hn h + b_hn) by r
                    keep(f"w{k}", w_ih, low=True)  # (3H, in)
                    keep(f"u{k}", w_hh, low=True)  # (3H, H)
                    keep(f"b{k}", b_ih[:, None])
                    keep(f"bh{k}", b_hh[:, None])
                else:
                    keep(f"w{k}", torch.cat([w_ih, w_hh], dim=1), low=True)  # (G*H, in + H)
                    keep(f"b{k}", (b_ih + b_hh)[:, None])  # (G*H, 1)
            keep("w_out", model.head.weight.detach().float(), low=True)  # (V, H)
            keep("b_out", model.head.bias.detach().float()[:, None])

    def new_state(self, h: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(hb, carry) for `step` from (L, B, H) states: hb is the (E + L*H, B) buffer in the matmul
        dtype; carry, per layer (H, B) fp32, is LSTM's c, GRU's h, nothing for a plain RNN."""
        L, B, H = h.shape
        hb = h.new_zeros(self.embed_size + L * H, B, dtype=self.dtype)
        hb[self.embed_size :] = h.permute(0, 2, 1).reshape(L * H, B)
        carry = {"lstm": c, "gru": h, "rnn": None}[self.cell]
        return hb, [] if carry is None else [x.T.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
                                            for x in carry]

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        """The export contract: state tensors are (L, B, H), as `RNNModel.init_state` makes them."""
        hb, carry = self.new_state(*state)
        logits = self.step(tokens, hb, carry)
        if self.cell == "gru":
            h = torch.stack(carry).transpose(1, 2)  # the fp32 state, not its matmul copy
        else:
            h = hb[self.embed_size :].view(self.layers, self.hidden, -1).transpose(1, 2).float()
        return (logits, h, torch.stack(carry).transpose(1, 2)) if self.cell == "lstm" else (logits, h)

    def _affine(self, w: str, x: torch.Tensor, b: str) -> torch.Tensor:
        """W @ x + b in fp32 (W and x in the matmul dtype), a fresh tensor that is ours to change."""
        if self.dtype == torch.float32:
            return torch.addmm(getattr(self, b), getattr(self, w), x)
        return torch.mm(getattr(self, w), x).float().add_(getattr(self, b))

    def step(self, tokens: torch.Tensor, hb: torch.Tensor, carry: list[torch.Tensor]) -> torch.Tensor:
        """Advance every column one token: `hb` and `carry`'s tensors are updated in place."""
        E, H, cell = self.embed_size, self.hidden, self.cell
        hb[:E] = self.embed.index_select(1, tokens)  # x_0: the tokens' embeddings
        for k in range(self.layers):
            top = E + (k + 1) * H  # layer k reads rows [x_k | h_k] = [start, mid) + [mid, top)
            start, mid = (0 if k == 0 else top - 2 * H), top - H
            if cell == "lstm":
                gates = self._affine(f"w{k}", hb[start:top], f"b{k}")  # (4H, B)
                i, f, o = gates[: 3 * H].sigmoid_().chunk(3)
                c = carry[k].mul_(f).addcmul_(i, gates[3 * H :].tanh_())
                h = o * c.tanh()
            elif cell == "gru":
                gi = self._affine(f"w{k}", hb[start:mid], f"b{k}")  # (3H, B)
                gh = self._affine(f"u{k}", hb[mid:top], f"bh{k}")
                r, z = gi[: 2 * H].add_(gh[: 2 * H]).sigmoid_().chunk(2)
                n = gi[2 * H :].addcmul_(r, gh[2 * H :]).tanh_()
                h = carry[k].sub_(n).mul_(z).add_(n)  # n + z * (h - n)
            else:
                h = self._affine(f"w{k}", hb[start:top], f"b{k}").tanh_()
            hb[mid:top] = h
        return self._affine("w_out", hb[-H:], "b_out").T  # (B, V) fp32, a view of (V, B)
