"""Typed configuration. The command line fills one options object per command; `plan` turns the
training options, the time budget and a resumed or base checkpoint into `ModelConfig` and
`TrainConfig`, whose `asdict()` goes into the checkpoint.

Each setting says here, beside its default, what a resumed run may do with it (`on_resume`):
"fixed" settings must stay as the run had them, "new" ones take the value given, and the three
limits are replaced together. Adding a training option is its CLI declaration, its field here
and the code that uses it.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from rnngen.errors import RnngenError

CELLS = ("lstm", "gru", "rnn")


def setting(default: Any = None, on_resume: str = "fixed", fine_tune: bool = False, factory=None):
    """A config field with its rule for resumed runs and, for model settings, whether fine-tuning
    (--init-from) may change it."""
    meta = {"on_resume": on_resume, "fine_tune": fine_tune}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = setting("lstm")
    layers: int = setting(2)
    hidden: int = setting(512)
    embed: int = setting(64)
    dropout: float = setting(0.0, fine_tune=True)
    weight_drop: float = setting(0.0, fine_tune=True)  # training only: dropout on the recurrent weights, one mask per step
    embed_dropout: float = setting(0.0, fine_tune=True)  # training only: drops whole input tokens (their embeddings)
    tags: tuple[str, ...] = ()  # the styles the model is conditioned on (rnngen/tags.py); like vocab_size, from the data

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        self.tags = tuple(self.tags)  # a checkpoint stores a list


LIMITS = ("max_steps", "max_time", "epochs")
FROM_DATA = ("vocab_size", "tags")  # ModelConfig fields that the corpus decides, not an option


@dataclass
class TrainConfig:
    seq_len: int = setting(128)
    batch_size: int = setting(64)
    lr: float = setting(2e-3, on_resume="new")
    min_lr_frac: float = setting(0.1)  # cosine decay ends at lr * min_lr_frac
    warmup_steps: int = setting(100)
    weight_decay: float = setting(0.1)
    grad_clip: float = setting(1.0, on_resume="new")
    ema: float = setting(0.0, on_resume="new")  # decay of the weight average that is evaluated and saved; 0: none
    max_steps: int | None = setting(on_resume="limit")
    max_time: float | None = setting(on_resume="limit")  # seconds
    epochs: float | None = setting(on_resume="limit")
    eval_every: int | None = setting(on_resume="new")  # None: ten evaluations over the run
    val_frac: float = setting(0.1)
    transpose: int = setting(0)  # MIDI: training pieces also moved by up to this many semitones each way
    seed: int = setting(1337)
    sources: list[str] = setting(factory=list)
    start_folder: str | None = setting()  # where the run started: its relative sources are read from there


@dataclass
class TrainOptions:
    """`rnngen train` as asked: how to run it, and `settings`, the ModelConfig and TrainConfig
    fields given on the command line (the others come from the budget or the resumed run)."""

    sources: list[str]
    settings: dict[str, Any]
    kind: str = "auto"
    out: Path | None = None
    force: bool = False
    resume: str | None = None
    init_from: str | None = None
    drums: bool | None = None
    cache_dir: Path | None = None  # where read corpora are kept (rnngen/cache.py); None: the default
    parts: str | None = None  # MIDI: "tracks" (each track a part), "merge" (one stream) or track names
    device: str = "auto"
    precision: str = "auto"
    log: Path | None = None
    quiet: bool = False
    nproc: int | None = None
    dry_run: bool = False  # --plan: say what would be trained, and why, without training
    on_event: Any = None  # the Python API's callback for each step's Event (rnngen.train)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainOptions:
        own = {f.name for f in fields(cls)} - {"settings"}
        settings = {k: v for k, v in params.items() if k not in own and v is not None}
        homeless = settings.keys() - _names(ModelConfig) - _names(TrainConfig)
        if homeless:  # a programming error: an option declared with no field to go to
            raise TypeError(f"options with no config field: {', '.join(sorted(homeless))}")
        return cls(settings=settings, **{k: v for k, v in params.items() if k in own})


@dataclass
class SampleConfig:
    """`rnngen sample` as asked; the CLI fills it once and the sample command reads it."""

    checkpoint: str = "shakespeare"
    length: int | None = None  # None: the kind's default
    num_samples: int = 1
    temperature: float | None = None  # None: the kind's default (text 0.8, MIDI 0.7)
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None  # None: a fresh one, printed nowhere, different every run
    prime: str | None = None
    prime_file: str | None = None
    stop: list[str] = field(default_factory=list)
    tag: list[str] = field(default_factory=list)  # a tagged model: each row's style, in turn across the batch
    fmt: str = "text"
    separator: str = "\n\n"
    echo: bool = True
    out: str | None = None
    force: bool = False  # replace files already at --out
    qpm: float | None = None
    program: int | None = None
    audio: bool = False  # MIDI: a .wav beside each .mid
    soundfont: str | None = None  # for audio; None: $RNNGEN_SOUNDFONT, else the audio extra's own
    device: str = "auto"
    precision: str = "auto"
    quiet: bool = False


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


DEFAULT_MAX_TIME = 600.0  # the stop when none of --max-steps, --max-time, --epochs is given


def limits(given: dict[str, Any]) -> dict[str, Any]:
    """The run's stops as given, or the default time budget when none is."""
    stops = {k: given.get(k) for k in LIMITS}
    if not any(stops.values()):
        stops["max_time"] = DEFAULT_MAX_TIME
    return stops


@dataclass
class Plan:
    model: dict[str, Any]  # ModelConfig's fields but those the data decides (FROM_DATA)
    train: TrainConfig


def plan(given: dict[str, Any], resumed: dict | None = None, base: dict | None = None,
         defaults: dict[str, Any] | None = None) -> Plan:
    """The settings of a run: a resumed run's own, changed only where its rules allow; else the
    given ones over `defaults` (the planner's choice for this budget and corpus, rnngen/planner.py),
    over the fields' own defaults. A fine-tuned model keeps the base's shape."""
    if resumed is not None:
        return Plan(_saved(ModelConfig, resumed.get("model"), "model"),
                    _resumed_train(resumed, given))
    chosen = {**(defaults or {}), **given, **limits(given)}
    train = TrainConfig(**{k: v for k, v in chosen.items() if k in _names(TrainConfig)})
    if base is not None:
        model = _saved(ModelConfig, base.get("model"), "model")
        _check_unchanged(model, given, "fine-tuning from a checkpoint",
                         lambda f: not f.metadata.get("fine_tune"))
        model.update({k: v for k, v in given.items() if k in model})
        return Plan(model, train)
    model_fields = {f.name: f for f in fields(ModelConfig) if f.name not in FROM_DATA}
    return Plan({k: chosen.get(k, model_fields[k].default) for k in model_fields}, train)


def _resumed_train(resumed: dict, given: dict[str, Any]) -> TrainConfig:
    saved = _saved(TrainConfig, (resumed.get("train") or {}).get("config"), "training")
    rules = {f.name: f.metadata["on_resume"] for f in fields(TrainConfig)}
    _check_unchanged({**saved, **_saved(ModelConfig, resumed.get("model"), "model")}, given, "resuming",
                     lambda f: f.metadata.get("on_resume", "fixed") == "fixed")
    if any(given.get(k) is not None for k in LIMITS):  # new limits replace the old ones
        saved.update({k: given.get(k) for k in LIMITS})
    saved.update({k: v for k, v in given.items() if rules.get(k) == "new"})
    return TrainConfig(**saved)


def _check_unchanged(saved: dict, given: dict[str, Any], doing: str, fixed) -> None:
    """A fixed setting may be given again with the same value, never with another."""
    for cls in (ModelConfig, TrainConfig):
        for f in fields(cls):
            if f.name in given and f.name in saved and fixed(f) and given[f.name] != saved[f.name]:
                raise RnngenError(f"--{f.name.replace('_', '-')} cannot change when {doing}; "
                                  "the run keeps its settings")


def _saved(cls, values: Any, what: str) -> dict[str, Any]:
    """A checkpoint's config as a dict of the fields this version knows (older files may lack some)."""
    if not isinstance(values, dict):
        raise RnngenError(f"the checkpoint's {what} settings are damaged")
    known = {f.name: f for f in fields(cls) if f.name not in FROM_DATA}
    out = {k: values[k] for k in known if k in values}
    for name, f in known.items():
        if name not in out:
            out[name] = f.default_factory() if f.default_factory is not MISSING else f.default
    return out


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '1h30m' or plain seconds -> seconds."""
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration; use forms like 90s, 10m, 1h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"



@dataclass
class ServeConfig:
    """`rnngen serve` as asked; the CLI fills it once and the serve command reads it."""

    models: list[str] = field(default_factory=list)  # paths or shipped names; empty: every shipped model
    host: str = "127.0.0.1"
    port: int = 8000
    max_tokens: int = 8192  # per request: characters or MIDI events
    max_n: int = 16  # samples per request
    max_prompt: int = 4096  # characters; a prompt runs on the loop's thread, delaying the others' next step
    max_batch: int = 256  # rows a model steps together; more requests wait for room
    device: str = "auto"
    precision: str = "auto"
    quiet: bool = False
