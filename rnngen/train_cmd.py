"""`rnngen train`: check what can be checked, read the sources, build or restore the model, run the
trainer, say where it went.

Started by torchrun, every process runs all of this on the same data and options; only rank 0 talks,
writes the metrics log and saves checkpoints (see rnngen/distributed.py and rnngen/trainer.py).
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path
from typing import NamedTuple

import torch

from rnngen import checkpoint, distributed, planner, train_state
from rnngen.chart import chart_or_line
from rnngen.config import ModelConfig, Plan, TrainConfig, TrainOptions, format_duration, limits, plan
from rnngen.data import VAL_CAP, detect_kind, expand_sources, writable_file
from rnngen.device import precision_name, resolve_precision
from rnngen.errors import RnngenError, UsageError
from rnngen.codec import codec_from_dict
from rnngen.kinds import kind_named
from rnngen.model import RNNModel
from rnngen.report import Reporter
from rnngen.tags import Sources, describe_tags, load_tagged, parse_sources
from rnngen.trainer import Interrupted, Trainer


class Finished(NamedTuple):
    code: int  # the exit code: 0 done, 130/143 stopped by a signal (saved), 1 failed
    steps: int = 0
    best_path: Path | None = None
    last_path: Path | None = None


def run(options: TrainOptions) -> Finished:
    """Train as `options` say; under torchrun, as one rank of a process group."""
    if options.resume and options.init_from:
        raise RnngenError("--resume continues a run and --init-from starts a new one; give one of them")
    world = distributed.setup(options.device)
    try:
        return _run(options, world)
    except RnngenError as e:
        if world.size > 1:
            raise RnngenError(f"(rank {world.rank}) {e}") from e
        raise
    finally:
        distributed.shutdown()


def _run(options: TrainOptions, world: distributed.World) -> Finished:
    resumed = _load_resumable(options.resume)
    base = checkpoint.load(options.init_from) if options.init_from else None
    settings = plan(options.settings, resumed, base)
    dtype = _precision(options.precision, resumed, world.device)
    given, folder = _sources(options, settings.train, say=world.main and not options.quiet)
    if world.size > 1:
        distributed.check_sources(given.paths)
    out = _out_path(options, given.paths, check=world.main and not options.dry_run)  # before the corpus is read
    if world.main and not options.dry_run:
        _check_log(options)
    files = expand_sources(given.paths)
    kind = kind_named(detect_kind(files, resumed["kind"] if resumed else options.kind))
    if base is not None and base["kind"] != kind.name:
        raise RnngenError(f"--init-from is a {base['kind']} model, but the data is {kind.name}")
    given_codec = codec_from_dict((resumed or base)["codec"]) if (resumed or base) else None
    corpus = _corpus(kind, given, files, options, settings.train, given_codec, resumed, base)
    if len(corpus.val_ids) < 2:
        raise RnngenError("the validation split is empty: the corpus is too short for --val-frac; add data")
    choice = None
    if resumed is None:
        choice = _choose(options, corpus, world, dtype, base)
        settings = plan(options.settings, None, base, choice.values)
    if resumed is None or options.sources:  # read as given here: recorded so that --resume reads them again
        settings.train.sources = [str(n) for n in corpus.recorded()]
    settings.train.start_folder = str(folder)
    world.rows(settings.train.batch_size)  # the batch must split evenly among the processes
    model = _model(settings, corpus, resumed or base)
    if options.dry_run:
        print(_header(model, settings.train, corpus, dtype, world))
        print(_plan_lines(choice, corpus.codec.vocab_size))
        return Finished(0)

    reporter = Reporter(unit=corpus.codec.unit, quiet=options.quiet or not world.main,
                        log=options.log if world.main else None, append=bool(options.resume))
    reporter.say(_header(model, settings.train, corpus, dtype, world))
    if choice is not None:
        reporter.say(f"planned: {choice.why}" + (f"; {choice.calibration}" if choice.calibration else ""))
    tags = corpus.tags
    meta = {"kind": kind.name, **({"tag_tokens": tags.tokens} if tags else {})}
    trainer = Trainer(model, corpus.train_ids, corpus.val_ids, settings.train, world.device, dtype,
                      checkpoint.Saver(out, corpus.codec, meta), report=_also(reporter, options.on_event),
                      resume=resumed["resume"] if resumed else None, world=world,
                      train_tags=tags.train if tags else None, val_tags=tags.val if tags else None)
    if resumed is not None:
        reporter.say(trainer.resuming())
    try:
        with reporter:
            outcome = trainer.run()
    except Interrupted as stop:
        reporter.say(f"stopped at step {stop.step}; saved {stop.path}")
        again = f" (under torchrun, or with --nproc {world.size}, to go on with {world.size} processes)"
        reporter.say(f"resume with: rnngen train --resume {stop.path}{again if world.size > 1 else ''}")
        code = 128 + stop.signum if stop.signum in (signal.SIGINT, signal.SIGTERM) else 1
        return Finished(code, stop.step, None, stop.path)
    except RnngenError:
        if not world.main:  # stops inside the loop are agreed by all ranks, and rank 0 says why
            return Finished(1)
        raise
    unit = corpus.codec.unit
    reporter.say(f"done: {outcome.steps} steps in {format_duration(outcome.elapsed)}; best validation loss "
                 f"{outcome.best_val:.4f} nats/{unit} ({outcome.best_val / math.log(2):.4f} bits/{unit})")
    reporter.say(chart_or_line(trainer.val_history, reporter.console.is_terminal))
    if trainer.val_by_tag:
        reporter.say("by tag (last evaluation): " + ", ".join(
            f"{name} {loss:.4f}" for name, loss in zip(model.cfg.tags, trainer.val_by_tag)))
    reporter.say(f"saved {outcome.best_path} (best) and {outcome.last_path} (resumable)")
    reporter.say(f"sample with: rnngen sample {outcome.best_path}")
    return Finished(0, outcome.steps, outcome.best_path, outcome.last_path)


def _also(report, on_event):
    """The reporter, and the API's `on_event` after it where one was given."""
    if on_event is None:
        return report
    return lambda event: (report(event), on_event(event))


def _choose(options: TrainOptions, corpus, world: distributed.World, dtype, base: dict | None) -> planner.Choice:
    """The planner's shape and regularisation for this budget, corpus and machine; a fine-tuned model's
    shape is the base's, so only its speed is measured and its epochs set the regularisation."""
    stops = limits(options.settings)
    budget = planner.Budget(stops["max_time"], stops["max_steps"], stops["epochs"])
    given = options.settings
    if base is not None:
        given = {**given, **{k: base["model"][k] for k in ("layers", "hidden") if k in (base.get("model") or {})}}
    calibration = planner.Calibration(world.device, dtype, options.cache_dir) if budget.seconds else None
    rate = calibration
    if calibration is not None and world.size > 1:  # every rank plans the same run: rank 0 measures
        rate = lambda shape: world.broadcast([calibration(shape) if world.main else 0.0])[0]  # noqa: E731
    choice = planner.choose(budget, len(corpus.train_ids), corpus.codec.vocab_size, rate, planner.candidates(given))
    choice.calibration = calibration.describe() if calibration is not None else ""
    return choice


def _plan_lines(choice: planner.Choice | None, vocab: int) -> str:
    """`--plan`: the choice, why, and each candidate's measured speed and parameters."""
    if choice is None:
        return "a resumed run keeps its settings"
    lines = [f"planned: {choice.why}"]
    if choice.rates:
        lines.append(choice.calibration)
    for shape in dict.fromkeys([*planner.SHAPES, choice.shape]):
        rate = f"{choice.rates[shape]:>9,.0f} tokens/s" if shape in choice.rates else ""
        mark = "  <- chosen" if shape == choice.shape else ""
        lines.append(f"  {shape.name:<9} {shape.params(vocab) / 1e6:6.2f}M parameters {rate}{mark}")
    return "\n".join(lines)


def _load_resumable(resume: str | None) -> dict | None:
    if not resume:
        return None
    ckpt = checkpoint.load(resume)
    if "resume" not in ckpt:
        raise RnngenError(f"{resume} has no training state to resume (use the .last.pt file beside it)")
    train_state.upgrade(ckpt)
    return ckpt


def _sources(options: TrainOptions, cfg: TrainConfig, say: bool) -> tuple[Sources, Path]:
    """The sources given, else those of the run resumed, as it recorded them: an absolute path as it
    is, a relative one from the folder the run started in (older checkpoints: from here); and that folder."""
    here = Path(os.getcwd())
    if options.sources or not options.resume:
        return parse_sources(options.sources), here
    folder = Path(cfg.start_folder) if cfg.start_folder else here
    away = folder if folder != here else None  # None: the paths as written, read from here
    try:
        written = parse_sources(cfg.sources, away)
        given = written.under(away)
        missing = next((p for p in given.paths if p != "-" and not Path(p).expanduser().exists()), None)
        if missing is not None:
            raise RnngenError(f"no such file or folder: {missing}")
    except RnngenError as e:
        started = f" (it started in {folder})" if cfg.start_folder else ""
        raise type(e)(f"{e}, a source of the run resumed{started}; if the data has moved, give its sources "
                      f"again: rnngen train SOURCE... --resume {options.resume}") from None
    if say and away and any(p != "-" and not Path(p).expanduser().is_absolute() for p in written.paths):
        print(f"reading the run's relative sources from {folder}, where it started", file=sys.stderr)
    return given, folder


def _precision(name: str, resumed: dict | None, device: torch.device) -> torch.dtype | None:
    """--precision; `auto` on a resumed run keeps the precision the run had, where this device has it."""
    saved = (resumed or {}).get("train", {}).get("precision")
    if name == "auto" and saved in ("fp32", "bf16", "fp16"):
        try:
            return resolve_precision(saved, device)
        except RnngenError:  # e.g. an fp16 GPU run resumed on a CPU: auto stays
            pass
    return resolve_precision(name, device)


def _corpus(kind, given: Sources, files: list, options: TrainOptions, cfg: TrainConfig, codec,
            resumed: dict | None, base: dict | None):
    """The kind's corpus, tagged when the sources are; a resumed run keeps its tags, a fine-tuned
    one keeps the base's and may add more after them."""
    saved = tuple(((resumed or base) or {}).get("model", {}).get("tags") or ())
    if given.tags is None:
        if saved:
            raise UsageError(f"the model has tags ({', '.join(saved)}); give its sources as TAG=PATH")
        return kind.load_corpus(given.paths, files, options, cfg, codec)
    corpus = load_tagged(kind, given, options, cfg, codec, known=saved)
    if resumed is not None and tuple(corpus.tags.names) != saved:
        had = f"the tags {', '.join(saved)}" if saved else "no tags"
        raise UsageError(f"a resumed run keeps its tags: it had {had}, and these sources have "
                         f"{', '.join(corpus.tags.names)}")
    return corpus


def _model(settings: Plan, corpus, source: dict | None) -> RNNModel:
    """The model to train: new, or with the weights of the run resumed or the base fine-tuned."""
    torch.manual_seed(settings.train.seed)  # the same seed, the same starting weights (and the same on every rank)
    tags = tuple(corpus.tags.names) if corpus.tags else ()
    model = RNNModel(ModelConfig(**{**settings.model, "vocab_size": corpus.codec.vocab_size, "tags": tags}))
    if source is not None:
        _load_weights(model, checkpoint.build_model(source).state_dict())
    return model


def _load_weights(model: RNNModel, weights: dict) -> None:
    """The base's weights; a base with fewer token ids than the data's codec (a MIDI model from
    before parts, fine-tuned with --parts: the part ids come after all of its own) gives the rows
    it has, and the new ids keep their fresh ones; so do new tags (an untagged base has none)."""
    own = model.state_dict()
    weights = {**{k: v for k, v in own.items() if k.startswith("tag_embed")}, **weights}
    for name, value in weights.items():
        mine = own.get(name)
        if mine is not None and mine.shape[1:] == value.shape[1:] and mine.shape[0] > value.shape[0]:
            mine[: value.shape[0]] = value
            weights[name] = mine
    model.load_state_dict(weights)


def _out_path(options: TrainOptions, sources: list[str], check: bool = True) -> Path:
    """Where the best checkpoint goes; `check` (the process that writes) makes and checks its folder."""
    out, resume = options.out, options.resume
    if resume and out is None:  # carry on beside the run being resumed
        last = checkpoint.resolve(resume)
        name = last.name.removesuffix(".last" + checkpoint.SUFFIX).removesuffix(checkpoint.SUFFIX)
        return last.with_name(name + checkpoint.SUFFIX)
    if out is None:
        stem = "stdin" if sources == ["-"] else Path(sources[0].rstrip("/\\")).stem or "model"
        folder = Path("checkpoints")
        if check:
            folder.mkdir(exist_ok=True)
        out = folder / f"{stem}{checkpoint.SUFFIX}"
    out = Path(out)
    if out.suffix != checkpoint.SUFFIX:
        out = out.with_name(out.name + checkpoint.SUFFIX)
    if not check:
        return out
    if out.is_dir():
        raise RnngenError(f"--out {out} is a folder; give a file name such as {out / 'model.pt'}")
    for path in (out, checkpoint.last_path(out)):  # a resumed run writes over its own checkpoints
        writable_file(path, "--out", options.force or bool(resume))
    return out


def _check_log(options: TrainOptions) -> None:
    """--log can be written; a resumed run appends to its log, a new one replaces a log only with --force
    (appending would mix two runs in one log)."""
    if options.log is not None:
        writable_file(Path(options.log), "--log", options.force or bool(options.resume))


def _header(model: RNNModel, cfg: TrainConfig, corpus, dtype, world: distributed.World) -> str:
    m, unit, names = model.cfg, corpus.codec.unit + "s", corpus.names
    sampled = f" ({VAL_CAP:,} of them, the same each time, score an evaluation)" if len(corpus.val_ids) > VAL_CAP else ""
    src = names[0] if len(names) == 1 else f"{len(names)} files"
    stops = [s for s in (f"{cfg.max_steps} steps" if cfg.max_steps else "",
                         format_duration(cfg.max_time) if cfg.max_time else "",
                         f"{cfg.epochs:g} epochs" if cfg.epochs else "") if s]
    batch = f"batch {cfg.batch_size}"
    if world.size > 1:  # the effective batch is the total; the learning rate is not scaled
        backend = "nccl" if world.device.type == "cuda" else "gloo"
        batch = (f"data-parallel on {world.size} processes ({backend}): global batch {cfg.batch_size} "
                 f"= {world.size} x {cfg.batch_size // world.size} streams")
    return (
        f"training {m.cell} {m.layers} x {m.hidden} ({model.num_params() / 1e6:.2f}M parameters) on {src}: "
        f"{len(corpus.train_ids):,} train / {len(corpus.val_ids):,} validation {unit}{sampled}, vocabulary {m.vocab_size}\n"
        f"{batch} x seq-len {cfg.seq_len}, lr {cfg.lr:g}, dropout {m.dropout:g}"
        f"{f', weight drop {m.weight_drop:g}' if m.weight_drop else ''}"
        f"{f', embedding dropout {m.embed_dropout:g}' if m.embed_dropout else ''}, weight decay {cfg.weight_decay:g}"
        f"{f', weight average {cfg.ema:g}' if cfg.ema else ''}, "
        f"{world.device.type} {precision_name(dtype)}; stops at {' or '.join(stops)}"
        + (f"\ntags: {describe_tags(corpus.tags.names, corpus.tags.tokens)}" if corpus.tags else "")
    )
