import pytest
import torch

from rnngen.model import StepModel
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


def test_bf16_step_stays_close():
    model = tiny_model().eval()
    tokens = torch.randint(0, 12, (4,))
    state = model.init_state(4)
    with torch.no_grad():
        fp32, *_ = StepModel(model)(tokens, *state)
        bf16, *_ = StepModel(model, torch.bfloat16)(tokens, *state)
    assert bf16.dtype == torch.float32
    assert (fp32 - bf16).abs().max() < 0.05
