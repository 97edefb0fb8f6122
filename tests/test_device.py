"""Device and precision resolution: what torch can run decides, not only what the chip has."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rnngen import device as device_module
from rnngen.device import precision_name, resolve_precision
from rnngen.errors import RnngenError

# How an AVX2-only CPU is reproduced on any x86 machine: torch's kernels capped below AVX-512.
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def test_auto_precision_under_avx2_caps_is_fp32_for_training_and_sampling():
    code = ("import torch; from rnngen.device import resolve_precision, precision_name; "
            "from rnngen.sample import step_precision; from rnngen.model import RNNModel; "
            "from rnngen.config import ModelConfig; cpu = torch.device('cpu'); "
            "m = RNNModel(ModelConfig(vocab_size=12, hidden=32, embed=16)); "
            "print(precision_name(resolve_precision('auto', cpu)), step_precision('auto', cpu, m, 4))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **AVX2_CAPS},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fp32", "fp32"]


def test_bf16_that_torch_cannot_run_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_runs_bf16", lambda: False)
    with pytest.raises(RnngenError, match="use --precision fp32"):
        resolve_precision("bf16", torch.device("cpu"))
    assert resolve_precision("fp32", torch.device("cpu")) is None


def test_the_bf16_probe_agrees_with_a_real_bf16_lstm():
    device_module.cpu_runs_bf16.cache_clear()
    runs = device_module.cpu_runs_bf16()
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(2, 3, 8))
        real = True
    except RuntimeError:
        real = False
    assert runs == real
    if not runs:
        assert precision_name(resolve_precision("auto", torch.device("cpu"))) == "fp32"
