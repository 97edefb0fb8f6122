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

    Written for a cheap step on a CPU, where per-call overhead and weight traffic dominate:
    - layer 0's input projection is folded into a (V, G*H) table, so the embedding and the first
      input matmul become one row lookup;
    - each matmul is one `addmm` with its bias (for LSTM and RNN both biases are summed);
    - LSTM gate rows are reordered from (i, f, g, o) to (i, f, o, g), so one sigmoid covers three gates.
    `dtype` is the matmul dtype: bf16 is several times faster on CPUs with AMX/AVX512-BF16 at
    large batches; the cell state and the logits stay fp32.
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

        with torch.no_grad():
            for k in range(cfg.layers):
                w_ih, w_hh, b_ih, b_hh = (param(n, k) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                # GRU keeps b_hh apart: its candidate gate scales (W_hn h + b_hn) by r; elsewhere it is summed in.
                b_in = b_ih if cfg.cell == "gru" else b_ih + b_hh
                if k == 0:
                    table = model.embed.weight.detach().float() @ w_ih.T + b_in  # (V, G*H)
                    self.register_buffer("table", table.to(dtype))
                else:
                    self.register_buffer(f"w_ih{k}", w_ih.T.to(dtype).contiguous())  # (H, G*H)
                    self.register_buffer(f"b_ih{k}", b_in.to(dtype))
                self.register_buffer(f"w_hh{k}", w_hh.T.to(dtype).contiguous())  # (H, G*H)
                if cfg.cell == "gru":
                    self.register_buffer(f"b_hh{k}", b_hh.to(dtype))
            self.register_buffer("w_out", model.head.weight.detach().float().T.contiguous())  # (H, V)
            self.register_buffer("b_out", model.head.bias.detach().float().clone())

    def _weights(self) -> list[tuple]:
        """Per layer: (w_ih, b_ih, w_hh, b_hh); layer 0 has no w_ih/b_ih (the table), only GRU has b_hh."""
        return [(getattr(self, f"w_ih{k}", None), getattr(self, f"b_ih{k}", None),
                 getattr(self, f"w_hh{k}"), getattr(self, f"b_hh{k}", None)) for k in range(self.layers)]

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        """The export contract: state tensors are (L, B, H), as `RNNModel.init_state` makes them."""
        hs = list(state[0].unbind(0))
        cs = list(state[1].unbind(0)) if self.cell == "lstm" else []
        logits = self.step(tokens, hs, cs)
        return (logits, torch.stack(hs), torch.stack(cs)) if self.cell == "lstm" else (logits, torch.stack(hs))

    def step(self, tokens: torch.Tensor, hs: list[torch.Tensor], cs: list[torch.Tensor]) -> torch.Tensor:
        """Advance every row one token; `hs` and `cs` (per-layer (B, H) fp32) are replaced in place."""
        H, dt, cell = self.hidden, self.dtype, self.cell
        low = dt != torch.float32
        x = None
        for k, (w_ih, b_ih, w_hh, b_hh) in enumerate(self._weights()):
            h = hs[k]
            if k == 0:
                gi = self.table[tokens]  # (B, G*H)
            else:
                gi = torch.addmm(b_ih, x.to(dt) if low else x, w_ih)
            hd = h.to(dt) if low else h
            if cell == "lstm":
                ifo, g = torch.addmm(gi, hd, w_hh).split((3 * H, H), dim=1)  # (B, 3H), (B, H)
                i, f, o = ifo.sigmoid_().chunk(3, dim=1)  # in place: the gates are ours
                c = torch.addcmul(f * cs[k], i, g.tanh_())  # fp32: cs[k] is fp32
                h = o * c.tanh()
                cs[k] = c
            elif cell == "gru":
                gh = torch.addmm(b_hh, hd, w_hh)  # (B, 3H)
                r, z = (gi[:, : 2 * H] + gh[:, : 2 * H]).sigmoid().chunk(2, dim=1)
                n = torch.addcmul(gi[:, 2 * H :], r, gh[:, 2 * H :]).tanh()
                h = torch.addcmul(n, z, h - n).float()
            else:
                h = torch.addmm(gi, hd, w_hh).tanh().float()
            hs[k] = h
            x = h
        return torch.addmm(self.b_out, x, self.w_out)  # (B, V) fp32
