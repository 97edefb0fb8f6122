"""Audio rendering speed: seconds of audio per second of rendering (the real-time factor) on Bach
chorales, for rnngen's renderer and, when they are installed, the other pip synthesizers it was
chosen against, all with the same SoundFont.

    python benchmarks/render_speed.py                      # rnngen.audio, the first 32 chorales
    python benchmarks/render_speed.py --seed 1             # a seeded choice of 32 instead
    python benchmarks/render_speed.py --synth all          # also symusic and tinysoundfont, if installed

Prints a markdown table. Rendering time counts reading the SoundFont and the MIDI file, the
synthesis, and (for rnngen) converting to an array; writing a file is not counted.
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time
from pathlib import Path

from rnngen import audio

CHORALES = Path(__file__).resolve().parent.parent / "corpora" / "bach-chorales"


def rnngen_render(midi: bytes, soundfont: Path, rate: int) -> float:
    return audio.render(midi, soundfont, sample_rate=rate).seconds


def symusic_render(midi: bytes, soundfont: Path, rate: int) -> float:
    import symusic

    buffer = symusic.Synthesizer(str(soundfont), rate, 0).render(symusic.Score.from_midi(midi), True)
    return buffer.shape[1] / rate  # (channels, frames)


def tinysoundfont_render(midi: bytes, soundfont: Path, rate: int) -> float:
    """The sequencer plays until its last event; 2 s more let the last notes ring, as rnngen does."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=rate)
    synth.sfload(str(soundfont))
    sequencer = tinysoundfont.Sequencer(synth)
    with tempfile.NamedTemporaryFile(suffix=".mid") as f:  # it loads MIDI from a file name only
        f.write(midi)
        f.flush()
        sequencer.midi_load(f.name)
    frames, block = 0, 4096
    while not sequencer.is_empty():
        frames += len(synth.generate(block)) // 8  # float32 stereo
    for _ in range(2 * rate // block):
        frames += len(synth.generate(block)) // 8
    return frames / rate


SYNTHS = {"rnngen": rnngen_render, "symusic": symusic_render, "tinysoundfont": tinysoundfont_render}


def chosen_files(count: int, seed: int | None) -> list[Path]:
    files = sorted(CHORALES.glob("*.mid"))
    return random.Random(seed).sample(files, count) if seed is not None else files[:count]


def measure(render, files: list[Path], soundfont: Path, rate: int) -> tuple[float, float]:
    """(seconds of audio, seconds of rendering) over all the files."""
    rendered = spent = 0.0
    for path in files:
        t0 = time.perf_counter()
        rendered += render(path.read_bytes(), soundfont, rate)
        spent += time.perf_counter() - t0
    return rendered, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--seed", type=int, default=None, help="a seeded choice rather than the first N")
    parser.add_argument("--rate", type=int, default=audio.DEFAULT_RATE)
    parser.add_argument("--soundfont", default=None, help="default: as rnngen resolves it")
    parser.add_argument("--synth", default="rnngen", help="rnngen, symusic, tinysoundfont, or all")
    args = parser.parse_args()
    soundfont = audio.resolve_soundfont(args.soundfont)
    files = chosen_files(args.files, args.seed)
    names = list(SYNTHS) if args.synth == "all" else args.synth.split(",")
    print(f"{len(files)} chorales, {args.rate} Hz, {soundfont.name}\n")
    print("| synth | files | seconds of audio | seconds of rendering | real-time factor |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        try:
            rendered, spent = measure(SYNTHS[name], files, soundfont, args.rate)
        except ImportError as e:
            print(f"| {name} | not installed ({e.name}) | | | |")
            continue
        except Exception as e:  # a candidate that fails is a result too
            print(f"| {name} | failed: {str(e).splitlines()[0][:80]} | | | |")
            continue
        print(f"| {name} | {len(files)} | {rendered:,.1f} | {spent:,.2f} | {rendered / spent:,.1f}x |")


if __name__ == "__main__":
    main()
