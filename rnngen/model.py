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

import torch
import torch.nn.functional as F
from torch import nn

from rnngen.config import ModelConfig

State = tuple[torch.Tensor, ...]

_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RNNModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.rnn = _LAYERS[cfg.cell](
            cfg.embed, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.drop = nn.Dropout(cfg.dropout)
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
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, (tuple(hx) if self.cfg.cell == "lstm" else (hx,))

    def _recur(self, x: torch.Tensor, hx):
        p = self.cfg.weight_drop
        if not (self.training and p):
            return self.rnn(x, hx)
        # Weight drop (DropConnect on the hidden-to-hidden matrices, as in AWD-LSTM): one mask per
        # training step, shared by every time step, so the fused layer still runs the whole window.
        dropped = {name: F.dropout(w, p) for name, w in self.rnn.named_parameters() if name.startswith("weight_hh")}
        return torch.func.functional_call(self.rnn, dropped, (x, hx))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class StepModel(nn.Module):
    """One time step of an `RNNModel`: (tokens[B], *state) -> (logits[B, V], *state).

    Written for a cheap step on a CPU, where per-call overhead and weight traffic dominate:
    - layer 0's input projection is folded into a (V, G*H) table, so the embedding and the first
      input matmul become one row lookup;
    - every layer's h lives side by side in one (B, L*H) buffer `hb`, so that layer k's input and
      its own previous h, [h_{k-1} | h_k], are one window of it: with W_ih and W_hh stacked, layer
      k >= 1 is one matmul, and each new h is written once, straight into its place (GRU keeps its
      two matmuls, as r scales only the hidden part);
    - LSTM gate rows are reordered from (i, f, g, o) to (i, f, o, g), so one sigmoid covers three gates.
    `dtype` is the matmul dtype, and the buffer's: bf16 is several times faster on CPUs with
    AMX/AVX512-BF16 at large batches. Products become fp32 as the bias is added; the gate arithmetic,
    the carried state (LSTM's c, GRU's h) and the logits stay fp32.
    """

    def __init__(self, model: RNNModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        cfg = model.cfg
        self.cell, self.layers, self.hidden, self.dtype = cfg.cell, cfg.layers, cfg.hidden, dtype
        rnn, H = model.rnn, cfg.hidden
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])

        def param(name: str, k: int) -> torch.Tensor:
            p = getattr(rnn, f"{name}_l{k}").detach().float()
            return p[order] if cfg.cell == "lstm" else p  # rows are gates

        def keep(name: str, t: torch.Tensor, low: bool = False) -> None:
            self.register_buffer(name, (t.to(dtype) if low else t).contiguous())

        with torch.no_grad():
            for k in range(cfg.layers):
                w_ih, w_hh, b_ih, b_hh = (param(n, k) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                # GRU keeps b_hh apart: its candidate gate scales (W_hn h + b_hn) by r; elsewhere it is summed in.
                b_in = b_ih if cfg.cell == "gru" else b_ih + b_hh
                if k == 0:
                    keep("table", model.embed.weight.detach().float() @ w_ih.T + b_in)  # (V, G*H)
                    keep("w0", w_hh.T, low=True)  # (H, G*H)
                elif cfg.cell == "gru":
                    keep(f"w{k}", w_ih.T, low=True)  # (H, G*H)
                    keep(f"u{k}", w_hh.T, low=True)
                else:
                    keep(f"w{k}", torch.cat([w_ih.T, w_hh.T]), low=True)  # (2H, G*H): [h_{k-1} | h_k] @ it
                if k > 0:
                    keep(f"b{k}", b_in)
                if cfg.cell == "gru":
                    keep(f"bh{k}", b_hh)
            keep("w_out", model.head.weight.detach().float().T)  # (H, V)
            keep("b_out", model.head.bias.detach().float())

    def new_state(self, h: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(hb, carry) for `step` from (L, B, H) states: hb (B, L*H) in the matmul dtype; carry, per layer
        (B, H) fp32, is LSTM's c, GRU's h, nothing for a plain RNN."""
        hb = h.permute(1, 0, 2).reshape(h.size(1), -1).to(self.dtype, copy=True)
        carry = {"lstm": c, "gru": h, "rnn": None}[self.cell]
        return hb, [] if carry is None else [x.float().clone() for x in carry.unbind(0)]

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        """The export contract: state tensors are (L, B, H), as `RNNModel.init_state` makes them."""
        hb, carry = self.new_state(*state)
        logits = self.step(tokens, hb, carry)
        if self.cell == "gru":
            h = torch.stack(carry)  # the fp32 state, not its matmul copy
        else:
            h = hb.view(hb.size(0), self.layers, self.hidden).permute(1, 0, 2).float()
        return (logits, h, torch.stack(carry)) if self.cell == "lstm" else (logits, h)

    def _mm(self, x: torch.Tensor, w: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        """acc + x @ w in fp32 (x and w in the matmul dtype)."""
        if self.dtype == torch.float32:
            return torch.addmm(acc, x, w)
        return torch.add(acc, torch.mm(x, w))

    def step(self, tokens: torch.Tensor, hb: torch.Tensor, carry: list[torch.Tensor]) -> torch.Tensor:
        """Advance every row one token: `hb` is updated in place and `carry`'s tensors are replaced."""
        H, cell = self.hidden, self.cell
        h = None
        for k in range(self.layers):
            window = hb[:, : H] if k == 0 else hb[:, (k - 1) * H : (k + 1) * H]  # [h_{k-1} new | h_k old]
            acc = self.table.index_select(0, tokens) if k == 0 else getattr(self, f"b{k}")
            if cell == "lstm":
                gates = self._mm(window, getattr(self, f"w{k}"), acc)  # (B, 4H) fp32, ours to change in place
                i, f, o = gates[:, : 3 * H].sigmoid_().chunk(3, dim=1)
                c = torch.addcmul(f * carry[k], i, gates[:, 3 * H :].tanh_())
                h = o * c.tanh()
                carry[k] = c
            elif cell == "gru":
                gi = acc if k == 0 else self._mm(window[:, :H], getattr(self, f"w{k}"), acc)  # (B, 3H)
                gh = self._mm(window[:, -H:], getattr(self, f"u{k}" if k else "w0"), getattr(self, f"bh{k}"))
                r, z = (gi[:, : 2 * H] + gh[:, : 2 * H]).sigmoid_().chunk(2, dim=1)
                n = torch.addcmul(gi[:, 2 * H :], r, gh[:, 2 * H :]).tanh_()
                h = torch.addcmul(n, z, carry[k] - n)
                carry[k] = h
            else:
                h = self._mm(window, getattr(self, f"w{k}"), acc).tanh_()
            hb[:, k * H : (k + 1) * H] = h
        return torch.addmm(self.b_out, h, self.w_out)  # (B, V) fp32
