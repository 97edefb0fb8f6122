"""Runs people can trust: signals save a resumable checkpoint, fine-tuning, the metrics log."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from rnngen import checkpoint
from rnngen.cli import app
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # starts processes or servers, or trains through them

runner = CliRunner()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_resumable_checkpoint(tmp_path, corpus, sig, code):
    out = tmp_path / "run.pt"
    cmd = [sys.executable, "-m", "rnngen", "train", str(corpus), *TINY, "--max-steps", "1000000",
           "--eval-every", "1000000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:  # wait until training has started
        if line.startswith("step "):
            break
    proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == code
    assert proc.stdout.read() == ""
    last = tmp_path / "run.last.pt"
    assert f"resume with: rnngen train --resume {last}" in rest
    saved = checkpoint.load(last)
    assert saved["resume"]["step"] >= 1
    result = runner.invoke(app, ["train", "--resume", str(last), "--max-steps", str(saved["resume"]["step"] + 2), "-q"])
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load(last)["resume"]["step"] == saved["resume"]["step"] + 2


def test_init_from_fine_tunes_and_refuses_new_characters(tmp_path, corpus):
    base = tmp_path / "base.pt"
    assert runner.invoke(app, ["train", str(corpus), *TINY, "--max-steps", "3", "--out", str(base), "-q"]).exit_code == 0
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1])  # same characters, new text
    tuned = tmp_path / "tuned.pt"
    result = runner.invoke(app, ["train", str(other), *TINY, "--init-from", str(base), "--max-steps", "3",
                                 "--out", str(tuned), "-q"])
    assert result.exit_code == 0, result.stderr
    before, after = checkpoint.load(base)["weights"], checkpoint.load(tuned)["weights"]
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained further
    base_cfg = checkpoint.model_config(checkpoint.load(base))
    assert checkpoint.model_config(checkpoint.load(tuned)) == base_cfg  # settings left unset stay the base's
    result = runner.invoke(app, ["train", str(other), *TINY, "--init-from", str(base), "--max-steps", "1",
                                 "--embed-dropout", "0.05", "--out", str(tuned), "--force", "-q"])
    assert result.exit_code == 0, result.stderr
    tuned_cfg = checkpoint.model_config(checkpoint.load(tuned))
    assert tuned_cfg.embed_dropout == 0.05 and tuned_cfg.dropout == base_cfg.dropout
    strange = tmp_path / "strange.txt"
    strange.write_text(corpus.read_text() + "Ω")
    result = runner.invoke(app, ["train", str(strange), *TINY, "--init-from", str(base), "--max-steps", "3",
                                 "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "'Ω'" in result.stderr


def test_metrics_log_is_json_lines(tmp_path, corpus):
    log = tmp_path / "metrics.jsonl"
    result = runner.invoke(app, ["train", str(corpus), *TINY, "--max-steps", "6", "--eval-every", "3",
                                 "--out", str(tmp_path / "m.pt"), "--log", str(log), "-q"])
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "lr", "tokens_per_s", "elapsed"} <= rows[0].keys()
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]
