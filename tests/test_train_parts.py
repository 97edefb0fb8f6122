"""The trainer's small parts, without a model."""

import math
import os
import signal

import pytest
import torch

from rnngen.distributed import OneProcess
from rnngen.train_parts import Clock, EvalTimer, Schedule, Signals, WeightAverage, progress
from tests.conftest import tiny_config


def test_progress_is_the_first_limit_reached():
    cfg = tiny_config(max_steps=100, max_time=60.0, epochs=2.0)
    assert progress(cfg, 10, 30.0, 0.1) == pytest.approx(0.5)  # time leads
    assert progress(cfg, 90, 6.0, 0.1) == pytest.approx(0.9)  # steps lead
    assert progress(cfg, 200, 0.0, 0.0) == 1.0


def test_clock_counts_the_time_before_a_resume():
    clock = Clock(before=100.0)
    assert clock.elapsed() == 100.0 and clock.now == 100.0
    clock.begin()
    assert 100.0 <= clock.elapsed() < 110.0


def test_schedule_follows_progress_and_carries_on_where_a_resumed_run_was():
    cfg = tiny_config(max_steps=100)
    new = Schedule.of(cfg)
    assert [new.position(p) for p in (0.0, 0.3, 1.0)] == [0.0, 0.3, 1.0]
    saved = new.to_dict()
    assert Schedule.resumed(saved, cfg, 60, 9.0, 0.5) == new  # the same limits: the very same schedule
    longer = Schedule.resumed(saved, tiny_config(max_steps=200), 60, 9.0, 0.5)
    assert longer.renewed and longer.start == (0.3, 0.6)  # at 60 of 200 steps, where 60 of 100 had it
    assert longer.position(0.3) == 0.6 and longer.position(0.65) == pytest.approx(0.8) and longer.position(1.0) == 1.0
    # Resumed again with yet other limits, it goes on from where the stretched schedule was.
    again = Schedule.resumed(longer.to_dict(), tiny_config(max_steps=300), 130, 20.0, 1.0)
    assert again.start == (pytest.approx(130 / 300), pytest.approx(0.8)) and again.position(1.0) == 1.0
    assert Schedule.resumed(None, tiny_config(max_steps=200), 60, 9.0, 0.5).position(0.3) == 0.3  # as it used to


def test_eval_timer_every_n_steps_or_ten_times_within_five_percent():
    assert [s for s in range(1, 10) if EvalTimer(3, 0.0).due(s, 0.0, 0.0)] == [3, 6, 9]
    timer = EvalTimer(None, 0.0)
    assert not timer.due(1, 0.05, 5.0)  # still in the first tenth
    assert timer.due(2, 0.1, 10.0)
    timer.done(10.0, 2.0)  # that evaluation took 2 s
    assert not timer.due(3, 0.2, 30.0)  # a tenth later, but only 20 s since: under 19 x 2 s
    assert timer.due(4, 0.3, 48.0)


def test_weight_average_stands_in_while_averaged_and_restores_the_trained_weights():
    w = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([w], decay=0.5)
    with torch.no_grad():
        w.fill_(1.0)
    average.update(step=100)  # decay 0.5: halfway to the trained weights
    with average.averaged():
        assert torch.equal(w, torch.full((3,), 0.5))
        assert torch.equal(average.raw_weights()[0], torch.ones(3))
    assert torch.equal(w, torch.ones(3)) and average.raw_weights()[0] is w
    off = WeightAverage([w], decay=0.0)
    with off.averaged():
        assert torch.equal(w, torch.ones(3))


def test_first_signal_is_noted_and_a_second_stops_at_once():
    signals = Signals()
    with signals.caught():
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is not signals._on_signal  # handlers put back


def test_one_process_world_reads_as_a_world_of_one():
    world = OneProcess(torch.device("cpu"))
    t = torch.arange(6.0).view(1, 2, 3)
    assert world.main and world.size == 1 and world.rows(4) == slice(0, 4)
    assert world.all_sum([1.5, math.inf]) == [1.5, math.inf] and world.broadcast([2.0]) == [2.0]
    assert len(world.gather(t)) == 1 and torch.equal(world.gather(t)[0], t)
    model = torch.nn.Linear(2, 2)
    assert world.wrap(model) is model
    assert world.stop_signal(None, signal.SIGINT) == signal.SIGINT  # alone, the signal it received
