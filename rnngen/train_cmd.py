"""`rnngen train`: read the sources, build or restore the model, run the trainer, say where it went.

Started by torchrun, every process runs all of this on the same data and options; only rank 0 talks,
writes the metrics log and saves checkpoints (see rnngen/distributed.py and rnngen/train.py).
"""

from __future__ import annotations

import math
import signal
from dataclasses import fields
from pathlib import Path

import torch

from rnngen import checkpoint, distributed
from rnngen.codec import TextCodec, codec_from_dict
from rnngen.config import DEFAULT_MAX_TIME, ModelConfig, TrainConfig, defaults_for_budget, format_duration
from rnngen.data import detect_kind, expand_sources, load_text, split, writable_folder
from rnngen.device import precision_name, resolve_device, resolve_precision
from rnngen.errors import RnngenError
from rnngen.model import RNNModel
from rnngen.report import Reporter
from rnngen.train import Interrupted, Trainer

def run(**options) -> int:
    """Train with `options` (the keywords of `_run`); under torchrun, as one rank of a process group."""
    if options.get("resume") and options.get("init_from"):
        raise RnngenError("--resume continues a run and --init-from starts a new one; give one of them")
    world = distributed.setup(options["device"])  # None unless torchrun started this process
    try:
        return _run(world, **options)
    except RnngenError as e:
        if world is not None and world.size > 1:
            raise RnngenError(f"(rank {world.rank}) {e}") from e
        raise
    finally:
        distributed.shutdown(world)


def _run(world: distributed.World | None, *, sources: list[str], kind: str, cell: str, layers, hidden, embed,
         dropout, weight_drop, embed_dropout, seq_len, batch_size, lr, ema, weight_decay, grad_clip: float, warmup: int,
         max_steps, max_time, epochs, val_frac: float, eval_every, out: Path | None, force: bool, resume: str | None,
         init_from: str | None, device: str, precision: str, seed, log: Path | None, quiet: bool,
         transpose: int | None = None, drums: bool | None = None) -> int:
    main = world is None or world.main
    dev = world.device if world is not None else resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if world is not None and "-" in sources:
        raise RnngenError("several processes cannot share standard input; train from a file")

    given = dict(layers=layers, hidden=hidden, embed=embed, dropout=dropout, weight_drop=weight_drop,
                 embed_dropout=embed_dropout, seq_len=seq_len, batch_size=batch_size, lr=lr, ema=ema,
                 weight_decay=weight_decay)
    limits = dict(max_steps=max_steps, max_time=max_time, epochs=epochs)

    resumed = checkpoint.load(resume) if resume else None
    if resumed is not None:
        if "resume" not in resumed:
            raise RnngenError(f"{resume} has no training state to resume (use the .last.pt file beside it)")
        codec = codec_from_dict(resumed["codec"])
        cfg = _resumed_config(resumed, limits, given, eval_every)
        sources = sources or cfg.sources
        model_cfg = checkpoint.model_config(resumed)
        saved_precision = resumed.get("train", {}).get("precision")
        if precision == "auto" and saved_precision in ("fp32", "bf16", "fp16"):  # keep the run's precision
            try:
                dtype = resolve_precision(saved_precision, dev)
            except RnngenError:  # e.g. an fp16 GPU run resumed on a CPU: auto stays
                pass
    else:
        if not any(limits.values()):
            limits["max_time"] = DEFAULT_MAX_TIME
        budget = defaults_for_budget(limits["max_time"] if not (max_steps or epochs) else None)
        chosen = {k: (v if v is not None else budget[k]) for k, v in given.items()}
        cfg = TrainConfig(
            seq_len=chosen["seq_len"], batch_size=chosen["batch_size"], lr=chosen["lr"], ema=chosen["ema"],
            warmup_steps=warmup, weight_decay=chosen["weight_decay"], grad_clip=grad_clip, eval_every=eval_every, val_frac=val_frac,
            seed=seed if seed is not None else 1337, transpose=transpose or 0, **limits,
        )
        model_cfg = None

    files = expand_sources(sources)
    kind = detect_kind(files, kind if resumed is None else resumed["kind"])
    base = checkpoint.load(init_from) if init_from else None
    if base is not None and base["kind"] != kind:
        raise RnngenError(f"--init-from is a {base['kind']} model, but the data is {kind}")
    if kind == "midi":
        from rnngen.midi import load_midi_corpus

        if resumed is not None and transpose is not None and transpose != cfg.transpose:
            raise RnngenError("--transpose cannot change when resuming; the run keeps its settings")
        codec, train_ids, val_ids, names = load_midi_corpus(files, val_frac=cfg.val_frac, seed=cfg.seed,
                                                            codec=codec if resumed else _base_codec(base),
                                                            drums=drums, transpose=cfg.transpose)
    else:
        if transpose or drums is not None:
            raise RnngenError("--transpose and --drums are for MIDI training, but the sources are text")
        text, names = load_text(sources)
        if resumed is None:
            codec = _base_codec(base) or TextCodec.fit(text)
        train_ids, val_ids = split(codec.encode_corpus(text), cfg.val_frac)  # names unseen characters
        del text  # the ids are all training needs: a large corpus is not held twice
    if len(val_ids) < 2:
        raise RnngenError("the validation split is empty: the corpus is too short for --val-frac; add data")
    cfg.sources = [str(n) for n in names] if not resumed else cfg.sources

    if model_cfg is None:
        if base is not None:
            model_cfg = checkpoint.model_config(base)
            for key in ("dropout", "weight_drop", "embed_dropout"):  # fine-tuning keeps the base's unless given
                if given[key] is not None:
                    setattr(model_cfg, key, given[key])
        else:
            model_cfg = ModelConfig(vocab_size=codec.vocab_size, cell=cell, layers=chosen["layers"],
                                    hidden=chosen["hidden"], embed=chosen["embed"], dropout=chosen["dropout"],
                                    weight_drop=chosen["weight_drop"], embed_dropout=chosen["embed_dropout"])
    torch.manual_seed(cfg.seed)  # the same seed, the same starting weights (and the same on every rank)
    model = RNNModel(model_cfg)
    if resumed is not None or base is not None:
        model.load_state_dict(checkpoint.build_model(resumed or base).state_dict())

    out = _out_path(out, sources, resume, force, check=main)
    reporter = Reporter(unit="char" if kind == "text" else "event", quiet=quiet or not main,
                        log=log if main else None)
    reporter.say(_header(model, cfg, kind, names, train_ids, val_ids, dev, dtype, world))
    trainer = Trainer(model, codec, train_ids, val_ids, cfg, dev, dtype, out, report=reporter,
                      resume=resumed["resume"] if resumed else None,
                      meta={"kind": kind}, world=world)
    try:
        with reporter:
            outcome = trainer.run()
    except Interrupted as stop:
        reporter.say(f"stopped at step {stop.step}; saved {stop.path}")
        relaunch = f" (under torchrun, or with --nproc {world.size}, to go on with {world.size} processes)" if world else ""
        reporter.say(f"resume with: rnngen train --resume {stop.path}{relaunch}")
        return 128 + stop.signum if stop.signum in (signal.SIGINT, signal.SIGTERM) else 1
    except RnngenError:
        if not main:  # stops inside the loop are agreed by all ranks, and rank 0 says why
            return 1
        raise
    unit = "char" if kind == "text" else "event"
    reporter.say(
        f"done: {outcome.steps} steps in {format_duration(outcome.elapsed)}; best validation loss "
        f"{outcome.best_val:.4f} nats/{unit} ({outcome.best_val / math.log(2):.4f} bits/{unit})"
    )
    reporter.say(f"saved {outcome.best_path} (best) and {outcome.last_path} (resumable)")
    reporter.say(f"sample with: rnngen sample {outcome.best_path}")
    return 0


def _base_codec(base: dict | None):
    return codec_from_dict(base["codec"]) if base is not None else None


def _resumed_config(ckpt: dict, limits: dict, given: dict, eval_every) -> TrainConfig:
    try:
        saved = dict(ckpt["train"]["config"])
    except (KeyError, TypeError) as e:
        raise RnngenError("the checkpoint's training settings are damaged") from e
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in names})
    if any(v is not None for v in limits.values()):  # new limits replace the old ones
        cfg.max_steps, cfg.max_time, cfg.epochs = limits["max_steps"], limits["max_time"], limits["epochs"]
    if given.get("lr") is not None:
        cfg.lr = given["lr"]
    if given.get("ema") is not None:
        cfg.ema = given["ema"]
    for key in ("seq_len", "batch_size", "layers", "hidden", "embed", "dropout", "weight_drop", "embed_dropout",
                "weight_decay"):
        if given.get(key) is not None:
            raise RnngenError(f"--{key.replace('_', '-')} cannot change when resuming; the run keeps its settings")
    if eval_every is not None:
        cfg.eval_every = eval_every
    return cfg


def _out_path(out: Path | None, sources: list[str], resume: str | None, force: bool, check: bool = True) -> Path:
    """Where the best checkpoint goes; `check` (the process that writes) makes and checks its folder."""
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
    writable_folder(out, "--out")
    if out.exists() and not force and not resume:
        raise RnngenError(f"{out} already exists; pass --force to overwrite it, or choose another --out")
    return out


def _header(model: RNNModel, cfg: TrainConfig, kind: str, names, train_ids: torch.Tensor,
            val_ids: torch.Tensor, dev: torch.device, dtype, world=None) -> str:
    m = model.cfg
    unit = "chars" if kind == "text" else "events"
    src = names[0] if len(names) == 1 else f"{len(names)} files"
    stops = [s for s in (f"{cfg.max_steps} steps" if cfg.max_steps else "",
                         format_duration(cfg.max_time) if cfg.max_time else "",
                         f"{cfg.epochs:g} epochs" if cfg.epochs else "") if s]
    batch = f"batch {cfg.batch_size}"
    if world is not None:  # the effective batch is the total; the learning rate is not scaled
        backend = "nccl" if dev.type == "cuda" else "gloo"
        batch = (f"data-parallel on {world.size} processes ({backend}): global batch {cfg.batch_size} "
                 f"= {world.size} x {cfg.batch_size // world.size} streams")
    return (
        f"training {m.cell} {m.layers} x {m.hidden} ({model.num_params() / 1e6:.2f}M parameters) on {src}: "
        f"{len(train_ids):,} train / {len(val_ids):,} validation {unit}, vocabulary {m.vocab_size}\n"
        f"{batch} x seq-len {cfg.seq_len}, lr {cfg.lr:g}, dropout {m.dropout:g}"
        f"{f', weight drop {m.weight_drop:g}' if m.weight_drop else ''}"
        f"{f', embedding dropout {m.embed_dropout:g}' if m.embed_dropout else ''}, weight decay {cfg.weight_decay:g}"
        f"{f', weight average {cfg.ema:g}' if cfg.ema else ''}, "
        f"{dev.type} {precision_name(dtype)}; stops at {' or '.join(stops)}"
    )
