"""Does --tag steer, and what does sharing one model cost each style?

Text: one model trained on tiny shakespeare and on Python source (the public modules of the standard
library of the Python running this script, as much of it as there is shakespeare), tagged `shakespeare` and `python`,
for a time budget (default the 73 s one). It samples 16 x 1,000 characters per tag, and a classifier
that knows nothing of rnngen (character bigram likelihood under each corpus's training part, add-one
smoothed) says which corpus each sample is like: the whole sample, and its last 500 characters alone
(a style that fades over a long sample would fail there).

MIDI: the Bach chorales (four voices) against jigs this script writes (one fast line of eighth notes
in 6/8 in a major key, a different texture), tagged `chorale` and `jig`; 16 samples per tag are
classified by their polyphony (mean notes sounding, rnngen.midi_stats.sounding), as nearer the
chorales' or the jigs', for the whole piece and for its second half.

Both: each tag's validation loss in the tagged model, against a model trained on that tag's data alone
with the same budget (each tag's validation split is the same data in both).

    python benchmarks/tags.py text [--budget 73s | --budget STEPS]
    python benchmarks/tags.py midi [--budget 73s | --budget STEPS]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rnngen(*args: str, cache: Path) -> str:
    env = {**os.environ, "RNNGEN_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-m", "rnngen", *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"rnngen {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def budget_options(budget: str) -> list[str]:
    """`--max-time T`, or for a number of steps, `--max-steps N` with the settings the 73 s budget had
    (which the shared machine's load then cannot change: every model makes the same steps)."""
    if not budget.isdigit():
        return ["--max-time", budget]
    return ["--max-steps", budget, "--layers", "1", "--hidden", "512", "--embed", "64", "--dropout", "0",
            "--weight-drop", "0", "--embed-dropout", "0", "--seq-len", "64", "--batch-size", "32", "--lr", "8e-3",
            "--weight-decay", "0.1", "--ema", "0.995"]


def train_three(work: Path, corpora: dict[str, Path], budget: str) -> dict:
    """The tagged model and one model per tag, all with the same budget; their best checkpoints' facts."""
    import torch

    runs = {"tagged": [f"{tag}={path}" for tag, path in corpora.items()], **{tag: [path] for tag, path in corpora.items()}}
    facts = {}
    for name, sources in runs.items():
        out = work / f"{name}.pt"
        rnngen("train", *sources, *budget_options(budget), "-o", out, "-q", cache=work / "cache")
        train = torch.load(out, weights_only=True)["train"]
        facts[name] = {"steps": train["step"], "val": train["val_loss"], "by_tag": train.get("val_by_tag")}
        print(f"  {name}: {train['step']} steps, validation {train['val_loss']:.4f}", file=sys.stderr)
    return facts


def report_losses(facts: dict, tags: list[str], unit: str) -> None:
    print(f"validation loss per tag (nats/{unit}): tagged model | model of that tag alone, same budget")
    for k, tag in enumerate(tags):
        print(f"  {tag}: {facts['tagged']['by_tag'][k]:.4f} | {facts[tag]['val']:.4f} "
              f"(steps {facts['tagged']['steps']} | {facts[tag]['steps']})")


# -- text ------------------------------------------------------------------------------------------


def python_source(limit: int) -> str:
    """The standard library's public modules (not those named _*, which hold generated tables and
    build flags) in name order, until `limit` characters."""
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("[!_]*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


class Bigrams:
    """log P(text) under a corpus's character bigrams, add-one smoothed over both corpora's characters."""

    def __init__(self, text: str, alphabet: set[str]):
        self.pairs = Counter(zip(text, text[1:]))
        self.firsts = Counter(text[:-1])
        self.size = len(alphabet) + 1  # one more for characters neither corpus has

    def score(self, text: str) -> float:
        return sum(math.log((self.pairs[(a, b)] + 1) / (self.firsts[a] + self.size)) for a, b in zip(text, text[1:]))


def text_benchmark(work: Path, budget: str, per_tag: int) -> None:
    shakespeare = (ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    corpora = {"shakespeare": work / "shakespeare.txt", "python": work / "python.txt"}
    corpora["shakespeare"].write_text(shakespeare, encoding="utf-8")
    corpora["python"].write_text(python_source(len(shakespeare)), encoding="utf-8")
    texts = {tag: path.read_text(encoding="utf-8") for tag, path in corpora.items()}
    train_parts = {tag: text[: int(len(text) * 0.9)] for tag, text in texts.items()}  # rnngen's split
    alphabet = set("".join(texts.values()))
    judges = {tag: Bigrams(text, alphabet) for tag, text in train_parts.items()}

    def judge(text: str) -> str:
        return max(judges, key=lambda tag: judges[tag].score(text))

    facts = train_three(work, corpora, budget)
    model = work / "tagged.pt"
    print(f"text, {budget} per model: {per_tag} samples of 1,000 characters per tag, classified by bigrams")
    for tag in corpora:
        out = rnngen("sample", model, "--tag", tag, "-b", per_tag, "-n", 1000, "-s", 1, "--format", "jsonl",
                     cache=work / "cache")
        samples = [json.loads(line)["text"] for line in out.splitlines()]
        whole = sum(judge(s) == tag for s in samples)
        tail = sum(judge(s[-500:]) == tag for s in samples)
        print(f"  --tag {tag}: {whole}/{len(samples)} judged {tag}; last 500 characters: {tail}/{len(samples)}")
        print(f"    e.g. {samples[0][-160:]!r}")
    report_losses(facts, list(corpora), "char")


# -- MIDI ------------------------------------------------------------------------------------------


def write_jigs(folder: Path, count: int, seed: int = 0) -> None:
    """One line of eighth notes in 6/8, a major key, mostly steps, phrases ending on the tonic."""
    from rnngen.midi.codec import STEPS_PER_QUARTER, Note
    from rnngen.midi.files import midi_bytes

    rng = random.Random(seed)
    eighth = STEPS_PER_QUARTER // 2
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        tonic = rng.choice([60, 62, 65, 67, 69])
        scale = [tonic + s for s in (-5, -3, -1, 0, 2, 4, 5, 7, 9, 11, 12, 14, 16)]
        degree, notes, t = 3, [], 0
        for bar in range(32):
            for beat in range(6):
                if bar % 8 == 7 and beat >= 3:  # a phrase ends: the tonic held
                    degree = 3 if beat == 3 else degree
                    if beat == 3:
                        notes.append(Note(t, scale[degree], 3 * eighth, 90))
                    t += eighth
                    continue
                degree = min(len(scale) - 1, max(0, degree + rng.choice([-2, -1, -1, 1, 1, 2, 0, 3, -3])))
                notes.append(Note(t, scale[degree], eighth, 100 if beat % 3 == 0 else 80))
                t += eighth
        (folder / f"jig{i:03d}.mid").write_bytes(midi_bytes(notes, qpm=180))


def polyphony(path: Path, second_half: bool = False) -> float:
    from rnngen.midi.files import read_midi
    from rnngen.midi_stats import sounding

    notes = read_midi(path).notes
    if second_half and notes:
        end = max(n.onset + n.dur for n in notes)
        notes = [n for n in notes if n.onset >= end // 2]
    a, b = sounding(notes)
    return a / max(1, b)


def midi_benchmark(work: Path, budget: str, per_tag: int) -> None:
    corpora = {"chorale": ROOT / "corpora" / "bach-chorales", "jig": work / "jigs"}
    write_jigs(corpora["jig"], 120)
    means = {tag: sum(map(polyphony, sorted(folder.glob("*.mid")))) / len(list(folder.glob("*.mid")))
             for tag, folder in corpora.items()}
    print(f"MIDI, {budget} per model: mean polyphony chorales {means['chorale']:.2f}, jigs {means['jig']:.2f}")

    def judge(value: float) -> str:
        return min(means, key=lambda tag: abs(means[tag] - value))

    facts = train_three(work, corpora, budget)
    for tag in corpora:
        out = work / f"samples-{tag}"
        out.mkdir()
        rnngen("sample", work / "tagged.pt", "--tag", tag, "-b", per_tag, "-n", 1500, "-s", 1, "-o", out, "-q",
               cache=work / "cache")
        files = sorted(out.glob("*.mid"))
        whole = [polyphony(f) for f in files]
        half = [polyphony(f, second_half=True) for f in files]
        print(f"  --tag {tag}: {sum(judge(v) == tag for v in whole)}/{len(files)} judged {tag} by polyphony "
              f"(mean {sum(whole) / len(whole):.2f}); second half: {sum(judge(v) == tag for v in half)}/{len(files)}")
    report_losses(facts, list(corpora), "event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["text", "midi"])
    parser.add_argument("--budget", default="73s", help="each model's training budget: a time (73s), or a number of "
                        "steps at the 73 s budget's settings")
    parser.add_argument("--per-tag", type=int, default=16, help="samples per tag")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    run = text_benchmark if args.kind == "text" else midi_benchmark
    if args.keep:
        args.keep.mkdir(parents=True)
        run(args.keep, args.budget, args.per_tag)
        return
    with tempfile.TemporaryDirectory(prefix="rnngen-tags-") as tmp:
        run(Path(tmp), args.budget, args.per_tag)


if __name__ == "__main__":
    main()
