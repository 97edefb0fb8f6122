"""The machine's matrix-multiply ceiling, shared by the speed benchmarks."""

import time

import torch


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of a large square matmul: the most this machine does in `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0)
