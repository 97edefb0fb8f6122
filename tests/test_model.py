import pytest
import torch

from rnngen import model as model_module
from rnngen import step_int8
from rnngen.config import ModelConfig
from rnngen.model import RNNModel, StepModel, dropout
from rnngen.step_int8 import Int8Step
from tests.conftest import tiny_model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_shapes_and_state(cell):
    model = tiny_model(vocab=12, cell=cell, layers=2)
    tokens = torch.randint(0, 12, (3, 5))
    logits, state = model(tokens)
    assert logits.shape == (3, 5, 12)
    assert len(state) == (2 if cell == "lstm" else 1)
    assert all(s.shape == (2, 3, 16) for s in state)
    zero = model.init_state(3)
    assert [s.shape for s in zero] == [s.shape for s in state]
    # Carrying the state across windows equals one long window.
    a, st = model(tokens[:, :2])
    b, _ = model(tokens[:, 2:], st)
    assert torch.allclose(torch.cat([a, b], 1), logits, atol=1e-6)


def test_dropout_keeps_one_minus_p_and_rescales():
    x = torch.ones(200_000)
    y = dropout(x, 0.3)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert not torch.equal(dropout(x, 0.3), y)  # a fresh mask each call
    assert torch.equal(dropout(x, 0.3, training=False), x) and torch.equal(dropout(x, 0.0), x)
    odd = dropout(torch.ones(3, 5, 7, dtype=torch.bfloat16), 0.5)  # sizes that are not a multiple of 4
    assert odd.shape == (3, 5, 7) and odd.dtype == torch.bfloat16 and set(odd.unique().tolist()) == {0.0, 2.0}
    g = torch.ones(1000, requires_grad=True)
    out = dropout(g, 0.5)
    out.sum().backward()
    assert torch.equal(g.grad, out.detach())  # the gradient passes where the mask kept, scaled alike


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_runs_layers_one_at_a_time_like_the_fused_layer(cell, monkeypatch):
    model = tiny_model(cell=cell, layers=3)
    model.cfg.dropout = 0.5
    tokens = torch.randint(0, 12, (2, 6))
    state = tuple(torch.randn_like(s) for s in model.init_state(2))
    model.train()
    assert not torch.allclose(model(tokens, state)[0], model(tokens, state)[0])  # dropout is on
    monkeypatch.setattr(model_module, "dropout", lambda x, p, training=True: x)
    got, got_state = model(tokens, state)  # layer by layer, with the dropout taken out
    model.eval()
    with torch.no_grad():
        want, want_state = model(tokens, state)  # the fused layer
    assert torch.allclose(got, want, atol=1e-5)
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got_state, want_state))
    got.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_drop_masks_recurrent_weights_in_training_only(cell):
    model = tiny_model(cell=cell)
    tokens = torch.randint(0, 12, (2, 6))
    plain = model(tokens)[0]
    model.cfg.weight_drop = 0.5
    model.eval()
    assert torch.equal(model(tokens)[0], plain)  # evaluation and sampling see the whole weights
    model.train()
    first, second = model(tokens)[0], model(tokens)[0]
    assert not torch.allclose(first, plain, atol=1e-4) and not torch.allclose(first, second, atol=1e-4)
    # Within one call the mask is fixed: the first step of every row only reads the input, not W_hh.
    assert torch.allclose(first[:, 0], plain[:, 0], atol=1e-6)
    first.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert [n for n, _ in model.rnn.named_parameters()] == [n for n, _ in tiny_model(cell=cell).rnn.named_parameters()]


def test_embed_dropout_drops_whole_tokens_in_training_only():
    model = tiny_model()
    tokens = torch.randint(0, 12, (4, 50))
    plain = model(tokens)[0]
    model.cfg.embed_dropout = 0.5
    seen = []
    recur = model._recur
    model._recur = lambda x, hx: (seen.append(x), recur(x, hx))[1]
    model.eval()
    assert torch.equal(model(tokens)[0], plain)  # evaluation and sampling see every token
    model.train()
    model(tokens)
    x, embedded = seen[-1], model.embed(tokens)
    dropped = (x == 0).all(dim=-1)  # (B, T): whole vectors, never parts of one
    assert torch.equal(x[~dropped], 2 * embedded[~dropped])  # the kept ones are scaled by 1 / (1 - p)
    assert 0.3 < dropped.float().mean() < 0.7
    model(tokens)
    assert not torch.equal(dropped, (seen[-1] == 0).all(dim=-1))  # a new mask each call


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradients_reach_every_parameter(cell):
    model = tiny_model(cell=cell)
    logits, _ = model(torch.randint(0, 12, (2, 4)))
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_step_model_matches_the_fused_layer(cell, layers):
    model = tiny_model(cell=cell, layers=layers).eval()
    step = StepModel(model)
    tokens = torch.randint(0, 12, (5, 7))
    with torch.no_grad():
        expected, final = model(tokens)
        state = model.init_state(5)
        for t in range(7):
            logits, *state = step(tokens[:, t], *state)
            assert torch.allclose(logits, expected[:, t], atol=1e-5)
    for got, want in zip(state, final):
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("precision, batch", [("bf16", 4), ("bf16", 1), ("int8", 1), ("int8", 3)])
def test_low_precision_steps_stay_close(cell, precision, batch):
    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=12, cell=cell, layers=3, hidden=32, embed=16)).eval()
    tokens = torch.randint(0, 12, (20, batch))
    ours, theirs = StepModel(model), StepModel(model, precision)
    state = ours.new_state(*model.init_state(batch))
    low = theirs.new_state(*model.init_state(batch))
    assert low[0].dtype == torch.bfloat16 and all(c.dtype == torch.float32 for c in low[1])
    with torch.no_grad():
        for t in range(20):  # the bf16 copies of h are remade each step, so errors do not pile up
            exact, approx = ours.step(tokens[t], *state), theirs.step(tokens[t], *low)
            assert approx.dtype == torch.float32 and approx.shape == (batch, 12)
            assert (exact - approx).abs().max() < 0.02 * exact.abs().max()


def test_int8_check_refuses_an_inexact_kernel(monkeypatch):
    """On AVX2 without VNNI, oneDNN's uint8 x int8 products saturate in 16 bits and miss by over 10%:
    the check must see that and keep the sampler on its other precisions."""
    check = step_int8.available.__wrapped__  # uncached
    exact = lambda xq, weight: (xq.float() - 128) / 127 @ (weight[0].float() * weight[1][:, None]).T
    monkeypatch.setattr(step_int8, "_ops", lambda: type("Ops", (), {"qlinear_prepack": staticmethod(lambda q, b: q)}))
    monkeypatch.setattr(step_int8, "_linear", exact)
    assert check()
    monkeypatch.setattr(step_int8, "_linear", lambda xq, weight: 1.2 * exact(xq, weight))
    assert not check()


@pytest.mark.skipif(not step_int8.available(), reason="oneDNN's int8 matmul saturates on this CPU (AVX2 without "
                    "VNNI or AMX), so the sampler does not use it here; see test_int8_check_refuses_an_inexact_kernel")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_int8_batch_step_stays_close(cell):
    """Int8 activations too: h at 1/127 steps and int8 weights, so a looser bound than bf16's."""
    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=12, cell=cell, layers=3, hidden=32, embed=16)).eval()
    tokens = torch.randint(0, 12, (20, 5))
    ours, theirs = StepModel(model), Int8Step(model)
    state = ours.new_state(*model.init_state(5))
    low = theirs.new_state(*model.init_state(5))
    assert [b.dtype for b in low[0]] == [torch.uint8] * 3 and all(c.dtype == torch.float32 for c in low[1])
    with torch.no_grad():
        for t in range(20):
            exact, approx = ours.step(tokens[t], *state), theirs.step(tokens[t], *low)
            assert approx.dtype == torch.float32 and approx.shape == (5, 12)
            assert (exact - approx).abs().max() < 0.05 * exact.abs().max()


def test_int8_batch_step_reads_the_embedding_at_full_range():
    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=12, hidden=32, embed=16))
    with torch.no_grad():
        model.embed.weight[:, 3] *= 100  # one dimension far larger than the rest
    codes = Int8Step(model).embed.int() - 128
    assert codes.abs().amax(dim=0).min() == 127  # each dimension scaled to its own largest value


def test_int8_weights_are_rows_of_int8_with_a_scale_each():
    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=12, layers=2, hidden=32, embed=16))
    step, exact = StepModel(model, "int8"), StepModel(model)
    for k in range(2):
        q, scale = step.w0 if k == 0 else step.w1, step.w0_scale if k == 0 else step.w1_scale
        w = exact.w0 if k == 0 else exact.w1
        assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (w.shape[0],)
        assert q.abs().amax(dim=1).min() >= 126  # each row uses the whole range
        assert ((q.float() * scale.float()[:, None] - w).abs() <= scale.float()[:, None]).all()


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16])
def test_quantize_rows_matches_the_whole_matrix_computation(scale_dtype):
    # 600 rows: more than one of the blocks it works through, and a last block that is partly filled
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(600, 40, generator=g), torch.randn(600, 24, generator=g) * 3]
    rows = torch.randperm(600, generator=g)
    w = torch.cat(parts, dim=1)
    for order in (None, rows):
        q, scale = model_module.quantize_rows(*parts, scale_dtype=scale_dtype, rows=order)
        expected = w if order is None else w[order]
        expected_scale = (expected.abs().amax(dim=1) / 127).to(scale_dtype)
        assert scale.dtype == scale_dtype and torch.equal(scale, expected_scale)
        assert torch.equal(q, (expected / expected_scale.float()[:, None]).round().clamp(-127, 127).to(torch.int8))


def test_int8_needs_sizes_the_kernel_takes():
    with pytest.raises(ValueError, match="multiples of 16"):
        StepModel(tiny_model(), "int8")  # embed 8
