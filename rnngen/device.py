"""One place that turns `--device` and `--precision` into a torch device and an autocast dtype."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from rnngen.errors import RnngenError

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is missing fails at once."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise RnngenError("--device mps was asked for, but this machine has no MPS (Apple GPU) backend")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RnngenError(f"--device {name} was asked for, but no CUDA GPU is available; use --device cpu")
        index = name.partition(":")[2]
        if index:
            if not index.isdigit():
                raise RnngenError(f"--device {name}: the GPU index must be a number, as in cuda:0")
            if int(index) >= torch.cuda.device_count():
                raise RnngenError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are present")
        return torch.device(name)
    raise RnngenError(f"unknown device {name!r}; use {DEVICES}")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX) and torch will
    use it. /proc/cpuinfo tells what the chip has; torch can be held below that (ATEN_CPU_CAPABILITY,
    ONEDNN_MAX_CPU_ISA), so its own vector capability is asked and one tiny bf16 LSTM is run."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    return torch.backends.cpu.get_cpu_capability() == "AVX512" and cpu_runs_bf16()


@functools.cache
def cpu_runs_bf16() -> bool:
    """Whether oneDNN accepts a bf16 LSTM here (it refuses when capped below AVX-512); a few ms."""
    try:
        lstm = torch.nn.LSTM(16, 16, batch_first=True)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 16))
        return True
    except RuntimeError:
        return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--precision`, or None for plain fp32."""
    name = name.strip().lower()
    if name == "fp32":
        return None
    if name == "bf16":
        if device.type == "cpu" and not cpu_runs_bf16():
            raise RnngenError("--precision bf16: this CPU, as torch is set to use it, has no bf16 LSTM "
                              "kernels; use --precision fp32 (or auto)")
        return torch.bfloat16
    if name == "fp16":
        if device.type == "cpu":
            raise RnngenError("--precision fp16 is for GPUs; on the CPU use bf16 or fp32")
        return torch.float16
    if name != "auto":
        raise RnngenError(f"unknown precision {name!r}; use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
