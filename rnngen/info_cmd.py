"""`rnngen info`, `eval` and `stats`: what a checkpoint is, how well it predicts held-out data, and
what a set of MIDI files holds. Each returns the text the command prints."""

from __future__ import annotations

import math
import sys

from rnngen import checkpoint as ckpt_io
from rnngen.chart import chart_or_line
from rnngen.config import format_duration
from rnngen.tags import describe_tags

LN2 = math.log(2)


def info(name: str) -> str:
    path = ckpt_io.resolve(name)
    model, codec, ckpt = ckpt_io.load_model(path)
    cfg, tr = model.cfg, ckpt.get("train", {})
    lines = [
        f"checkpoint  {path}",
        f"kind        {codec.describe()}",
        f"model       {cfg.cell} {cfg.layers} x {cfg.hidden}, embed {cfg.embed}, dropout {cfg.dropout}"
        f"{f', weight drop {cfg.weight_drop}' if cfg.weight_drop else ''}"
        f"{f', embedding dropout {cfg.embed_dropout}' if cfg.embed_dropout else ''}, {model.num_params():,} parameters",
    ]
    if cfg.tags:
        lines.append(f"tags        {describe_tags(cfg.tags, tr.get('tag_tokens'))} of the training data")
    if tr:
        c = tr.get("config", {})
        lines += [
            f"trained     {tr.get('step', '?')} steps, {tr.get('epoch', 0):.2f} epochs, "
            f"{tr.get('tokens', 0):,} tokens in {format_duration(tr.get('elapsed', 0))} "
            f"on {tr.get('device', '?')} ({tr.get('precision', '?')})",
            f"settings    batch {c.get('batch_size')} x seq-len {c.get('seq_len')}, lr {c.get('lr')}, "
            f"weight decay {c.get('weight_decay')}, seed {c.get('seed')}",
            f"data        {_sources(c.get('sources', []))}",
        ]
        if "val_loss" in tr:
            v = tr["val_loss"]
            lines.append(f"validation  {v:.4f} nats/{codec.unit} ({v / LN2:.4f} bits/{codec.unit})")
        if tr.get("val_by_tag"):
            lines.append("  by tag    " + ", ".join(f"{t} {v:.4f}" for t, v in zip(cfg.tags, tr["val_by_tag"])))
        if tr.get("val_history"):
            lines.append(chart_or_line(tr["val_history"], sys.stdout.isatty()))
    lines.append(f"resumable   {'yes' if 'resume' in ckpt else 'no'}")
    return "\n".join(lines)


def _sources(names: list) -> str:
    if len(names) > 3:  # a MIDI corpus is hundreds of files
        return f"{', '.join(names[:2])}, ... ({len(names)} files)"
    return ", ".join(names) or "?"


def evaluate(name: str, files: list[str], device: str, tags: list[str] | None = None) -> str:
    """The loss on `files`; a tagged model scores them as each tag asked for (default: every tag),
    a line each, so one can see which style the data is closest to."""
    import torch

    from rnngen.device import resolve_device, resolve_precision
    from rnngen.kinds import kind_of
    from rnngen.tags import check_tags
    from rnngen.train import evaluate as loss_of

    dev = resolve_device(device)
    model, codec, _ = ckpt_io.load_model(name)
    check_tags(model.cfg.tags, tags or [])
    ids = kind_of(codec).load_eval(files, codec)
    model, dtype, unit = model.to(dev), resolve_precision("auto", dev), codec.unit
    lines = []
    for tag in (tags or model.cfg.tags) or [None]:
        each = None if tag is None else torch.full_like(ids, model.cfg.tags.index(tag), dtype=torch.uint8)
        nats = loss_of(model, ids, dev, dtype, tags=each)
        lines.append(f"{nats:.4f} nats/{unit}  {nats / LN2:.4f} bits/{unit}  perplexity {math.exp(nats):.3f}  "
                     f"({len(ids):,} {unit}s{'' if tag is None else f', as {tag}'})")
    return "\n".join(lines)


def stats(files: list[str], drums: bool) -> str:
    from rnngen.data import expand_sources
    from rnngen.midi import read_pieces
    from rnngen.midi_stats import measure, measure_parts, parts_report, report

    found = expand_sources(files)
    pieces, _ = read_pieces(found, drums=drums, parts=True)
    whole = [[n._replace(part=0) for n in p.notes] for p in pieces]  # as one instrument, as before parts
    return report(measure(whole), len(found)) + "\n" + parts_report(measure_parts(pieces))
