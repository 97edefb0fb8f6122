import math
import signal

import pytest
import torch

from rnngen import checkpoint
from rnngen.data import Streams, split
from rnngen.errors import RnngenError
from rnngen.trainer import Interrupted, Trainer, evaluate, learning_rate
from tests.conftest import text_ids, tiny_config, tiny_model

CPU = torch.device("cpu")


def make_trainer(tmp_path, cfg=None, resume=None, report=lambda e: None, name="m.pt", **model_settings):
    codec, ids = text_ids()
    train_ids, val_ids = split(ids, 0.1)
    model = tiny_model(vocab=codec.vocab_size)
    for key, value in model_settings.items():  # e.g. the dropouts, which draw random numbers every step
        setattr(model.cfg, key, value)
    if resume is not None:
        model.load_state_dict(checkpoint.build_model(resume).state_dict())
    return Trainer(model, train_ids, val_ids, cfg or tiny_config(), CPU, None, checkpoint.Saver(tmp_path / name, codec),
                   report=report, resume=resume["resume"] if resume else None)


def test_a_few_steps_lower_the_loss(tmp_path):
    trainer = make_trainer(tmp_path, tiny_config(max_steps=80, lr=3e-2))
    before = evaluate(trainer.model, trainer.val_ids, CPU)
    outcome = trainer.run()
    assert outcome.steps == 80
    assert outcome.best_val < before - 0.5
    assert outcome.best_path.exists() and outcome.last_path.exists()


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    trainer = make_trainer(tmp_path, tiny_config(max_steps=5))
    outcome = trainer.run()
    raw = torch.load(outcome.best_path, weights_only=True)  # plain data only
    assert raw["format"] == "rnngen" and raw["kind"] == "text"
    model, codec, _ = checkpoint.load_model(outcome.best_path)
    tokens = torch.randint(0, codec.vocab_size, (2, 9))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], trainer.model(tokens)[0])
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("ema, noise", [(0.0, {}), (0.9, dict(dropout=0.2, embed_dropout=0.1, weight_drop=0.1))])
def test_resume_continues_exactly(tmp_path, ema, noise):
    cfg = tiny_config(max_steps=12, eval_every=4, ema=ema)
    full: list[float] = []
    whole = make_trainer(tmp_path, cfg, report=lambda e: full.append(e.loss), name="full.pt", **noise).run()

    first: list[float] = []

    def stop_at_5(event):
        first.append(event.loss)
        if event.step == 5:
            trainer.signals.received = signal.SIGINT

    trainer = make_trainer(tmp_path, cfg, report=stop_at_5, name="cut.pt", **noise)
    with pytest.raises(Interrupted) as stop:
        trainer.run()
    assert stop.value.step == 5
    resumed_ckpt = checkpoint.load(stop.value.path)
    assert resumed_ckpt["resume"]["step"] == 5
    rest: list[float] = []
    outcome = make_trainer(tmp_path, cfg, resume=resumed_ckpt,
                           report=lambda e: rest.append(e.loss), name="cut.pt", **noise).run()
    assert outcome.steps == 12
    assert first + rest == pytest.approx(full, abs=1e-6)
    assert outcome.best_val == pytest.approx(whole.best_val, abs=1e-6)


def test_a_longer_budget_carries_the_decay_on_from_where_it_was(tmp_path):
    cfg = tiny_config(max_steps=12, eval_every=4)
    before: list[float] = []

    def stop_at_8(event):
        before.append(event.lr)
        if event.step == 8:
            trainer.signals.received = signal.SIGTERM

    trainer = make_trainer(tmp_path, cfg, report=stop_at_8)
    with pytest.raises(Interrupted):
        trainer.run()
    after: list[float] = []
    longer = tiny_config(max_steps=30, eval_every=4)
    resumed = make_trainer(tmp_path, longer, resume=checkpoint.load(tmp_path / "m.last.pt"),
                           report=lambda e: after.append(e.lr))
    assert resumed.resuming() == (f"resuming at step 8, lr {resumed.learning_rate():.1e}, decaying to "
                                  f"{longer.lr * longer.min_lr_frac:.1e} over the new budget")
    resumed.run()
    assert after[0] <= before[-1]  # no jump up: the run had 4 of 12 steps left, now 22 of 30
    # From where the first run would have gone next, down to the floor at the new end.
    assert after[0] == pytest.approx(learning_rate(cfg, 8, 8 / 12))
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert after[-1] == pytest.approx(learning_rate(longer, 29, 1 - (1 - 8 / 12) / 22))
    assert after[-1] > cfg.lr * cfg.min_lr_frac


def test_weight_average_is_what_gets_evaluated_and_saved(tmp_path):
    decay = 0.8
    trained: list[list[torch.Tensor]] = []
    trainer = make_trainer(tmp_path, tiny_config(max_steps=15, eval_every=5, lr=3e-2, ema=decay),
                           report=lambda e: trained.append([p.detach().clone() for p in trainer.params]))
    average = [p.detach().clone() for p in trainer.params]  # it starts from the initial weights
    outcome = trainer.run()
    for step, weights in enumerate(trained):
        d = min(decay, (1 + step) / (10 + step))
        average = [a * d + w * (1 - d) for a, w in zip(average, weights)]
    saved = checkpoint.build_model(checkpoint.load(outcome.last_path))
    for a, s in zip(average, saved.parameters()):
        assert torch.allclose(a, s, atol=1e-5)
    assert not torch.allclose(trained[-1][0], average[0], atol=1e-3)  # the average is not the trained weights
    assert outcome.last_val == pytest.approx(evaluate(saved, trainer.val_ids, CPU), abs=1e-5)


def test_streams_cover_the_corpus_and_shift_targets():
    ids = torch.arange(1000)
    streams = Streams(ids, batch=4, seq_len=10, seed=0)
    windows = list(streams.epoch(0))
    assert len(windows) == streams.windows_per_epoch
    x, y, tags = windows[0]
    assert x.shape == (4, 10) and torch.equal(y, x + 1) and tags is None
    # Consecutive windows continue each stream where the previous one ended.
    assert torch.equal(windows[1][0][:, 0], x[:, -1] + 1)
    # Later epochs start at another offset, so window boundaries move.
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(streams.epoch(1), streams.epoch(2)))


def test_corpus_shorter_than_a_window_is_an_error():
    with pytest.raises(RnngenError, match="fewer than one window"):
        Streams(torch.arange(50), batch=4, seq_len=16)


def test_schedule_warms_up_and_decays():
    cfg = tiny_config(lr=1.0, warmup_steps=10, max_steps=100)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(0.1)
    cosine = 0.5 * (1 + math.cos(0.1 * math.pi))
    assert learning_rate(cfg, 10, 0.1) == pytest.approx(0.1 + 0.9 * cosine)
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(cfg.min_lr_frac)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, tiny_config(max_steps=5))
    with torch.no_grad():
        trainer.model.head.bias.fill_(float("nan"))
    with pytest.raises(RnngenError, match="non-finite"):
        trainer.run()
