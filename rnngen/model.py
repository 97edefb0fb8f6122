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
        out, hx = self.rnn(x, hx)  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, (tuple(hx) if self.cfg.cell == "lstm" else (hx,))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class StepModel(nn.Module):
    """One time step of an `RNNModel`: (tokens[B], *state) -> (logits[B, V], *state).

    Layer 0's input projection is folded into a (V, gates*H) table, so the embedding and the
    first input matmul become one row lookup. `dtype` is the matmul dtype (bf16 is several times
    faster on CPUs with AMX/AVX512-BF16); gate arithmetic and the state stay in fp32.
    """

    def __init__(self, model: RNNModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        cfg = model.cfg
        self.cell, self.layers, self.hidden = cfg.cell, cfg.layers, cfg.hidden
        rnn = model.rnn
        with torch.no_grad():
            w0, b_ih0, b_hh0 = rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
            table = model.embed.weight @ w0.T + b_ih0  # (V, G*H)
            if cfg.cell != "gru":  # GRU keeps b_hh apart: its candidate gate scales it by r
                table = table + b_hh0
            self.register_buffer("table", table.float().clone())
            for k in range(cfg.layers):
                w_hh, b_hh = getattr(rnn, f"weight_hh_l{k}"), getattr(rnn, f"bias_hh_l{k}")
                self.register_buffer(f"w_hh{k}", w_hh.T.to(dtype).contiguous())  # (H, G*H)
                self.register_buffer(f"b_hh{k}", b_hh.float().clone())
                if k > 0:
                    w_ih, b_ih = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"bias_ih_l{k}")
                    self.register_buffer(f"w_ih{k}", w_ih.T.to(dtype).contiguous())  # (H, G*H)
                    self.register_buffer(f"b_ih{k}", b_ih.float().clone())
            self.register_buffer("w_out", model.head.weight.T.to(dtype).contiguous())  # (H, V)
            self.register_buffer("b_out", model.head.bias.float().clone())
        self.dtype = dtype

    def _mm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (x.to(self.dtype) @ w).float()

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        h_all = state[0]  # (L, B, H)
        c_all = state[1] if self.cell == "lstm" else None
        new_h, new_c = [], []
        x = None
        for k in range(self.layers):
            h = h_all[k]  # (B, H)
            gi = self.table[tokens] if k == 0 else self._mm(x, getattr(self, f"w_ih{k}")) + getattr(self, f"b_ih{k}")
            gh = self._mm(h, getattr(self, f"w_hh{k}"))  # (B, G*H)
            if k > 0 or self.cell == "gru":  # elsewhere layer 0's b_hh is folded into the table
                gh = gh + getattr(self, f"b_hh{k}")
            if self.cell == "lstm":
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * c_all[k] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            elif self.cell == "gru":
                ir, iz, in_ = gi.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                h = n + z * (h - n)
            else:
                h = torch.tanh(gi + gh)
            new_h.append(h)
            x = h
        logits = self._mm(x, self.w_out) + self.b_out  # (B, V)
        if self.cell == "lstm":
            return logits, torch.stack(new_h), torch.stack(new_c)
        return logits, torch.stack(new_h)
