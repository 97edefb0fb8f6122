"""The command line: each command declares its options, fills one options object and calls the core.

torch is imported inside the commands, so that `rnngen --help` answers at once. The shared options,
checks and error handling are in cli_common.py; `render` and `plot` in cli_media.py.
"""

from __future__ import annotations

import ctypes
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rnngen.cli_common import (Cell, DeviceOpt, ForceOpt, Format, Kind, Precision, QuietOpt, SeedOpt, SoundfontOpt, StepPrecision, TagOpt, _check,
                               _parts_option, _plain, _seconds, _silence_stdout, _unescape, app, at_least_one, friendly,
                               non_negative, positive, rate, share)

# --------------------------------------------------------------------------------------------------
# train

BY_BUDGET = dict(show_default=False)  # options whose default the time budget chooses (rnngen/config.py)


@app.command()
@friendly
def train(
    ctx: typer.Context,
    sources: Annotated[Optional[list[str]], typer.Argument(
        help="Text files, MIDI files, folders (searched recursively), or - for text on stdin. TAG=PATH gives a source a tag (a style to ask for with sample --tag); tag every source or none.",
        show_default=False)] = None,
    kind: Annotated[Kind, typer.Option(help="What the sources are; auto looks at the files.")] = Kind.auto,
    cell: Annotated[Optional[Cell], typer.Option(help="Recurrent cell. (default: lstm)", show_default=False)] = None,
    layers: Annotated[Optional[int], typer.Option(callback=positive, help="Recurrent layers. (default: by budget)", **BY_BUDGET)] = None,
    hidden: Annotated[Optional[int], typer.Option(callback=positive, help="Hidden units per layer. (default: by budget)", **BY_BUDGET)] = None,
    embed: Annotated[Optional[int], typer.Option(callback=positive, help="Token embedding width. (default: 64)", **BY_BUDGET)] = None,
    dropout: Annotated[Optional[float], typer.Option(callback=rate, help="Dropout between layers and before the output. (default: by budget)", **BY_BUDGET)] = None,
    weight_drop: Annotated[Optional[float], typer.Option(callback=rate, help="Dropout on the recurrent weight matrices, a new mask each step. (default: by budget)", **BY_BUDGET)] = None,
    embed_dropout: Annotated[Optional[float], typer.Option(callback=rate, help="Drop whole input tokens (their embeddings) at this rate in training. (default: by budget)", **BY_BUDGET)] = None,
    seq_len: Annotated[Optional[int], typer.Option(callback=positive, help="Tokens per training window (BPTT length). (default: by budget)", **BY_BUDGET)] = None,
    batch_size: Annotated[Optional[int], typer.Option(callback=positive, help="Parallel streams per step. (default: by budget)", **BY_BUDGET)] = None,
    lr: Annotated[Optional[float], typer.Option(callback=positive, help="Peak learning rate. (default: by budget)", **BY_BUDGET)] = None,
    ema: Annotated[Optional[float], typer.Option(callback=rate, help="Evaluate and save a moving average of the weights with this decay per step; 0: off. (default: 0.995)", **BY_BUDGET)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(callback=non_negative, help="AdamW weight decay on weight matrices. (default: by budget)", **BY_BUDGET)] = None,
    grad_clip: Annotated[Optional[float], typer.Option(callback=positive, help="Clip the gradient norm to this. (default: 1.0)", show_default=False)] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup", callback=non_negative, help="Warm up the learning rate linearly over this many steps, or over the first 5% of the run where that ends sooner (so a short run warms up over 5% of it); then the cosine decay. (default: 100)", show_default=False)] = None,
    max_steps: Annotated[Optional[int], typer.Option(callback=positive, help="Stop after this many steps.", show_default=False)] = None,
    max_time: Annotated[Optional[str], typer.Option(callback=_seconds, help="Stop after this long: 90s, 10m, 1h. (default: 10m when no other stop is given)", show_default=False)] = None,
    epochs: Annotated[Optional[float], typer.Option(callback=positive, help="Stop after this many passes over the data.", show_default=False)] = None,
    val_frac: Annotated[Optional[float], typer.Option(callback=share, help="Share held out for validation (text: the end of the corpus; MIDI: whole files). (default: 0.1)", show_default=False)] = None,
    transpose: Annotated[Optional[int], typer.Option(min=0, max=12, help="MIDI: also train on each training piece moved by up to N semitones up and down. (default: 0)", show_default=False)] = None,
    drums: Annotated[Optional[bool], typer.Option("--drums/--no-drums", help="MIDI: keep channel 10 (drums) as notes. (default: skip it)", show_default=False)] = None,
    parts: Annotated[Optional[str], typer.Option(callback=_parts_option, help="MIDI: tracks: each track (each channel of a type 0 file) is a part, written back as its own track; merge: one stream, one piano track; NAME,NAME,...: only the tracks so named, as parts in that order. (default: tracks)", show_default=False)] = None,
    eval_every: Annotated[Optional[int], typer.Option(callback=positive, help="Validate every N steps. (default: at each tenth of the run and at its end, skipping any that would make validation over 5% of the time so far, so a short run validates less often)", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Best checkpoint; the resumable one goes beside it as NAME.last.pt. (default: checkpoints/<source>.pt)", show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing checkpoint at --out (and its NAME.last.pt) and an existing --log file.")] = False,
    resume: Annotated[Optional[str], typer.Option(help="Continue a run exactly from its .last.pt checkpoint.", show_default=False)] = None,
    init_from: Annotated[Optional[str], typer.Option(help="Start from a checkpoint's weights (fine-tuning).", show_default=False)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Keep read corpora here, so that the next run on the same files starts at once; safe to delete. (default: $RNNGEN_CACHE_DIR, else $XDG_CACHE_HOME/rnngen, else ~/.cache/rnngen)", show_default=False)] = None,
    device: DeviceOpt = "auto",
    precision: Annotated[Precision, typer.Option(help="auto: bf16 where the hardware is fast at it, else fp32.")] = Precision.auto,
    seed: SeedOpt = None,
    log: Annotated[Optional[Path], typer.Option(help="Write metrics as JSON lines to this file. A --resume run appends to its log; a new run replaces an existing log only with --force.", show_default=False)] = None,
    quiet: QuietOpt = False,
    dry_run: Annotated[bool, typer.Option("--plan", help="Print what would be trained (shape, settings, this machine's measured speed) and why, then stop.")] = False,
    nproc: Annotated[Optional[int], typer.Option(min=1, help="Train data-parallel in N processes on this machine (one per GPU with CUDA) by starting torchrun; --batch-size is the total over all of them. (default: 1)", show_default=False)] = None,
) -> None:
    """Train a model on text or MIDI files and save the best checkpoint by validation loss."""
    from rnngen import train_cmd
    from rnngen.config import TrainOptions

    if not sources and not resume:
        raise typer.BadParameter("give at least one file or folder to train on", param_hint="SOURCE")
    if nproc is not None and nproc > 1:
        raise typer.Exit(_launch_train(ctx, nproc, sources or [], batch_size, device))
    code = train_cmd.run(TrainOptions.from_params({**_plain(ctx.params), "sources": sources or []})).code
    if code:
        raise typer.Exit(code)


def _launch_train(ctx: typer.Context, nproc: int, sources: list[str], batch_size: Optional[int], device: str) -> int:
    """`--nproc N`: check what can be checked here, then run `torchrun ... -m rnngen train` with the
    options given on this command line (less --nproc) and return its exit code."""
    from rnngen import distributed

    if distributed.launched():
        raise typer.BadParameter("this process was already started by torchrun; leave --nproc out", param_hint="--nproc")
    if "-" in sources:
        raise typer.BadParameter("several processes cannot share standard input; train from a file", param_hint="--nproc")
    if batch_size is not None and batch_size % nproc:
        raise typer.BadParameter(f"--batch-size {batch_size} is the total over {nproc} processes and must divide "
                                 f"evenly among them; use a multiple of {nproc}", param_hint="--nproc")
    name = device.strip().lower()
    if name.startswith("cuda:") or name == "mps":
        raise typer.BadParameter("data-parallel processes each take their own CUDA GPU (cuda:LOCAL_RANK), or the "
                                 "CPU; give --device cuda, cpu or auto", param_hint="--device")
    if name in ("auto", "cuda"):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and nproc > gpus:
            raise typer.BadParameter(f"{nproc} processes need {nproc} GPUs; this machine has {gpus}", param_hint="--nproc")
    args: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name in ("nproc", "sources") or getattr(source, "name", None) != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        value = value.value if isinstance(value, Enum) else value
        if getattr(param, "is_flag", False):
            if param.secondary_opts:  # --drums/--no-drums
                args.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                args.append(param.opts[0])
        else:
            args += [param.opts[0], str(value)]
    return distributed.launch(nproc, [*args, "--", *sources])


# --------------------------------------------------------------------------------------------------
# sample


@app.command()
@friendly
def sample(
    ctx: typer.Context,
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint path or a shipped model name.")] = "shakespeare",
    length: Annotated[Optional[int], typer.Option("--length", "-n", callback=at_least_one, help="Tokens to generate (characters or MIDI events), not counting the prime; a MIDI sample also ends where the model ends its piece. (default: 500 characters, 2000 events)", show_default=False)] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-b", callback=at_least_one, help="Samples generated together in one batch.")] = 1,
    temperature: Annotated[Optional[float], typer.Option("--temperature", "-t", callback=non_negative, help="Sampling temperature; 0 is greedy. (default: 0.8 for text, 0.7 for MIDI)", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(callback=at_least_one, help="Sample only among the k likeliest tokens.", show_default=False)] = None,
    top_p: Annotated[Optional[float], typer.Option(callback=_check(lambda v: 0 < v <= 1, "in (0, 1]"), help="Sample only among the likeliest tokens covering this probability (nucleus).", show_default=False)] = None,
    seed: SeedOpt = None,
    prime: Annotated[Optional[str], typer.Option("--prime", "-p", callback=_unescape, help=r"Text to start from (\n and \t escapes work).", show_default=False)] = None,
    prime_file: Annotated[Optional[str], typer.Option("--prime-file", "-f", help="Start from this file's text (MIDI models: continue this .mid file), or - for stdin.", show_default=False)] = None,
    stop: Annotated[Optional[list[str]], typer.Option(callback=_unescape, help="Text models: end a sample at this string (repeatable; not printed).", show_default=False)] = None,
    tag: TagOpt = None,
    fmt: Annotated[Format, typer.Option("--format", help="Text models: text, or jsonl: one JSON object per sample.")] = Format.text,
    separator: Annotated[str, typer.Option(callback=_unescape, help="Text models: printed between samples.")] = r"\n\n",
    echo: Annotated[bool, typer.Option("--echo/--no-echo", help="Print the prime before the generated text (MIDI: keep the primer's notes in the file).")] = True,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write to this file instead of stdout (- is stdout). MIDI: a .mid file (x.mid gets x-1.mid, x-2.mid ... for several samples), .wav/.flac audio or a .png/.svg/.pdf piano roll; a folder (sample.mid, or sample-1.mid ..., numbered on after the samples already there); or - for the first sample's bytes. A file already there is replaced only with --force. (default for MIDI: MODEL-SEED.mid here)", show_default=False)] = None,
    qpm: Annotated[Optional[float], typer.Option(callback=_check(lambda v: 4 <= v <= 1000, "between 4 and 1000 quarter notes per minute"), help="MIDI: tempo of the written files in quarter notes per minute. (default: the primer's, else 120)", show_default=False)] = None,
    audio: Annotated[bool, typer.Option("--audio", help="MIDI: also render each .mid file to .wav beside it (needs the audio extra).")] = False,
    soundfont: SoundfontOpt = None,
    program: Annotated[Optional[int], typer.Option(min=0, max=127, help="MIDI: General MIDI program (instrument) 0-127 for every part but drums. (default: each part keeps its own: the primer's, else the one it had in training; piano for a model without parts)", show_default=False)] = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    precision: Annotated[StepPrecision, typer.Option(help="Matmul precision. auto: int8 on CPUs with fast bf16 (weights for one sample, weights and activations for a batch; within 0.001 nats of fp32 on the shipped models), bf16 where int8 cannot run, else fp32; fp32 is exact.")] = StepPrecision.auto,
    quiet: QuietOpt = False,
) -> None:
    """Generate text or MIDI from a trained model; samples go to stdout (MIDI: to .mid files), messages to stderr."""
    from rnngen import sample_cmd
    from rnngen.config import SampleConfig

    if prime is not None and prime_file is not None:
        raise typer.BadParameter("give --prime or --prime-file, not both", param_hint="--prime")
    sample_cmd.run(SampleConfig(**{**_plain(ctx.params), "stop": stop or [], "tag": tag or []}))


# --------------------------------------------------------------------------------------------------
# info, eval, stats and export


@app.command()
@friendly
def info(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint path or a shipped model name.")],
) -> None:
    """What a checkpoint is, how it was trained and its validation loss."""
    from rnngen import info_cmd

    print(info_cmd.info(checkpoint))


@app.command(name="eval")
@friendly
def eval_(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint path or a shipped model name.")],
    files: Annotated[list[str], typer.Argument(help="Held-out data: files, folders, or - for stdin.")],
    tag: Annotated[Optional[list[str]], typer.Option(help="A tagged model: score the data as this style (repeatable). (default: every tag, a line each)", show_default=False)] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Loss of a model on held-out data: nats and bits per token, and perplexity."""
    from rnngen import info_cmd

    print(info_cmd.evaluate(checkpoint, files, device, tag or []))


@app.command()
@friendly
def stats(
    files: Annotated[list[str], typer.Argument(help="MIDI files or folders (searched recursively).")],
    drums: Annotated[bool, typer.Option("--drums/--no-drums", help="Count channel 10 (drums) as notes.")] = False,
) -> None:
    """Musical statistics of MIDI files: pitch range, notes per beat, polyphony, scale fit, pitch classes."""
    from rnngen import info_cmd

    print(info_cmd.stats(files, drums))


class ExportFormat(str, Enum):
    onnx = "onnx"
    pt2 = "pt2"


@app.command()
@friendly
def export(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint path or a shipped model name.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="onnx, or pt2 (a torch.export program).")] = ExportFormat.onnx,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file. (default: <checkpoint>.onnx or .pt2 here)", show_default=False)] = None,
    force: ForceOpt = False,
) -> None:
    """Export the one-step model (tokens, state) -> (logits, state) to run outside rnngen, and check it."""
    from rnngen.export import TOLERANCE, export as export_step
    from rnngen.report import stderr_console

    path, diff = export_step(checkpoint, fmt.value, out, force)
    stderr_console().print(f"wrote {path}; largest difference from rnngen's own step: {diff:.1e} "
                           f"(limit {TOLERANCE:g})", markup=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------------
# serve


@app.command()
@friendly
def serve(
    ctx: typer.Context,
    models: Annotated[Optional[list[str]], typer.Argument(help="Checkpoint paths or shipped model names. (default: every shipped model)", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. 127.0.0.1 answers this machine only; 0.0.0.0 answers anyone who can reach it (see the README).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 8000,
    max_tokens: Annotated[int, typer.Option(callback=at_least_one, help="Most tokens (characters or MIDI events) one request may ask for.")] = 8192,
    max_n: Annotated[int, typer.Option(callback=at_least_one, help="Most samples (n) one request may ask for.")] = 16,
    max_prompt: Annotated[int, typer.Option(callback=at_least_one, help="Most characters in a prompt. A prompt runs through the model before the next step of every request in flight, so a long one delays them all.")] = 4096,
    max_batch: Annotated[int, typer.Option(callback=at_least_one, help="Most rows a model samples together; further requests wait for room.")] = 256,
    device: DeviceOpt = "auto",
    precision: Annotated[StepPrecision, typer.Option(help="Matmul precision, resolved as for rnngen sample -b MAX_BATCH; fp32 answers exactly as rnngen sample does.")] = StepPrecision.auto,
    quiet: QuietOpt = False,
) -> None:
    """Serve models over HTTP: OpenAI-style completions, MIDI pieces and a web page; requests that arrive together are sampled together."""
    from rnngen import serve_cmd
    from rnngen.config import ServeConfig

    raise typer.Exit(serve_cmd.run(ServeConfig(**{**_plain(ctx.params), "models": models or []})))


from rnngen import cli_media  # noqa: E402,F401  (registers render and plot, after the commands above)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks of up to 32 MB for reuse, rather than map fresh pages for
    each one and hand them back when it is freed.

    PyTorch's CPU tensors come straight from malloc, and a fresh mapping pays a page fault for every
    4 KB it touches; a training step and a batch sampling step each make many tensors of megabytes.
    Keeping the blocks made `rnngen train` up to 4% and sampling a batch of 256 about 5% faster; peak
    memory stayed within its run-to-run spread (benchmarks/RESULTS.md). Does nothing off glibc."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD, the largest glibc takes: bigger blocks are still mapped
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: up to 1 GB freed at the heap's top stays
    except (ValueError, OSError, AttributeError):
        return


def main() -> None:
    worker = "LOCAL_RANK" in os.environ  # torchrun sets it in each worker of a data-parallel run
    if not worker:
        # Not in the workers: once in about 35 runs of its test, with this set, a worker aborted (SIGABRT)
        # for a reason not found, so they keep glibc's defaults. `distributed.launched` would say the
        # same but imports torch, which `rnngen --help` should not wait for.
        keep_freed_memory()
    try:
        app()
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(0)
    except SystemExit as done:
        if worker:
            _leave(done.code)
        raise
    if worker:
        _leave(0)


def _leave(code) -> None:
    """A worker's exit, without the interpreter's teardown: its checkpoints and log are written and
    closed by now, and the teardown is where a worker still aborted now and then ("terminate called
    without an active exception": a thread of the process group's library alive as C++ cleans up)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
