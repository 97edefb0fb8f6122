"""`rnngen info`, `eval` and `stats`: what a checkpoint is, how well it predicts held-out data, and
what a set of MIDI files holds. Each returns the text the command prints."""

from __future__ import annotations

import sys

from rnngen import checkpoint as ckpt_io
from rnngen.api import LN2
from rnngen.chart import chart_or_line
from rnngen.config import format_duration
from rnngen.tags import describe_tags



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
    """The loss on `files` (rnngen.api.Model.score); a tagged model scores them as each tag asked for
    (default: every tag), a line each, so one can see which style the data is closest to."""
    from rnngen.api import load

    model = load(name, device=device)
    score, unit = model.score(files=files, tags=tags or ()), model.unit
    rows = score.by_tag.items() if score.by_tag else [(None, score)]
    return "\n".join(f"{s.nats:.4f} nats/{unit}  {s.bits:.4f} bits/{unit}  perplexity {s.perplexity:.3f}  "
                     f"({s.tokens:,} {unit}s{'' if tag is None else f', as {tag}'})" for tag, s in rows)


def stats(files: list[str], drums: bool) -> str:
    from rnngen.data import expand_sources
    from rnngen.midi import read_pieces
    from rnngen.midi_stats import measure, measure_parts, parts_report, report

    found = expand_sources(files)
    pieces, _ = read_pieces(found, drums=drums, parts=True)
    whole = [[n._replace(part=0) for n in p.notes] for p in pieces]  # as one instrument, as before parts
    return report(measure(whole), len(found)) + "\n" + parts_report(measure_parts(pieces))
