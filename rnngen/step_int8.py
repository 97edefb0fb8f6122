"""The sampler's step for a batch on a CPU, with int8 weights and int8 activations.

It runs each layer's matmul through oneDNN's int8 matmul (the kernel behind PyTorch's own x86 int8
inference), which uses the CPU's int8 units (AMX or VNNI) and hands back fp32 with the bias added:
at a batch of 256 the shipped model samples 1.2-1.4x as fast as in bf16, and its validation loss moves
by 0.00002 nats/char (0.00016 on the model shipped before it; the Bach model's by 0.0008 nats/event;
benchmarks/RESULTS.md). For one sample `StepModel`'s int8 weights with bf16 activations are faster;
the sampler picks between them (`sample.make_step`).

Why one fixed scale per activation tensor is enough: what the matmuls read is bounded. An LSTM's,
GRU's or tanh RNN's h lies in (-1, 1) and is stored as q = round(127 h) + 128 (uint8, zero point
128); each embedding dimension is divided by its largest magnitude, and layer 0's input weights are
multiplied by it, so the tokens' inputs are in [-1, 1] too. Weights are int8 with a scale per row.
The gate arithmetic and the carried state (LSTM's c, GRU's h) stay fp32, as in `StepModel`.

The layout is one row per sample, as the op computes x @ W.T: layer k reads a (B, in + H) uint8
buffer [x_k | h_k], and writes its new h into its own buffer and into layer k + 1's input.
"""

from __future__ import annotations

import functools

import torch

from rnngen.model import RNNModel, lstm_gate_order, quantize_rows

_ZERO_POINT = 128  # uint8 activations: q = round(127 x) + 128
_SCALE = 1 / 127


def _ops():
    return torch.ops.onednn


def _quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """uint8 codes of values in [-1, 1]."""
    return torch.round(x * 127).add_(_ZERO_POINT).clamp_(0, 255).to(torch.uint8)


@functools.cache
def available() -> bool:
    """Whether this PyTorch has the op and it computes a known product right (the op is private, so
    a build without it, or with another signature, falls back to the other precisions)."""
    try:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(32, 48, generator=g)
        x = torch.rand(3, 48, generator=g) * 2 - 1
        q, scale = quantize_rows(w)
        weight = (_ops().qlinear_prepack(q, None), scale, torch.zeros(32), torch.zeros(32, dtype=torch.int64))
        got = _linear(_quantize_activations(x), weight)
        return bool((got - x @ w.T).abs().max() < 0.05 * (x @ w.T).abs().max())
    except Exception:  # noqa: BLE001 - any failure just means "not here"
        return False


def _linear(xq: torch.Tensor, weight: tuple) -> torch.Tensor:
    """x @ W.T + bias in fp32, from uint8 x (B, K) and W as (packed int8 (N, K), row scales, bias,
    zero points)."""
    packed, scale, bias, zero = weight
    return _ops().qlinear_pointwise(xq, _SCALE, _ZERO_POINT, packed, scale, zero, bias,
                                    1.0, 0, torch.float32, "none", [], "")


class Int8Step:
    """Same contract as `StepModel` for sampling: `new_state(h, c)` -> (buffers, carry) and
    `step(tokens, buffers, carry)` -> logits (B, V) fp32, updating the state in place."""

    batch_dim = 0  # the state keeps one sample per row

    def __init__(self, model: RNNModel):
        cfg = model.cfg
        self.cell, self.layers, self.hidden, self.embed_size = cfg.cell, cfg.layers, cfg.hidden, cfg.embed
        rnn = model.rnn
        self.weights: dict[str, tuple] = {}  # name -> (packed int8, row scales, fp32 bias, zero points)
        with torch.no_grad():
            embed = model.embed.weight.detach().float()  # (V, E)
            spread = embed.abs().amax(dim=0).clamp_min(1e-30)  # per dimension
            self.embed = _quantize_activations(embed / spread)  # (V, E) uint8
            rows = lstm_gate_order(cfg.hidden) if cfg.cell == "lstm" else None
            for k in range(cfg.layers):
                w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{n}_l{k}").detach().float()
                                          for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                if k == 0:
                    w_ih = w_ih * spread  # undoes the embedding's rescaling
                if cfg.cell == "gru":  # r scales only the hidden part, so two products
                    self._keep(f"w{k}", b_ih, w_ih)
                    self._keep(f"u{k}", b_hh, w_hh)
                else:
                    self._keep(f"w{k}", b_ih + b_hh, w_ih, w_hh, rows=rows)
            self._keep("out", model.head.bias.detach().float(), model.head.weight.detach().float())
        self._offset = torch.tensor(_ZERO_POINT + 0.5)  # + 0.5: the uint8 cast truncates, so this rounds

    def _keep(self, name: str, bias: torch.Tensor, *parts: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        q, scale = quantize_rows(*parts, rows=rows)
        if rows is not None:
            bias = bias[rows]
        packed = _ops().qlinear_prepack(q, None)
        self.weights[name] = (packed, scale, bias.contiguous(), torch.zeros(scale.numel(), dtype=torch.int64))

    def _affine(self, name: str, xq: torch.Tensor) -> torch.Tensor:
        return _linear(xq, self.weights[name])

    def new_state(self, h: torch.Tensor, c: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer, the uint8 input buffer [x_k | h_k] and the fp32 carry (LSTM's c, GRU's h),
        from (L, B, H) states."""
        L, B, H = h.shape
        buffers = [torch.empty(B, (self.embed_size if k == 0 else H) + H, dtype=torch.uint8) for k in range(L)]
        for k in range(L):
            buffers[k][:, -H:] = _quantize_activations(h[k])
            if k + 1 < L:
                buffers[k + 1][:, :H] = buffers[k][:, -H:]
        carry = {"lstm": c, "gru": h, "rnn": None}[self.cell]
        return buffers, [] if carry is None else [x.float().clone(memory_format=torch.contiguous_format) for x in carry]

    def step(self, tokens: torch.Tensor, buffers: list[torch.Tensor], carry: list[torch.Tensor]) -> torch.Tensor:
        H, cell = self.hidden, self.cell
        buffers[0][:, : self.embed_size] = self.embed[tokens]  # x_0
        for k, xq in enumerate(buffers):
            if cell == "lstm":
                gates = self._affine(f"w{k}", xq)  # (B, 4H)
                i, f, o = gates[:, : 3 * H].sigmoid_().chunk(3, dim=1)
                c = carry[k].mul_(f).addcmul_(i, gates[:, 3 * H :].tanh_())
                codes = torch.addcmul(self._offset, o, c.tanh(), value=127.0)  # 127 h + 128.5
            elif cell == "gru":
                gi, gh = self._affine(f"w{k}", xq[:, :-H]), self._affine(f"u{k}", xq[:, -H:])  # (B, 3H)
                r, z = gi[:, : 2 * H].add_(gh[:, : 2 * H]).sigmoid_().chunk(2, dim=1)
                n = gi[:, 2 * H :].addcmul_(r, gh[:, 2 * H :]).tanh_()
                h = carry[k].sub_(n).mul_(z).add_(n)  # n + z * (h - n)
                codes = torch.add(self._offset, h, alpha=127.0)
            else:
                codes = torch.add(self._offset, self._affine(f"w{k}", xq).tanh_(), alpha=127.0)
            xq[:, -H:] = codes  # the cast to uint8 truncates
            if k + 1 < self.layers:
                buffers[k + 1][:, :H] = xq[:, -H:]
        return self._affine("out", buffers[-1][:, -H:])
