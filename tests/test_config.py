"""The options object and `plan`: budget defaults, what a resumed or fine-tuned run may change."""

import pytest

from rnngen.config import DEFAULT_MAX_TIME, ModelConfig, TrainConfig, TrainOptions, plan
from rnngen.errors import RnngenError


def saved_run(**train):
    model = dict(vocab_size=65, cell="gru", layers=3, hidden=96, embed=32, dropout=0.2, weight_drop=0.0,
                 embed_dropout=0.1)
    return {"model": model, "train": {"config": {**vars(TrainConfig(max_time=60.0, lr=3e-3, seed=5)), **train}}}


def test_options_split_into_settings_and_how_to_run():
    options = TrainOptions.from_params(dict(sources=["a.txt"], layers=3, lr=None, max_time=90.0, device="cpu",
                                            quiet=True, drums=None))
    assert options.settings == {"layers": 3, "max_time": 90.0}  # unset options are left to the budget
    assert (options.device, options.quiet, options.sources) == ("cpu", True, ["a.txt"])
    with pytest.raises(TypeError, match="no config field"):
        TrainOptions.from_params(dict(sources=[], colour="red"))


def test_a_new_run_takes_the_planned_defaults_under_what_was_given():
    planned = {"layers": 1, "hidden": 512, "lr": 8e-3, "batch_size": 32}
    short = plan({"max_time": 60.0, "hidden": 128}, defaults=planned)
    assert short.model["hidden"] == 128 and short.model["layers"] == 1
    assert short.train.lr == 8e-3 and short.train.batch_size == 32 and short.train.max_time == 60.0
    assert short.model["cell"] == "lstm" and short.train.seed == 1337
    unlimited = plan({})
    assert unlimited.train.max_time == DEFAULT_MAX_TIME
    by_steps = plan({"max_steps": 50}, defaults=planned)  # a step limit adds no time limit
    assert (by_steps.train.max_steps, by_steps.train.max_time) == (50, None)
    ModelConfig(vocab_size=10, **short.model)  # a whole model config but its vocabulary


def test_a_resumed_run_keeps_its_settings_and_takes_new_limits_and_rates():
    resumed = plan({"max_steps": 100, "lr": 1e-3, "eval_every": 7, "layers": 3}, saved_run())
    assert resumed.model["cell"] == "gru" and resumed.model["hidden"] == 96
    assert (resumed.train.max_steps, resumed.train.max_time) == (100, None)  # limits replaced together
    assert resumed.train.lr == 1e-3 and resumed.train.eval_every == 7 and resumed.train.seed == 5
    assert plan({}, saved_run()).train.max_time == 60.0
    for given, option in [({"weight_decay": 0.5}, "--weight-decay"), ({"hidden": 128}, "--hidden"),
                          ({"transpose": 2}, "--transpose"), ({"cell": "lstm"}, "--cell")]:
        with pytest.raises(RnngenError, match=f"{option} cannot change when resuming"):
            plan(given, saved_run())


def test_fine_tuning_keeps_the_base_shape_and_may_change_its_dropouts():
    tuned = plan({"dropout": 0.4, "max_steps": 10}, base=saved_run())
    assert tuned.model["dropout"] == 0.4 and tuned.model["embed_dropout"] == 0.1 and tuned.model["layers"] == 3
    assert tuned.train.max_steps == 10 and tuned.train.seed == 1337  # the training itself is new
    with pytest.raises(RnngenError, match="--layers cannot change when fine-tuning"):
        plan({"layers": 1}, base=saved_run())


def test_a_damaged_saved_config_is_one_clear_error():
    with pytest.raises(RnngenError, match="training settings are damaged"):
        plan({}, {"model": saved_run()["model"], "train": {"config": None}})
