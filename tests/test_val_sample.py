"""Bounded validation: a fixed, seeded sample of a long split; the full pass for a short one."""

from __future__ import annotations

import pytest
import torch

from rnngen.data import row_windows, val_sample
from rnngen.trainer import EvaluationStopped, evaluate
from tests.conftest import text_ids, tiny_model

CPU = torch.device("cpu")


def test_a_split_within_the_cap_is_the_full_pass_unchanged():
    _, ids = text_ids()
    assert val_sample(ids, cap=len(ids), seed=5) is ids
    assert val_sample(ids, cap=None) is ids


def test_the_sample_is_fixed_by_the_seed_and_capped():
    ids = torch.arange(100_000) % 251
    a, b, c = val_sample(ids, 4096, seed=1), val_sample(ids, 4096, seed=1), val_sample(ids, 4096, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (64, 65) and (a.shape[1] - 1) * a.shape[0] == 4096


def test_rows_are_contiguous_slices_in_their_strata():
    ids = torch.arange(1_000_000)
    rows = val_sample(ids, 8192, seed=0, streams=16)
    stratum = 1_000_000 // 16
    for k, row in enumerate(rows):
        assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + len(row)))
        assert k * stratum <= int(row[0]) and int(row[-1]) < (k + 1) * stratum


def test_row_windows_cover_every_target_once():
    rows = torch.arange(3 * 11).view(3, 11)
    ys = torch.cat([y for _, y in row_windows(rows, 4)], dim=1)
    assert torch.equal(ys, rows[:, 1:])


def test_evaluating_a_sample_is_deterministic_and_close_to_the_full_pass():
    codec, ids = text_ids()
    ids = ids[:6000]
    model = tiny_model(vocab=codec.vocab_size)
    full = evaluate(model, ids, CPU, seq_len=32)
    sample = val_sample(ids, cap=len(ids) // 2, seed=3, streams=8)
    a = evaluate(model, sample, CPU, seq_len=32)
    assert a == evaluate(model, val_sample(ids, cap=len(ids) // 2, seed=3, streams=8), CPU, seq_len=32)
    assert abs(a - full) < 0.05


def test_should_stop_stops_between_windows():
    codec, ids = text_ids()
    ids = ids[:3000]
    model = tiny_model(vocab=codec.vocab_size)
    calls = []

    def after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    model.train()
    with pytest.raises(EvaluationStopped):
        evaluate(model, ids, CPU, seq_len=16, should_stop=after_two)
    assert len(calls) == 3 and model.training  # two windows ran; the model is as it was
    assert evaluate(model, ids, CPU, seq_len=16, should_stop=lambda: False) == evaluate(model, ids, CPU, seq_len=16)
