"""How much do a MIDI model's samples look like its training set?

Samples pieces from a checkpoint (default: the shipped `bach`), writes each one as a .mid file in
memory and reads it back, and compares the samples with the training corpus on the statistics of
`rnngen stats`. As a yardstick for what sampling noise alone does, the same figures are given for
as many pieces drawn at random from the corpus.

    python benchmarks/midi_quality.py [CHECKPOINT] [--corpus corpora/bach-chorales] [-b 32] [-n 2000] [-t 0.8]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

import mido
import torch

from rnngen import checkpoint
from rnngen.data import expand_sources
from rnngen.midi import MidiError, midi_bytes, read_midi, read_pieces, sample_tokens, struck_again
from rnngen.midi_stats import Stats, histogram_distance, measure

ROOT = Path(__file__).resolve().parent.parent


def decodes_to_a_valid_file(notes, codec) -> bool:
    """A file mido opens, that has notes, and that reads back as exactly the notes sampled."""
    if not notes:
        return False
    data = midi_bytes(notes, codec.steps_per_quarter)
    try:
        mido.MidiFile(file=io.BytesIO(data))
        back = read_midi(data, codec.steps_per_quarter)
    except (MidiError, OSError, EOFError, ValueError):
        return False
    return [n[:3] for n in back.notes] == [n[:3] for n in struck_again(notes)]


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
    parser.add_argument("-t", "--temperature", type=float, default=0.8)
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

    pieces, _ = read_pieces(expand_sources([args.corpus]), codec.steps_per_quarter, codec.drums)
    corpus = [p.notes for p in pieces]
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

    c, r, s = measure(corpus), measure(reference), measure(notes)
    val = ckpt.get("train", {}).get("val_loss")
    print(f"checkpoint {args.checkpoint}: {codec.describe()}"
          + (f", validation {val:.4f} nats/event" if val is not None else ""))
    print(f"{B} samples, at most {args.length} events each, temperature {args.temperature:g}"
          f"{f', top-p {args.top_p:g}' if args.top_p else ''}, seed {args.seed}: {events:,} events "
          f"in {seconds:.1f} s on {device.type}")
    table = [("", f"corpus ({c.files} files)", f"{r.files} corpus pieces", f"{B} samples")]
    table += rows(c, r, s, f"{valid}/{B} ({100 * valid / B:.0f}%)", f"{ended}/{B}")
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for i, row in enumerate(table):
        print(f"{row[0]:<{widths[0]}}  " + "  ".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:])))
        if i == 0:
            print("-" * (sum(widths) + 6))
    if valid < B:
        sys.exit(1)


if __name__ == "__main__":
    main()
