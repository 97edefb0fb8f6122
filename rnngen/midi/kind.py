"""MIDI as a kind of data: its corpus (whole pieces held out), held-out files for `eval`, and
sampling (a .mid primer, grammar-masked generation, one .mid file per sample)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from rnngen.config import SampleConfig, TrainConfig, TrainOptions
from rnngen.errors import RnngenError, UsageError
from rnngen.midi.codec import MidiCodec, Note
from rnngen.midi.corpus import load_midi_corpus, load_midi_ids
from rnngen.midi.files import DEFAULT_QPM, MidiError, Piece, midi_bytes, parts_midi_bytes, read_midi
from rnngen.midi.parts import Part
from rnngen.midi.grammar import sample_tokens
from rnngen.output import check_midi_targets, output_paths, write_midi
from rnngen.text import Corpus, Sampling


class MidiKind:
    name = "midi"
    default_length = 2000  # events; a chorale is about 700
    # Measured on the shipped chorales over three seeds (benchmarks/RESULTS.md): at 0.7, 91-92% of the
    # notes fit the best scale (the corpus: 93.5%, 0.8: 90-91%) and the pitch classes stay near the
    # corpus's (0.6 drifts into a few keys: JS 0.004-0.021), and a third to a half of the pieces end.
    default_temperature = 0.7

    def load_corpus(self, sources: list[str], files: list, options: TrainOptions, cfg: TrainConfig,
                    codec: MidiCodec | None) -> Corpus:
        c = load_midi_corpus(files, val_frac=cfg.val_frac, seed=cfg.seed, codec=codec, drums=options.drums,
                             transpose=cfg.transpose, parts=options.parts, grow=options.init_from is not None,
                             cache_dir=options.cache_dir)
        return Corpus(c.codec, c.train_ids, c.val_ids, c.names, read=c.read)

    def load_eval(self, files: list[str], codec: MidiCodec) -> torch.Tensor:
        return load_midi_ids(files, codec)

    def sample(self, codec: MidiCodec, cfg: SampleConfig, run: Sampling) -> None:
        """One .mid file per sample (or the first one's bytes on stdout)."""
        if cfg.prime is not None:
            raise UsageError("this is a MIDI model: a prime must be a .mid file given with -f, not text with -p")
        text_only = [name for name, given in ((f"--format {cfg.fmt}", cfg.fmt != "text"), ("--stop", cfg.stop),
                                              ("--separator", cfg.separator != SampleConfig.separator)) if given]
        if text_only:
            raise UsageError(f"{', '.join(text_only)}: for text models only; {cfg.checkpoint} is a MIDI model, "
                             f"whose samples are .mid files")
        targets = output_paths(cfg.out, cfg.num_samples, f"{run.name}-{run.seed}", cfg.force,
                               cfg.audio)  # checked before the work
        check_midi_targets(targets, cfg.audio, cfg.soundfont)
        composed = self.compose(codec, run, cfg.num_samples, cfg.top_k, cfg.top_p, cfg.prime_file, cfg.qpm,
                                cfg.program, cfg.echo)
        write_midi(targets, [c.midi for c in composed], [c.description for c in composed], cfg.quiet, cfg.audio,
                   cfg.soundfont)

    def compose(self, codec: MidiCodec, run: Sampling, batch: int, top_k: int | None = None,
                top_p: float | None = None, prime_file: str | Path | None = None, qpm: float | None = None,
                program: int | None = None, echo: bool = True) -> list[Composed]:
        """`batch` pieces, continuing the .mid file `prime_file` where one is given: each one's notes, the
        parts its tracks play, its .mid bytes and a line that describes it."""
        prime, primer = [codec.bos], None
        if prime_file is not None:
            try:
                primer = read_midi(prime_file, codec.steps_per_quarter, codec.drums, codec.parts is not None)
            except MidiError as e:
                raise RnngenError(f"the primer {prime_file} cannot be used: {e}") from None
            prime = codec.encode(_primer_notes(codec, primer))[:-1]  # the piece so far: all but its EOS
        rows = sample_tokens(run.model, codec, prime, run.length, batch, run.temperature, top_k,
                             top_p, run.seed, run.device, stepper=run.step, tags=run.tags)
        tempo = qpm or (primer.qpm if primer is not None and primer.qpm else DEFAULT_QPM)
        pieces = [codec.decode(prime + row) for row in rows]
        if primer is not None and not echo:
            pieces = [_continuation(notes, len(codec.decode(prime))) for notes in pieces]
        parts = written_parts(codec, program, primer) if codec.parts is not None else [Part("", program or 0, False)]
        given = f" ({len(codec.decode(prime))} from the primer)" if primer is not None and echo else ""
        tags = run.tag_names() or [None] * len(rows)
        return [Composed(notes, parts, piece_file(notes, codec, tempo, program, primer),
                         f"{'' if tag is None else f'{tag}: '}{len(notes)} notes{given}, "
                         f"{_beats(notes, codec):g} beats at {tempo:g} qpm"
                         f"{'' if row and row[-1] == codec.eos else f', cut at -n {run.length}'}")
                for notes, row, tag in zip(pieces, rows, tags)]


class Composed(NamedTuple):
    notes: list[Note]
    parts: list[Part]
    midi: bytes  # the .mid file
    description: str


def piece_file(notes: list[Note], codec: MidiCodec, tempo: float, program: int | None, primer: Piece | None) -> bytes:
    """A sample as a .mid file: one piano track as before parts, else a track per part."""
    if codec.parts is None:
        return midi_bytes(notes, codec.steps_per_quarter, tempo, program or 0)
    return parts_midi_bytes(notes, written_parts(codec, program, primer), codec.parts.written_order(),
                            codec.steps_per_quarter, tempo)


def _primer_notes(codec: MidiCodec, primer: Piece) -> list[Note]:
    """The primer's notes by role: its parts as training would keep them (for a model of named parts,
    the tracks so named); a primer with none of them gives every part its nearest role instead."""
    return codec.notes_of(primer) or codec.notes_of(primer, strict=False)


def written_parts(codec: MidiCodec, program: int | None = None, primer: Piece | None = None) -> list[Part]:
    """What each role's track is called and plays: the role's name and program, or those of the
    primer's part that plays it (so a primer's parts carry through); --program sets every
    non-drum part's instrument."""
    parts = list(codec.parts.roles)
    if primer is not None:
        strict = bool(codec.notes_of(primer))  # as `_primer_notes` chose
        for part in reversed(primer.parts):  # the first of several parts in one role names it
            role = codec.parts.role_of(part, strict)
            if role is not None:
                parts[role] = Part(part.name or parts[role].name, part.program, parts[role].drums)
    if program is not None:
        parts = [p if p.drums else Part(p.name, program, p.drums) for p in parts]
    return parts


def _beats(notes: list[Note], codec: MidiCodec) -> float:
    return max((n.onset + n.dur for n in notes), default=0) / codec.steps_per_quarter


def _continuation(notes: list[Note], given: int) -> list[Note]:
    """The notes after the primer's first `given`, moved to start at 0 (for --no-echo). The
    grammar puts every new note after the primer's in (onset, pitch) order: later, or higher in
    the primer's last chord."""
    new = notes[given:]
    start = min((n.onset for n in new), default=0)
    return [n._replace(onset=n.onset - start) for n in new]


KIND = MidiKind()
