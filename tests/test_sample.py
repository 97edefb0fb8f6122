import pytest
import torch
from torch import nn

from rnngen import sample as sample_module
from rnngen import step_int8
from rnngen.config import ModelConfig
from rnngen.errors import RnngenError
from rnngen.model import RNNModel, StepModel
from rnngen.sample import Sampler, StopScanner, generate, make_step, step_precision
from tests.conftest import tiny_model

V = 10
LOGITS = torch.log(torch.tensor([0.30, 0.25, 0.15, 0.10, 0.08, 0.05, 0.04, 0.02, 0.007, 0.003]))


class Stub(nn.Module):
    """A model whose next-token distribution is always LOGITS, whatever came before."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, tokens, state=None):
        b, t = tokens.shape
        return LOGITS.expand(b, t, V).clone(), (torch.zeros(1, b, 4),)

    def new_state(self, h):
        return h[0], []

    def step(self, tokens, hb, carry):
        return LOGITS.expand(len(tokens), V).clone()


def draws(n=4000, **kw):
    stub = Stub()
    steps = generate(stub, [0], length=n // 200, batch=200, seed=1, device=torch.device("cpu"),
                     stepper=stub, **kw)
    return torch.cat(list(steps))


def test_temperature_zero_is_argmax():
    logits = torch.randn(6, V)
    assert torch.equal(Sampler(temperature=0)(logits), logits.argmax(-1))
    assert set(draws(temperature=0).tolist()) == {0}


def test_top_k_never_leaves_the_k_likeliest():
    seen = set(draws(top_k=3).tolist())
    assert seen == {0, 1, 2}


def test_top_p_keeps_the_smallest_set_covering_p():
    # 0.30 + 0.25 = 0.55 < 0.6, so the nucleus for p=0.6 is {0, 1, 2}.
    seen = set(draws(top_p=0.6).tolist())
    assert seen == {0, 1, 2}
    assert set(draws(top_p=0.2).tolist()) == {0}
    assert len(set(draws(top_p=1.0).tolist())) > 6


def test_sampling_follows_the_distribution():
    counts = torch.bincount(draws(n=20000), minlength=V).float() / 20000
    assert torch.allclose(counts, LOGITS.exp(), atol=0.02)


def test_same_seed_same_samples_and_rows_differ():
    model = tiny_model(vocab=12).eval()
    run = lambda seed: torch.stack(list(generate(model, [1, 2, 3], 40, batch=5, seed=seed)))  # (T, B)
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(a[:, i].tolist()) for i in range(5)}) == 5  # each row is its own sample


def test_batched_and_single_sampling_agree_at_temperature_zero():
    model = tiny_model(vocab=12).eval()
    one = torch.stack(list(generate(model, [3, 1], 30, batch=1, temperature=0)))[:, 0]
    many = torch.stack(list(generate(model, [3, 1], 30, batch=4, temperature=0)))
    assert all(torch.equal(one, many[:, i]) for i in range(4))


def test_precision_auto_picks_by_hardware_batch_and_model(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    fits = RNNModel(ModelConfig(vocab_size=12, hidden=32, embed=16))  # int8 wants multiples of 16
    odd = tiny_model()  # embed 8
    monkeypatch.setattr(sample_module, "cpu_has_fast_bf16", lambda: True)
    assert step_precision("auto", cpu, fits, 1) == "int8"
    assert step_precision("auto", cpu, odd, 1) == "bf16"
    monkeypatch.setattr(step_int8, "available", lambda: True)
    assert step_precision("auto", cpu, fits, 2) == "int8"
    monkeypatch.setattr(step_int8, "available", lambda: False)  # no int8 matmul for a batch in this PyTorch
    assert step_precision("auto", cpu, fits, 2) == "bf16"
    assert step_precision("auto", cpu, fits, 1) == "int8"
    assert step_precision("auto", gpu, fits, 1) == "fp32"
    assert step_precision("fp32", cpu, fits, 1) == "fp32"
    monkeypatch.setattr(sample_module, "cpu_has_fast_bf16", lambda: False)
    assert step_precision("auto", cpu, fits, 1) == "fp32"
    assert step_precision("int8", cpu, fits, 64) == "int8"  # asked for: slower at a batch, but allowed


@pytest.mark.parametrize("name, device, message", [
    ("int8", "cuda", "for sampling on a CPU"),
    ("int8", "cpu", "multiples of 16"),
    ("fp8", "cpu", "unknown precision"),
])
def test_precision_that_cannot_run_is_a_clear_error(name, device, message):
    with pytest.raises(RnngenError, match=message):
        step_precision(name, torch.device(device), tiny_model(), 1)


@pytest.mark.parametrize("batch", [1, 3])
def test_each_precision_samples_deterministically(batch):
    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=12, hidden=32, embed=16)).eval()
    for precision in ("fp32", "bf16", "int8"):
        run = lambda: torch.cat(list(generate(model, [1, 2], 50, batch, seed=4, precision=precision)))
        assert torch.equal(run(), run())


def test_int8_for_a_batch_takes_int8_activations_where_pytorch_can(monkeypatch):
    model, cpu = RNNModel(ModelConfig(vocab_size=12, hidden=32, embed=16)).eval(), torch.device("cpu")
    assert isinstance(make_step(model, "int8", 1, cpu), StepModel)  # one sample: int8 weights only
    monkeypatch.setattr(step_int8, "available", lambda: True)  # as on CPUs with VNNI or AMX
    assert isinstance(make_step(model, "int8", 4, cpu), step_int8.Int8Step)
    assert isinstance(make_step(model, "bf16", 4, cpu), StepModel)
    monkeypatch.setattr(step_int8, "available", lambda: False)
    step = make_step(model, "int8", 4, cpu)
    assert isinstance(step, StepModel) and step.precision == "int8"


def test_mask_forbids_tokens():
    stub = Stub()
    allowed = torch.zeros(V, dtype=torch.bool)
    allowed[[5, 9]] = True
    steps = generate(stub, [0], 20, batch=50, seed=0, device=torch.device("cpu"), stepper=stub,
                     mask=lambda last: allowed.expand(50, V))
    assert set(torch.cat(list(steps)).tolist()) <= {5, 9}


@pytest.mark.parametrize("pieces, stops, emitted, stopped", [
    (list("hello world"), ["lo w"], "hel", True),
    (list("abcabc"), ["x"], "abcabc", False),
    (list("one\n\ntwo"), ["\n\n", "tw"], "one", True),
    (["ab", "cd"], ["bc"], "a", True),
])
def test_stop_scanner(pieces, stops, emitted, stopped):
    scanner = StopScanner(stops)
    out = "".join(scanner.feed(p) for p in pieces) + scanner.flush()
    assert out == emitted and scanner.stopped == stopped


def test_a_short_prime_runs_without_onednn_and_a_long_one_with_it(monkeypatch):
    seen = []
    forward = RNNModel.forward

    def spy(self, tokens, state=None):
        seen.append((tokens.size(1), torch.backends.mkldnn.enabled))
        return forward(self, tokens, state)

    monkeypatch.setattr(RNNModel, "forward", spy)
    model = tiny_model(vocab=12).eval()
    for prime in ([1, 2, 3], [1] * sample_module.ONEDNN_PRIME_FROM):
        list(generate(model, prime, 4, batch=2, seed=0))
    assert seen == [(3, False), (sample_module.ONEDNN_PRIME_FROM, True)]
    assert torch.backends.mkldnn.enabled  # left as it was


def test_a_row_steps_to_the_same_bits_at_every_padded_width():
    """What lets `rnngen serve` answer as `rnngen sample` does: at the widths a batch steps at, a
    row's logits and state do not depend on the other rows (the shipped model's sizes, fp32)."""
    torch.manual_seed(0)
    model = RNNModel(ModelConfig(vocab_size=65, hidden=512, embed=64)).eval()
    step = StepModel(model, "fp32")
    h, c = torch.randn(2, 40, 512) * 0.5, torch.randn(2, 40, 512)
    tokens = torch.randint(0, 65, (40,))

    def run(rows: list[int]) -> torch.Tensor:  # three steps of these rows, padded as generate pads them
        width = sample_module.step_width(len(rows))
        hb, carry = sample_module.pad_state(step, step.new_state(h[:, rows], c[:, rows]), width)
        t = torch.zeros(width, dtype=torch.long)
        t[: len(rows)] = tokens[rows]
        with torch.inference_mode():
            return torch.stack([step.step(t, hb, carry)[: len(rows)].clone() for _ in range(3)])  # (3, B, V)

    every = run(list(range(40)))
    for rows in ([3, 4], [0, 1, 2, 3, 4], list(range(7, 18)), list(range(20, 40)), [39, 0, 21]):
        assert torch.equal(run(rows), every[:, rows]), rows


@pytest.mark.parametrize("batch_dim", [-1, 0])
def test_state_helpers_pad_select_and_join_along_the_steps_batch_dim(batch_dim):
    """StepModel keeps a sample per column, Int8Step per row: the server's helpers follow `batch_dim`."""
    step = type("Step", (), {"batch_dim": batch_dim})()
    make = lambda b, width: torch.arange(b * width, dtype=torch.float).view(b, width)  # noqa: E731  (B, D)
    as_state = lambda hb, c: ([hb], [c]) if batch_dim == 0 else (hb.T.contiguous(), [c.T.contiguous()])  # noqa: E731
    rows = lambda t: t if batch_dim == 0 else t.T  # noqa: E731  back to (B, D)
    a, b = as_state(make(3, 5), make(3, 2)), as_state(make(2, 5) + 100, make(2, 2) + 100)
    joined = sample_module.cat_states(step, [a, b])
    padded = sample_module.pad_state(step, joined, 16)
    hb = padded[0][0] if batch_dim == 0 else padded[0]
    assert rows(hb).shape == (16, 5) and rows(padded[1][0]).shape == (16, 2)
    assert torch.equal(rows(hb)[:3], make(3, 5)) and torch.equal(rows(hb)[3:5], make(2, 5) + 100)
    assert not rows(hb)[5:].any()  # idle samples are zeros
    picked = sample_module.select_state(step, padded, torch.tensor([4, 0]))
    picked_hb = picked[0][0] if batch_dim == 0 else picked[0]
    assert torch.equal(rows(picked_hb), torch.stack([make(2, 5)[1] + 100, make(3, 5)[0]]))
