"""The planner: what a new run trains for its budget, corpus and this machine's speed."""

from __future__ import annotations

import pytest

from rnngen import checkpoint, planner
from rnngen.planner import SHAPES, Budget, Calibration, choose, regularisation
from tests.test_cli import invoke

VOCAB = 65
CORPUS = 1_000_000  # training tokens, about tiny shakespeare's


def rates(fast: float):
    """Tokens/s falling with the parameters, as measured ones do; `fast` scales the machine."""
    return lambda shape: fast * 3.6e10 / shape.params(VOCAB)  # 1 x 512: 30k tokens/s


def test_a_faster_machine_or_a_longer_budget_gets_a_larger_model():
    names = lambda budget, fast: choose(Budget(seconds=budget), CORPUS, VOCAB, rates(fast)).shape  # noqa: E731
    slow, fast = names(73, 1.0), names(73, 3.0)
    longer = names(600, 1.0)
    assert SHAPES.index(fast) > SHAPES.index(slow)
    assert SHAPES.index(longer) > SHAPES.index(slow)
    chosen = choose(Budget(seconds=600), CORPUS, VOCAB, rates(1.0))
    assert chosen.tokens >= planner.TOKENS_PER_PARAM * chosen.shape.params(VOCAB)
    bigger = SHAPES[SHAPES.index(chosen.shape) + 1]
    assert Budget(seconds=600).tokens(bigger, rates(1.0)(bigger), CORPUS) < planner.TOKENS_PER_PARAM * bigger.params(VOCAB)


def test_only_the_shapes_tried_are_measured_and_steps_need_no_measurement():
    asked = []

    def rate(shape):
        asked.append(shape)
        return rates(1.0)(shape)

    chosen = choose(Budget(seconds=73), CORPUS, VOCAB, rate)
    assert asked == list(SHAPES[: SHAPES.index(chosen.shape) + 2])  # up to the first that sees too few tokens
    asked.clear()
    by_steps = choose(Budget(steps=2000), CORPUS, VOCAB, rate)
    assert asked == [] and by_steps.tokens == 2000 * by_steps.shape.batch_size * by_steps.shape.seq_len


def test_a_small_corpus_caps_the_model_and_raises_regularisation():
    big = choose(Budget(seconds=3600), 50_000_000, VOCAB, rates(5.0))
    small = choose(Budget(seconds=3600), 50_000, VOCAB, rates(5.0))
    assert small.shape.params(VOCAB) <= planner.PARAMS_PER_TOKEN * 50_000 < big.shape.params(VOCAB)
    assert small.epochs > big.epochs
    assert small.values["dropout"] > big.values["dropout"] and small.values["embed_dropout"] > 0
    assert "big for a corpus" in small.why


def test_regularisation_is_none_for_few_epochs_and_the_measured_setting_at_fifteen():
    assert regularisation(2.0) == {"dropout": 0.0, "embed_dropout": 0.0, "weight_decay": 0.1}
    assert regularisation(planner.HEAVY_EPOCHS) == {"dropout": 0.25, "embed_dropout": 0.1, "weight_decay": 0.3}
    assert regularisation(1000.0) == regularisation(10_000.0)  # capped
    assert regularisation(30.0)["dropout"] > 0.25


def test_speeds_are_measured_once_and_kept(tmp_path, monkeypatch):
    import torch

    measured = []
    cpu = torch.device("cpu")
    first = Calibration(cpu, None, tmp_path, measure=lambda s: measured.append(s) or 1000.0 * s.hidden)
    assert first(SHAPES[1]) == 256_000.0 and "measured 1 x 256 now" in first.describe()
    again = Calibration(cpu, None, tmp_path, measure=lambda s: pytest.fail("measured twice"))
    assert again(SHAPES[1]) == 256_000.0 and "calibrated" in again.describe()
    assert measured == [SHAPES[1]]
    other = Calibration(cpu, torch.bfloat16, tmp_path, measure=lambda s: 7.0)  # another precision, another file
    assert other(SHAPES[1]) == 7.0


def test_a_real_measurement_is_a_positive_speed():
    import torch

    assert planner.measure_rate(SHAPES[0], torch.device("cpu"), None, steps=1, seconds=0) > 0


def test_plan_prints_what_would_be_trained_and_trains_nothing(tmp_path, corpus):
    out = tmp_path / "planned.pt"
    result = invoke("train", corpus, "--max-steps", 50, "--plan", "--out", out, "--precision", "fp32")
    assert result.exit_code == 0, result.stderr
    assert "planned: 1 x 128 for" in result.stdout and "training lstm 1 x 128" in result.stdout
    assert not out.exists() and not checkpoint.last_path(out).exists()
    given = invoke("train", corpus, "--max-steps", 50, "--plan", "--hidden", 40, "--layers", 2)
    assert "training lstm 2 x 40" in given.stdout  # options given win over the plan


def test_a_timed_plan_shows_the_measured_speeds(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(planner, "measure_rate", lambda shape, device, dtype: 1e9 / shape.params(VOCAB))
    result = invoke("train", corpus, "--max-time", "30s", "--plan", "--precision", "fp32", "--cache-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "tokens/s  <- chosen" in result.stdout and "speeds measured 1 x 128" in result.stdout
    assert list((tmp_path / "planner").glob("*.json"))


def test_a_given_shape_is_the_only_one_measured_and_sets_the_regularisation():
    from rnngen.planner import candidates

    asked = []
    shapes = candidates({"layers": 2, "hidden": 300, "seq_len": 50})
    assert [(s.layers, s.hidden, s.seq_len) for s in shapes] == [(2, 300, 50)]
    chosen = choose(Budget(seconds=600), CORPUS, VOCAB, lambda s: asked.append(s) or 20_000.0, shapes)
    assert asked == list(shapes) and chosen.shape == shapes[0] and "as given" in chosen.why
    assert chosen.values["dropout"] == regularisation(chosen.epochs)["dropout"] > 0  # 11 epochs
    assert candidates({"hidden": 300}) == SHAPES  # a width alone leaves the choice to the plan


def test_a_fine_tuned_model_is_planned_as_its_base(tmp_path, corpus):
    from tests.conftest import TINY

    base = tmp_path / "base.pt"
    assert invoke("train", corpus, *TINY, "--max-steps", 2, "--out", base, "-q").exit_code == 0
    result = invoke("train", corpus, "--init-from", base, "--max-steps", 50, "--plan", "--precision", "fp32")
    assert result.exit_code == 0, result.stderr
    assert "planned: 1 x 32 as given" in result.stdout and "training lstm 1 x 32" in result.stdout
