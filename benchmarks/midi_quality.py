"""How much do a MIDI model's samples look like its training set?

Samples pieces from a checkpoint (default: the shipped `bach`), writes each one as a .mid file in
memory and reads it back, and compares the samples with the training corpus on the statistics of
`rnngen stats`. As a yardstick for what sampling noise alone does, the same figures are given for
as many pieces drawn at random from the corpus. For a model with parts it also checks each sample's
parts: all of the model's parts present, their mean pitches in the corpus's order, each part's range
inside that part's range in the corpus.

    python benchmarks/midi_quality.py [CHECKPOINT] [--corpus corpora/bach-chorales] [-b 32] [-n 2000] [-t 0.7]
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
import time
from pathlib import Path

import mido
import torch

from rnngen import checkpoint
from rnngen.data import expand_sources
from rnngen.midi import MidiError, canonical, midi_bytes, read_midi, read_pieces, sample_tokens, struck_again
from rnngen.midi.files import parts_midi_bytes
from rnngen.midi.kind import written_parts
from rnngen.midi_stats import Stats, histogram_distance, measure

ROOT = Path(__file__).resolve().parent.parent


def decodes_to_a_valid_file(notes, codec) -> bool:
    """A file mido opens, that has notes, and that reads back as exactly the notes sampled."""
    if not notes:
        return False
    if codec.parts is None:
        data = midi_bytes(notes, codec.steps_per_quarter)
    else:
        names = written_parts(codec)
        data = parts_midi_bytes(notes, names, codec.parts.written_order(), codec.steps_per_quarter)
    try:
        mido.MidiFile(file=io.BytesIO(data))
        back = read_midi(data, codec.steps_per_quarter, parts=codec.parts is not None)
    except (MidiError, OSError, EOFError, ValueError):
        return False
    if codec.parts is None:
        return [n[:3] for n in back.notes] == [n[:3] for n in struck_again(notes)]
    return sorted((*n[:3], back.parts[n.part].name) for n in back.notes) == \
        sorted((*n[:3], names[n.part].name) for n in struck_again(notes))


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence of two pitch-class histograms, in bits (as the shared ruler has it)."""
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x)  # noqa: E731
    return (kl(p, m) + kl(q, m)) / 2


def part_checks(codec, corpus_roles, samples) -> list[tuple[str, ...]]:
    """Rows for a model with parts: how many samples have every part, in the corpus's pitch order,
    each inside the corpus's range for that part."""
    P = codec.num_parts
    span = {r: (min(n.pitch for p in corpus_roles for n in p if n.part == r),
                max(n.pitch for p in corpus_roles for n in p if n.part == r)) for r in range(P)}
    complete = ordered = in_range = 0
    for notes in samples:
        by_role = {r: [n.pitch for n in notes if n.part == r] for r in range(P)}
        if any(not v for v in by_role.values()):
            continue
        complete += 1
        means = [sum(v) / len(v) for _, v in sorted(by_role.items())]
        ordered += all(a < b for a, b in zip(means, means[1:]))  # roles run lowest part first
        in_range += all(span[r][0] <= min(v) and max(v) <= span[r][1] for r, v in by_role.items())
    B = len(samples)
    names = ", ".join(f"{codec.parts.roles[r].label()} {span[r][0]}-{span[r][1]}" for r in reversed(range(P)))
    return [(f"all {P} parts present", "-", "-", f"{complete}/{B}"),
            ("parts' mean pitches in the corpus's order", "-", "-", f"{ordered}/{B}"),
            (f"every part in its corpus range ({names})", "-", "-", f"{in_range}/{B}")]


def rows(corpus: Stats, reference: Stats, samples: Stats, valid: str, ended: str) -> list[tuple[str, ...]]:
    def f(value, fmt):
        return format(value, fmt)

    table = [("decode to a valid file", "-", "-", valid), ("ended by EOS (not cut by -n)", "-", "-", ended)]
    for label, get, fmt in [
        ("notes per piece", lambda s: s.notes / max(1, s.files), ".0f"),
        ("beats per piece", lambda s: s.beats / max(1, s.files), ".1f"),
        ("lowest pitch (mean per piece)", lambda s: s.mean_low, ".1f"),
        ("highest pitch (mean per piece)", lambda s: s.mean_high, ".1f"),
        ("pitch range (lowest-highest)", None, ""),
        ("notes per beat", lambda s: s.notes_per_beat, ".2f"),
        ("polyphony (notes at once)", lambda s: s.polyphony, ".2f"),
        ("notes in best major/minor scale", lambda s: 100 * s.scale_share, ".1f"),
    ]:
        if get is None:
            table.append((label, *(f"{s.lowest}-{s.highest}" for s in (corpus, reference, samples))))
        else:
            table.append((label, *(f(get(s), fmt) + ("%" if "scale" in label else "") for s in (corpus, reference, samples))))
    table.append(("pitch-class distance to corpus (TV)", "0",
                  f"{histogram_distance(reference.pitch_classes, corpus.pitch_classes):.3f}",
                  f"{histogram_distance(samples.pitch_classes, corpus.pitch_classes):.3f}"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default="bach")
    parser.add_argument("--corpus", default=str(ROOT / "corpora" / "bach-chorales"))
    parser.add_argument("-b", "--num-samples", type=int, default=32)
    parser.add_argument("-n", "--length", type=int, default=2000, help="events per sample at most (as rnngen sample)")
    parser.add_argument("-t", "--temperature", type=float, default=0.7, help="rnngen sample's default for MIDI")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("-s", "--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model, codec, ckpt = checkpoint.load_model(args.checkpoint)
    if codec.kind != "midi":
        sys.exit(f"{args.checkpoint} is a {codec.kind} model, not a MIDI one")
    device = torch.device(args.device)
    model.to(device)

    pieces, _ = read_pieces(expand_sources([args.corpus]), codec.steps_per_quarter, codec.drums, parts=True)
    corpus = [canonical([n._replace(part=0) for n in p.notes]) for p in pieces]  # every part, as one stream
    reference = random.Random(args.seed).sample(corpus, min(args.num_samples, len(corpus)))

    t0 = time.perf_counter()
    sampled = sample_tokens(model, codec, [codec.bos], args.length, args.num_samples, args.temperature,
                            None, args.top_p, args.seed, device)
    seconds = time.perf_counter() - t0
    notes = [codec.decode([codec.bos] + row) for row in sampled]
    valid = sum(decodes_to_a_valid_file(n, codec) for n in notes)
    ended = sum(1 for row in sampled if row and row[-1] == codec.eos)
    events = sum(len(row) for row in sampled)
    B = args.num_samples

    merged = [canonical([n._replace(part=0) for n in p]) for p in notes]
    c, r, s = measure(corpus), measure(reference), measure(merged)
    val = ckpt.get("train", {}).get("val_loss")
    print(f"checkpoint {args.checkpoint}: {codec.describe()}"
          + (f", validation {val:.4f} nats/event" if val is not None else ""))
    print(f"{B} samples, at most {args.length} events each, temperature {args.temperature:g}"
          f"{f', top-p {args.top_p:g}' if args.top_p else ''}, seed {args.seed}: {events:,} events "
          f"in {seconds:.1f} s on {device.type}")
    table = [("", f"corpus ({c.files} files)", f"{r.files} corpus pieces", f"{B} samples")]
    table += rows(c, r, s, f"{valid}/{B} ({100 * valid / B:.0f}%)", f"{ended}/{B}")
    table.append(("pitch-class Jensen-Shannon divergence (bits)", "0",
                  f"{js_divergence(r.pitch_classes, c.pitch_classes):.4f}",
                  f"{js_divergence(s.pitch_classes, c.pitch_classes):.4f}"))
    if codec.parts is not None:
        table += part_checks(codec, [codec.notes_of(p) for p in pieces], notes)
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for i, row in enumerate(table):
        print(f"{row[0]:<{widths[0]}}  " + "  ".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:])))
        if i == 0:
            print("-" * (sum(widths) + 6))
    if valid < B:
        sys.exit(1)


if __name__ == "__main__":
    main()
