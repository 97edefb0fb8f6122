"""Export the one-step function (tokens[B], *state) -> (logits[B, V], *state) with a dynamic batch
(a tagged model takes tags[B] after the tokens: each row's tag index into the metadata's "tags"),
as ONNX or as a torch.export program, with everything needed to sample stored inside the file,
then check the exported model against rnngen's own step.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from rnngen import __version__, checkpoint
from rnngen.data import writable_file
from rnngen.errors import RnngenError, install_hint
from rnngen.model import RNNModel, StepModel

FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-4  # fp32: the largest difference allowed between the exported model and rnngen
META_KEY = "rnngen"  # ONNX metadata key / torch.export extra file holding the JSON below


def state_names(cell: str) -> list[str]:
    return ["h", "c"] if cell == "lstm" else ["h"]


def input_names(cfg) -> list[str]:
    """The step's inputs in order: the tokens, a tagged model's tags, the state."""
    return ["tokens", *(["tags"] if cfg.tags else []), *state_names(cfg.cell)]


def metadata(model: RNNModel, codec, source: str) -> dict:
    """What a sampler outside rnngen needs: the codec, the sizes and how the state is shaped."""
    cfg = model.cfg
    return {
        "rnngen": __version__,
        "source": source,
        "kind": codec.kind,
        "codec": codec.to_dict(),
        "model": asdict(cfg),
        "inputs": input_names(cfg),
        "outputs": ["logits"] + [f"{n}_out" for n in state_names(cfg.cell)],
        "tokens": "int64 [batch]",
        **({"tags": list(cfg.tags), "tag_input": "int64 [batch], each row's index into tags"} if cfg.tags else {}),
        "state": {n: f"float32 [{cfg.layers}, batch, {cfg.hidden}], zeros to start" for n in state_names(cfg.cell)},
        "logits": f"float32 [batch, {cfg.vocab_size}], unnormalised",
    }


def example_inputs(model: RNNModel, batch: int, generator: torch.Generator | None = None) -> tuple:
    cfg = model.cfg
    tokens = torch.randint(0, cfg.vocab_size, (batch,), generator=generator)
    tags = (torch.randint(0, len(cfg.tags), (batch,), generator=generator),) if cfg.tags else ()
    states = tuple(torch.randn(cfg.layers, batch, cfg.hidden, generator=generator) * 0.5
                   for _ in state_names(cfg.cell))
    return (tokens, *tags, *states)


def export(name: str, fmt: str, out: Path | None = None, force: bool = False) -> tuple[Path, float]:
    """Write the exported step to `out` (default: beside the current folder) and return (path, max diff)."""
    if fmt not in FORMATS:
        raise RnngenError(f"unknown export format {fmt!r}; use onnx or pt2")
    model, codec, _ = checkpoint.load_model(name)
    step = StepModel(model).eval()
    out = Path(out) if out is not None else Path(f"{checkpoint.resolve(name).stem}.{fmt}")
    writable_file(out, "--out", force)
    meta = metadata(model, codec, Path(name).name)
    if fmt == "onnx":
        _export_onnx(step, model, meta, out)
        run = _onnx_runner(out)
    else:
        _export_pt2(step, model, meta, out)
        run = _pt2_runner(out)
    diff = check(step, model, run)
    if diff > TOLERANCE:
        out.unlink(missing_ok=True)
        raise RnngenError(f"the exported model differs from rnngen's by {diff:.2e} (over {TOLERANCE:g}); removed {out}")
    return out, diff


def _dynamic_shapes(model: RNNModel) -> tuple:
    batch = torch.export.Dim("batch", min=1, max=65536)
    tags = ({0: batch},) if model.cfg.tags else ()
    return ({0: batch}, (*tags, *({1: batch} for _ in state_names(model.cfg.cell))))  # (tokens, *inputs)


def _export_pt2(step: StepModel, model: RNNModel, meta: dict, out: Path) -> None:
    with torch.no_grad():
        program = torch.export.export(step, example_inputs(model, 2), dynamic_shapes=_dynamic_shapes(model))
    torch.export.save(program, out, extra_files={META_KEY: json.dumps(meta)})


def _export_onnx(step: StepModel, model: RNNModel, meta: dict, out: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise RnngenError(f"ONNX export needs onnx and onnxscript: {install_hint('onnx')}") from None
    names = state_names(model.cfg.cell)
    # The exporter chats about its progress on stdout, which belongs to data: keep it quiet.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logger.setLevel(logging.ERROR)
            program = torch.onnx.export(
                step, example_inputs(model, 2), dynamo=True, external_data=False, verbose=False,
                dynamic_shapes=_dynamic_shapes(model), input_names=input_names(model.cfg),
                output_names=["logits", *(f"{n}_out" for n in names)],
            )
    finally:
        logger.setLevel(level)
    program.model.metadata_props[META_KEY] = json.dumps(meta)
    program.save(str(out), external_data=False)


def _onnx_runner(path: Path):
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        raise RnngenError(f"checking an ONNX export needs onnxruntime: {install_hint('onnx')}") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> list[torch.Tensor]:
        feeds = {n: np.asarray(t.numpy()) for n, t in zip(names, inputs)}
        return [torch.from_numpy(np.asarray(o)) for o in session.run(None, feeds)]

    return run


def _pt2_runner(path: Path):
    program = torch.export.load(path).module()

    def run(*inputs: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(program(*inputs))

    return run


def check(step: StepModel, model: RNNModel, run, steps: int = 4) -> float:
    """Largest difference between `run` and rnngen's step, fed the same random tokens and states
    for several steps at batch sizes 1 and 5 (each step's state comes from the step before)."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in (1, 5):
        inputs = example_inputs(model, batch, generator)
        tags = inputs[1:2] if model.cfg.tags else ()
        states_ours = states_theirs = inputs[1 + len(tags):]
        for _ in range(steps):
            tokens = torch.randint(0, model.cfg.vocab_size, (batch,), generator=generator)
            with torch.no_grad():
                ours = step(tokens, *tags, *states_ours)
            theirs = run(tokens, *tags, *states_theirs)
            worst = max(worst, *((a - b).abs().max().item() for a, b in zip(ours, theirs)))
            states_ours, states_theirs = ours[1:], tuple(theirs[1:])
    return worst


def read_metadata(path: Path) -> dict:
    """The metadata stored in an exported file (ONNX or pt2)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[META_KEY])
    extra = {META_KEY: ""}
    torch.export.load(path, extra_files=extra)
    return json.loads(extra[META_KEY])
