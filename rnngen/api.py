"""rnngen from Python: load a model, sample from it, score text, train one. The CLI's `sample`, `eval`
and `train` call these same functions, so a seed gives the same samples from either.

    import rnngen
    m = rnngen.load("shakespeare")
    texts = m.sample(500, prime="ROMEO:", temperature=0.8, seed=7, batch=4)   # list[str]
    for piece in m.stream(2000, prime="JULIET:"):
        print(piece, end="")
    m.score("some held-out text")                                            # Score(nats=..., ...)
    pieces = rnngen.load("bach").sample(batch=4, seed=1)                      # list[Piece]
    pieces[0].save("a.mid")
    model = rnngen.train(["corpora/tinyshakespeare.txt"], max_time="2m", out="run.pt")

torch is imported when a model is loaded, not when rnngen is.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnngen.errors import RnngenError, UsageError

if TYPE_CHECKING:
    from rnngen.text import Sampling

LN2 = math.log(2)


@dataclass(frozen=True)
class Score:
    """How well a model predicts some data: mean nats and bits per token, tokens scored, perplexity;
    for a tagged model, `by_tag` holds each tag's figures when the data is read as that tag."""

    nats: float
    bits: float
    tokens: int
    perplexity: float
    by_tag: dict[str, Score] = field(default_factory=dict)

    @classmethod
    def of(cls, nats: float, tokens: int) -> Score:
        return cls(nats, nats / LN2, tokens, math.exp(nats))


class Piece:
    """A sampled MIDI piece: its `notes` (onset, pitch, duration, velocity and part, on the model's grid
    of steps per quarter note), its `parts` (a note's `part` is its index there), and the .mid file's bytes. `save` writes .mid, audio (.wav, .flac,
    with the audio extra) or a piano roll (.png, .svg, .pdf, with the plot extra); in Jupyter it shows
    as a piano roll and a player where those extras are installed."""

    def __init__(self, notes: list, parts: list, midi: bytes, description: str):
        self.notes, self.parts, self.midi, self.description = notes, parts, midi, description

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the piece as `path`'s suffix says; an existing file is kept unless `force`."""
        from rnngen.data import writable_file
        from rnngen.output import AUDIO, PICTURES, write_midi

        path = Path(path).expanduser()
        if path.suffix.lower() not in (".mid", ".midi", *AUDIO, *PICTURES):
            raise UsageError(f"{path}: a piece is saved as .mid, .wav, .flac, .png, .svg or .pdf")
        writable_file(path, "the file", force)
        write_midi([path], [self.midi], [self.description], quiet=True)
        return path

    def __repr__(self) -> str:
        return f"<Piece: {self.description}>"

    def _repr_html_(self) -> str | None:
        """A piano roll and an audio player, each where its extra is installed."""
        import base64
        import tempfile

        html = []
        with tempfile.TemporaryDirectory() as tmp:
            for suffix, tag in ((".png", '<img src="data:image/png;base64,{}"/>'),
                                (".wav", '<audio controls src="data:audio/wav;base64,{}"></audio>')):
                try:
                    path = self.save(Path(tmp) / f"piece{suffix}")
                except RnngenError:  # the extra is not installed
                    continue
                html.append(tag.format(base64.b64encode(path.read_bytes()).decode()))
        return "<br/>".join(html) or None


class Model:
    """A trained model, ready to sample from and score. Make one with `rnngen.load`."""

    def __init__(self, name: str | Path, device: str = "auto", precision: str = "auto"):
        from rnngen import checkpoint
        from rnngen.device import resolve_device
        from rnngen.kinds import kind_of

        self.device = resolve_device(device)
        self.precision = precision
        self.name = str(name)
        self.net, self.codec, self.checkpoint = checkpoint.load_model(name)
        self.net.to(self.device)
        self.kind = kind_of(self.codec)

    @property
    def tags(self) -> tuple[str, ...]:
        """The styles a tagged model can be asked for (empty for an untagged one)."""
        return tuple(self.net.cfg.tags)

    @property
    def unit(self) -> str:
        return self.codec.unit

    def __repr__(self) -> str:
        c = self.net.cfg
        tags = f", tags {', '.join(c.tags)}" if c.tags else ""
        return f"<rnngen {self.kind.name} model {self.name}: {c.cell} {c.layers} x {c.hidden}{tags}>"

    def sampling(self, batch: int = 1, seed: int | None = None, length: int | None = None,
                 temperature: float | None = None, tag: Sequence[str] = ()) -> Sampling:
        """What a batch of samples needs, resolved once: the step at its precision, the seed (a fresh
        one when None), the length and temperature (the kind's defaults when None), each row's tag."""
        from rnngen.sample import make_step, step_precision
        from rnngen.tags import sample_tags
        from rnngen.text import Sampling

        if batch < 1 or (length is not None and length < 1):
            raise UsageError("batch and length must be at least 1")
        seed = seed if seed is not None else secrets.randbelow(2**31)
        step = make_step(self.net, step_precision(self.precision, self.device, self.net, batch), batch, self.device)
        tags = sample_tags(self.net.cfg.tags, list(tag), batch, self.checkpoint.get("train", {}).get("tag_tokens"), seed)
        return Sampling(self.net, step, self.device, seed, length or self.kind.default_length,
                        Path(self.name).stem or "sample", self.kind.default_temperature if temperature is None
                        else temperature, tags)

    def sample(self, length: int | None = None, *, prime: str | Path | None = None, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None, batch: int = 1,
               stop: Sequence[str] = (), tag: str | Sequence[str] | None = None) -> list[Any]:
        """`batch` samples of up to `length` tokens (characters or MIDI events; the kind's default when
        None). Text: a list of strings, the prime not included, each ending at its first `stop` string.
        MIDI: a list of `Piece`s, continuing `prime` (a .mid file) where one is given.
        The same seed and options give what `rnngen sample` gives."""
        run = self.sampling(batch, seed, length, temperature, _tags(tag))
        if self.kind.name == "midi":
            if stop:
                raise UsageError("stop strings are for text models; this is a MIDI model")
            composed = self.kind.compose(self.codec, run, batch, top_k, top_p, _primer(prime))
            return [Piece(notes, parts, midi, text) for notes, parts, midi, text in composed]
        from rnngen.output import collect_texts

        tokens = self._text_tokens(run, batch, prime, top_k, top_p)
        return collect_texts(tokens, self.codec, batch, list(stop), quiet=True, length=run.length)[0]

    def stream(self, length: int | None = None, *, prime: str | None = None, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop: Sequence[str] = (), tag: str | None = None) -> Iterator[str]:
        """One text sample, yielded a piece at a time as it is made (the prime not included)."""
        from rnngen.output import stream_text

        if self.kind.name != "text":
            raise UsageError("stream is for text models; sample a MIDI model with sample()")
        run = self.sampling(1, seed, length, temperature, _tags(tag))
        yield from stream_text(self._text_tokens(run, 1, prime, top_k, top_p), self.codec, list(stop))

    def _text_tokens(self, run: Sampling, batch: int, prime: str | Path | None, top_k, top_p):
        from rnngen.sample import generate
        from rnngen.text import text_start

        if isinstance(prime, Path):
            raise UsageError("a text model's prime is text; read the file and pass its text")
        return generate(run.model, text_start(self.codec, prime or ""), run.length, batch, run.temperature,
                        top_k, top_p, run.seed, run.device, stepper=run.step, tags=run.tags)

    def score(self, text: str | None = None, *, files: Sequence[str | Path] = (),
              tags: Sequence[str] = ()) -> Score:
        """How well the model predicts `text` (a text model) or `files` (text or .mid files, as
        `rnngen eval` reads them). A tagged model scores the data as each tag in `tags` (default: every
        tag) in `by_tag`; its own figures are then the first tag's."""
        from rnngen.device import resolve_precision
        from rnngen.tags import check_tags
        from rnngen.trainer import evaluate

        import torch

        if (text is None) == (not files):
            raise UsageError("score takes some text or some files, one of the two")
        check_tags(self.net.cfg.tags, list(tags))
        if text is not None:
            if self.kind.name != "text":
                raise UsageError("this is a MIDI model: score .mid files with files=[...]")
            self.codec.check(text, "the text")
            ids = torch.tensor(self.codec.encode(text), dtype=torch.long)
        else:
            ids = self.kind.load_eval([str(f) for f in files], self.codec)
        if len(ids) < 2:
            raise UsageError("score needs at least two tokens")
        dtype = resolve_precision("auto", self.device)
        scores = {}
        for tag in list(tags or self.net.cfg.tags) or [None]:
            each = None if tag is None else torch.full_like(ids, self.net.cfg.tags.index(tag), dtype=torch.uint8)
            scores[tag] = Score.of(evaluate(self.net, ids, self.device, dtype, tags=each), len(ids))
        first = next(iter(scores.values()))
        return first if None in scores else Score(first.nats, first.bits, first.tokens, first.perplexity,
                                                   {str(k): v for k, v in scores.items()})


def load(name: str | Path = "shakespeare", *, device: str = "auto", precision: str = "auto") -> Model:
    """A checkpoint by path, or a shipped model by name (`shakespeare`, `bach`). `device`: auto, cpu,
    cuda, cuda:N or mps; `precision`: the sampler's (auto, fp32, bf16, int8), as `rnngen sample` takes."""
    return Model(name, device, precision)


def train(sources: Sequence[str | Path], *, on_event: Callable[[Any], None] | None = None, **options: Any) -> Model:
    """Train as `rnngen train SOURCES` does, with its options as keyword arguments (`max_time="2m"`,
    `max_steps=`, `hidden=`, `out=`, `force=`, `quiet=`...; tagged sources as "TAG=PATH"), and return the
    best model. `on_event` is called with each step's `Event` (step, loss, validation loss, tokens/s)."""
    from rnngen import train_cmd
    from rnngen.config import TrainOptions, parse_duration

    if isinstance(sources, (str, Path)):
        raise UsageError("sources is a list of files or folders, e.g. ['corpus.txt']")
    if isinstance(options.get("max_time"), str):
        try:
            options["max_time"] = parse_duration(options["max_time"])
        except ValueError as e:
            raise UsageError(f"max_time: {e}") from None
    for name in ("out", "log", "cache_dir"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    try:
        params = TrainOptions.from_params({"sources": [str(s) for s in sources], **options})
    except TypeError as e:
        raise UsageError(str(e)) from None
    params.on_event = on_event
    outcome = train_cmd.run(params)
    if outcome.code:
        raise RnngenError(f"training stopped at step {outcome.steps}; resume with rnngen train --resume "
                          f"{outcome.last_path}")
    return load(outcome.best_path, device=params.device)


def _tags(tag: str | Sequence[str] | None) -> list[str]:
    return [] if tag is None else [tag] if isinstance(tag, str) else list(tag)


def _primer(prime: str | Path | None) -> Path | None:
    if prime is None:
        return None
    path = Path(prime)
    if path.suffix.lower() not in (".mid", ".midi"):
        raise UsageError("a MIDI model's prime is a .mid file")
    return path
