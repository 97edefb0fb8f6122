"""Checkpoints from strangers, damaged checkpoints, and saves that die half-way."""

import errno
import os
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from rnngen import checkpoint
from rnngen.cli import app
from rnngen.codec import TextCodec
from rnngen.errors import RnngenError
from tests.conftest import tiny_model

pytestmark = pytest.mark.slow  # starts processes or servers, or trains through them

runner = CliRunner()


def saved_model(path, **changes):
    codec = TextCodec.fit("abcdefghijkl")
    ckpt = checkpoint.make(tiny_model(vocab=codec.vocab_size), codec, {"step": 1})
    ckpt.update(changes)
    checkpoint.save(ckpt, path)
    return ckpt


class Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "rnngen", "version": 1, "weights": Payload(marker)}, evil)
    with pytest.raises(RnngenError, match="could run code"):
        checkpoint.load(evil)
    result = runner.invoke(app, ["sample", str(evil)])
    assert result.exit_code == 1 and "refusing to load" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "damaged or truncated"),
    (lambda p: saved_model(p, version=99), "version 99"),
    (lambda p: _drop(p, "weights"), "lacks weights"),
    (lambda p: _reshape(p), "do not fit"),
])
def test_damaged_checkpoints_are_one_clear_line(tmp_path, damage, message):
    path = tmp_path / "m.pt"
    saved_model(path)
    damage(path)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _drop(path, key):
    ckpt = torch.load(path, weights_only=True)
    del ckpt[key]
    checkpoint.save(ckpt, path)


def _reshape(path):
    ckpt = torch.load(path, weights_only=True)
    ckpt["weights"]["head.weight"] = torch.zeros(3, 3)
    checkpoint.save(ckpt, path)


SAVER = """
import sys, torch
from rnngen import checkpoint
big = {"format": "rnngen", "version": 1, "payload": torch.randn(2_000_000)}
print("ready", flush=True)
while True:
    checkpoint.save(big, sys.argv[1])
"""


def test_sigkill_during_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "m.pt"
    saved_model(path)
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.03 * attempt)  # kill at different points of a write
        proc.kill()
        proc.wait()
        loaded = torch.load(path, weights_only=True)  # whichever version is there is whole
        assert loaded["format"] == "rnngen"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m.pt"]
    assert all(name.endswith(".tmp") for name in leftovers)  # only abandoned temporary files


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    before = saved_model(path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RnngenError, match="No space left on device"):
        checkpoint.save({"format": "rnngen"}, path)
    monkeypatch.undo()
    after = torch.load(path, weights_only=True)
    assert torch.equal(after["weights"]["head.weight"], before["weights"]["head.weight"])
    assert list(tmp_path.iterdir()) == [path]  # the temporary file is gone too


def _read_only_folder(tmp_path):
    """A folder this process cannot write in (root ignores permissions, so it gets /sys)."""
    if os.geteuid() == 0:
        return "/sys"
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


def test_outputs_in_missing_or_read_only_folders_fail_before_work(tmp_path, corpus):
    ckpt = tmp_path / "m.pt"
    saved_model(ckpt)
    ro = _read_only_folder(tmp_path)
    for args in (["train", str(corpus), "--out", f"{ro}/m.pt"],
                 ["train", str(corpus), "--out", str(tmp_path / "missing" / "m.pt")],
                 ["sample", str(ckpt), "-o", f"{ro}/s.txt"],
                 ["export", str(ckpt), "--format", "pt2", "-o", f"{ro}/m.pt2"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.stderr)
        assert "--out" in result.stderr and "Traceback" not in result.stderr
        assert ("cannot write" in result.stderr) or ("does not exist" in result.stderr)


SAMPLE_RSS = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "rnngen", "sample", sys.argv[1], "-n", sys.argv[2], "-s", "1"],
               stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_long_samples_stream_in_constant_memory(tmp_path):
    ckpt = tmp_path / "m.pt"
    saved_model(ckpt)
    peaks = {}
    for n in (1_000, 50_000):
        out = subprocess.run([sys.executable, "-c", SAMPLE_RSS, str(ckpt), str(n)], capture_output=True,
                             text=True, timeout=300, check=True)
        peaks[n] = int(out.stdout) / 1024  # MB
    assert peaks[50_000] - peaks[1_000] < 10, peaks  # 50x the text, no more memory
