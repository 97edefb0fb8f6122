"""Export in each cell type and format, parity with rnngen's step, and the torch-free sampler."""

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from rnngen import checkpoint
from rnngen.cli import app
from rnngen.codec import TextCodec
from rnngen.config import ModelConfig
from rnngen.export import export, read_metadata
from rnngen.model import RNNModel, StepModel

pytestmark = pytest.mark.slow  # starts processes or servers, or trains through them

ROOT = Path(__file__).resolve().parents[1]
TEXT = "to be or not to be, that is the question.\n"


def save_tiny(tmp_path: Path, cell: str, layers: int) -> Path:
    torch.manual_seed(1)
    codec = TextCodec.fit(TEXT)
    model = RNNModel(ModelConfig(vocab_size=codec.vocab_size, cell=cell, layers=layers, hidden=24, embed=8))
    path = tmp_path / f"{cell}{layers}.pt"
    checkpoint.save(checkpoint.make(model, codec, {}), path)
    return path


def run_exported(path: Path, fmt: str):
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda *xs: [torch.from_numpy(o) for o in session.run(None, {n: x.numpy() for n, x in zip(names, xs)})]
    program = torch.export.load(path).module()
    return lambda *xs: list(program(*xs))


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 3), ("rnn", 1)])
def test_export_matches_rnngen_over_steps_and_batches(tmp_path, fmt, cell, layers):
    ckpt = save_tiny(tmp_path, cell, layers)
    out, diff = export(str(ckpt), fmt, tmp_path / f"m.{fmt}")
    assert out.exists() and diff <= 1e-4

    model, codec, _ = checkpoint.load_model(ckpt)
    step, run = StepModel(model), run_exported(out, fmt)
    for batch in (1, 5):  # the batch size is dynamic
        state = model.init_state(batch)
        theirs = tuple(state)
        for t in range(6):
            tokens = torch.randint(0, codec.vocab_size, (batch,))
            with torch.no_grad():
                logits, *state = step(tokens, *state)
            got = run(tokens, *theirs)
            theirs = tuple(got[1:])
            assert got[0].shape == (batch, codec.vocab_size)
            assert torch.allclose(got[0], logits, atol=1e-4)
            assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(theirs, state))

    meta = read_metadata(out)
    assert meta["codec"]["chars"] == codec.chars
    assert meta["model"]["cell"] == cell and meta["model"]["layers"] == layers
    assert meta["inputs"] == (["tokens", "h", "c"] if cell == "lstm" else ["tokens", "h"])


def test_torch_free_sampler(tmp_path):
    out, _ = export(str(save_tiny(tmp_path, "lstm", 2)), "onnx", tmp_path / "m.onnx")
    # Run the example with torch and rnngen made unimportable: it must need neither.
    block = ("import sys, runpy; sys.modules['torch'] = None; sys.modules['rnngen'] = None; "
             f"sys.argv = ['onnx_sample.py', {str(out)!r}, '-n', '120', '-p', 'to be', '-s', '3']; "
             f"runpy.run_path({str(ROOT / 'examples' / 'onnx_sample.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.rstrip("\n")
    assert text.startswith("to be") and len(text) == len("to be") + 120
    assert set(text) <= set(TEXT)


def test_export_cli_and_bad_input(tmp_path):
    ckpt = save_tiny(tmp_path, "gru", 1)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(ckpt), "--format", "pt2", "-o", str(tmp_path / "g.pt2")])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and "largest difference" in result.stderr
    (tmp_path / "g.pt2").write_bytes(b"mine")
    again = runner.invoke(app, ["export", str(ckpt), "--format", "pt2", "-o", str(tmp_path / "g.pt2")])
    assert again.exit_code == 1 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert (tmp_path / "g.pt2").read_bytes() == b"mine"
    forced = runner.invoke(app, ["export", str(ckpt), "--format", "pt2", "-o", str(tmp_path / "g.pt2"), "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert (tmp_path / "g.pt2").read_bytes() != b"mine"
    text = tmp_path / "notes.txt"
    text.write_text(TEXT)
    bad = runner.invoke(app, ["export", str(text), "--format", "onnx"])
    assert bad.exit_code == 1 and "not an rnngen checkpoint" in bad.stderr and "Traceback" not in bad.stderr
    assert runner.invoke(app, ["export", str(ckpt), "--format", "tflite"]).exit_code == 2


def test_onnx_without_the_extra_says_how_to_install(tmp_path, monkeypatch):
    ckpt = save_tiny(tmp_path, "rnn", 1)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    result = CliRunner().invoke(app, ["export", str(ckpt), "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert 'pip install "rnngen[onnx]" (or pip install -e ".[onnx]" in a checkout)' in result.stderr
