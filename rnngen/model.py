"""The one model: embedding -> LSTM/GRU/RNN -> linear head, for text and MIDI alike.

Contract (shared by every kind of data):
    forward(tokens[B, T], state=None, tags=None) -> (logits[B, T, V], state)
    init_state(batch, device) -> state
A state is a tuple of (layers, B, hidden) tensors: (h, c) for LSTM, (h,) for GRU and RNN.

A tagged model (cfg.tags, rnngen/tags.py) also takes the style of every position, tags[B, T] (or
tags[B], one per row): a learned tag vector is added to each input embedding, at every step, so
the style cannot fade as a sample grows long. An untagged model has no such table and no extra work.

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
        if cfg.tags:
            self.tag_embed = nn.Embedding(len(cfg.tags), cfg.embed)
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

    def forward(self, tokens: torch.Tensor, state: State | None = None,
                tags: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        x = self.embed(tokens)  # (B, T, E)
        if self.training and self.cfg.embed_dropout:  # drop whole tokens: one mask value per position
            x = x * dropout(x.new_ones(*x.shape[:-1], 1), self.cfg.embed_dropout)
        if self.cfg.tags:  # after the token dropout: a dropped token still has its style
            if tags is None:
                raise ValueError("a tagged model needs the tag of every row")
            x = x + self.tag_embed(tags.long() if tags.dim() == 2 else tags.long()[:, None])  # (B, T|1, E)
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


def lstm_gate_order(hidden: int) -> torch.Tensor:
    """Row order that takes an LSTM's gates from torch's (i, f, g, o) to (i, f, o, g), so that one
    sigmoid covers three gates."""
    H = hidden
    return torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])


def quantize_rows(*parts: torch.Tensor, scale_dtype: torch.dtype = torch.float32,
                  rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, scale per row) of the fp32 matrices `parts` side by side, (N, sum K), with its rows
    in the order `rows` if given: each row scaled to use the range -127..127, rounded against the
    scale as stored in `scale_dtype`.

    Every sampling run starts with it, so it is written for speed: a fresh large tensor costs its page
    faults (milliseconds for a layer's weights), so the rows go through one small reused buffer rather
    than whole-matrix temporaries (a layer of a 2 x 512 LSTM in 1.6 ms, against 25 ms with them)."""
    N = parts[0].shape[0]
    peak = parts[0].new_zeros(N)  # each row's largest magnitude
    for p in parts:
        torch.maximum(peak, p.amax(dim=1), out=peak)
        torch.maximum(peak, p.amin(dim=1).neg_(), out=peak)
    scale = peak.div_(127).clamp_min_(1e-30).to(scale_dtype)
    if rows is not None:
        scale = scale[rows]
    divisor = scale.float()[:, None]
    q = torch.empty(N, sum(p.shape[1] for p in parts), dtype=torch.int8)
    block = 256
    buffer = torch.empty(block * max(p.shape[1] for p in parts))
    col = 0
    for p in parts:
        K = p.shape[1]
        for r in range(0, N, block):
            x = buffer[: min(block, N - r) * K].view(-1, K)
            if rows is None:
                torch.div(p[r : r + block], divisor[r : r + block], out=x)
            else:
                torch.index_select(p, 0, rows[r : r + block], out=x).div_(divisor[r : r + block])
            q[r : r + block, col : col + K] = x.round_().clamp_(-127, 127)
        col += K
    return q, scale


def int8_fits(cfg: ModelConfig) -> bool:
    """Whether `StepModel` can run in int8 here: the kernel (a private PyTorch op) wants rows whose
    length is a multiple of 16."""
    return hasattr(torch, "_weight_int8pack_mm") and cfg.embed % 16 == 0 and cfg.hidden % 16 == 0


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
    `precision` is how the matmuls run: "fp32"; "bf16", several times faster than fp32 on CPUs with
    AMX/AVX512-BF16; or "int8", bf16 products with the layers' weights stored as int8 rows with a
    scale each, which moves half the bytes of bf16 and is the fastest for one sample on those CPUs
    (and measured no worse on the shipped model: benchmarks/RESULTS.md). The buffer `hb` is fp32 or
    bf16. Products become fp32 as the bias is added, so the gate arithmetic, the carried state (LSTM's
    c, GRU's h, both (H, B)), the output layer and the logits are fp32.
    """

    PRECISIONS = ("fp32", "bf16", "int8")
    batch_dim = -1  # the state keeps one sample per column

    def __init__(self, model: RNNModel, precision: str = "fp32"):
        super().__init__()
        cfg = model.cfg
        if precision not in self.PRECISIONS:
            raise ValueError(f"unknown step precision {precision!r}")
        if precision == "int8" and not int8_fits(cfg):
            raise ValueError("int8 steps need the embedding and hidden sizes to be multiples of 16")
        self.cell, self.layers, self.hidden, self.precision = cfg.cell, cfg.layers, cfg.hidden, precision
        self.dtype = torch.float32 if precision == "fp32" else torch.bfloat16  # of hb and the products
        self.embed_size, self.tagged = cfg.embed, bool(cfg.tags)
        rnn = model.rnn
        rows = lstm_gate_order(cfg.hidden) if cfg.cell == "lstm" else None  # rows are gates

        def param(name: str, k: int) -> torch.Tensor:
            return getattr(rnn, f"{name}_l{k}").detach().float()

        def keep(name: str, t: torch.Tensor) -> None:
            self.register_buffer(name, t.contiguous())

        def keep_weight(name: str, *parts: torch.Tensor) -> None:
            """The matrices side by side, rows in gate order."""
            if precision == "int8":
                # bf16 scales, as the kernel takes them
                q, scale = quantize_rows(*parts, scale_dtype=torch.bfloat16, rows=rows)
                keep(name, q)
                keep(f"{name}_scale", scale)
            else:
                w = torch.cat(parts, dim=1).to(self.dtype)
                keep(name, w if rows is None else w[rows])

        with torch.no_grad():
            keep("embed", model.embed.weight.detach().T.to(self.dtype, copy=True))  # (E, V): columns are tokens
            for k in range(cfg.layers):
                w_ih, w_hh, b_ih, b_hh = (param(n, k) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                if cfg.cell == "gru":  # b_hh stays apart: the candidate gate scales (W_hn h + b_hn) by r
                    keep_weight(f"w{k}", w_ih)  # (3H, in)
                    keep_weight(f"u{k}", w_hh)  # (3H, H)
                    keep(f"b{k}", b_ih[:, None])
                    keep(f"bh{k}", b_hh[:, None])
                else:
                    keep_weight(f"w{k}", w_ih, w_hh)  # (G*H, in + H)
                    b = b_ih + b_hh
                    keep(f"b{k}", (b if rows is None else b[rows])[:, None])  # (G*H, 1)
            if self.tagged:
                keep("tag_embed", model.tag_embed.weight.detach().T.to(self.dtype, copy=True))  # (E, K)
            keep("w_out", model.head.weight.detach().float())  # (V, H)
            if self.dtype != torch.float32:  # for large batches, where a bf16 product is the faster one
                keep("w_out_low", model.head.weight.detach().to(self.dtype))
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

    def forward(self, tokens: torch.Tensor, *inputs: torch.Tensor):
        """The export contract: (tokens[B], tags[B] for a tagged model only, *state), the state tensors
        (L, B, H) as `RNNModel.init_state` makes them."""
        tags, state = (inputs[0], inputs[1:]) if self.tagged else (None, inputs)
        hb, carry = self.new_state(*state)
        logits = self.step(tokens, hb, carry, tags)
        if self.cell == "gru":
            h = torch.stack(carry).transpose(1, 2)  # the fp32 state, not its matmul copy
        else:
            h = hb[self.embed_size :].view(self.layers, self.hidden, -1).transpose(1, 2).float()
        return (logits, h, torch.stack(carry).transpose(1, 2)) if self.cell == "lstm" else (logits, h)

    def _affine(self, w: str, x: torch.Tensor, b: str) -> torch.Tensor:
        """W @ x + b in fp32 (x in the buffer's dtype), a fresh tensor that is ours to change."""
        buffers = self._buffers
        weight, bias = buffers[w], buffers[b]
        if self.precision == "fp32":
            return torch.addmm(bias, weight, x)
        if self.precision == "int8":  # (B, K) @ int8 (N, K).T, scaled per row of the weight
            y = torch._weight_int8pack_mm(x.T.contiguous(), weight, buffers[f"{w}_scale"])  # (B, N) bf16
            return y.T.to(torch.float32, memory_format=torch.contiguous_format).add_(bias)
        if x.size(1) == 1:  # one sample: a bf16 matrix-vector product is faster than a 1-column mm
            return torch.mv(weight, x.view(-1)).float().add_(bias.view(-1)).view(-1, 1)
        return torch.mm(weight, x).float().add_(bias)

    def step(self, tokens: torch.Tensor, hb: torch.Tensor, carry: list[torch.Tensor],
             tags: torch.Tensor | None = None) -> torch.Tensor:
        """Advance every column one token (of a tagged model, in the style tags[B]): `hb` and
        `carry`'s tensors are updated in place."""
        E, H, cell = self.embed_size, self.hidden, self.cell
        torch.index_select(self.embed, 1, tokens, out=hb[:E])  # x_0: the tokens' embeddings
        if self.tagged:
            hb[:E] += self.tag_embed.index_select(1, tags)  # (E, B)
        for k in range(self.layers):
            top = E + (k + 1) * H  # layer k reads rows [x_k | h_k] = [start, mid) + [mid, top)
            start, mid = (0 if k == 0 else top - 2 * H), top - H
            if cell == "lstm":
                gates = self._affine(f"w{k}", hb[start:top], f"b{k}")  # (4H, B)
                i, f, o = gates[: 3 * H].sigmoid_().chunk(3)
                c = carry[k].mul_(f).addcmul_(i, gates[3 * H :].tanh_())
                h = o.mul_(c.tanh())
            elif cell == "gru":
                gi = self._affine(f"w{k}", hb[start:mid], f"b{k}")  # (3H, B)
                gh = self._affine(f"u{k}", hb[mid:top], f"bh{k}")
                r, z = gi[: 2 * H].add_(gh[: 2 * H]).sigmoid_().chunk(2)
                n = gi[2 * H :].addcmul_(r, gh[2 * H :]).tanh_()
                h = carry[k].sub_(n).mul_(z).add_(n)  # n + z * (h - n)
            else:
                h = self._affine(f"w{k}", hb[start:top], f"b{k}").tanh_()
            hb[mid:top] = h
        if self.dtype == torch.float32 or h.size(1) < 64:  # the top layer's fp32 h, with no conversion
            return torch.addmm(self.b_out, self.w_out, h).T  # (B, V) fp32, a view of (V, B)
        return torch.mm(self.w_out_low, hb[-H:]).float().add_(self.b_out).T
