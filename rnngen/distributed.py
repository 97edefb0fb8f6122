"""Data-parallel training under torchrun: who this process is, and the few collectives the trainer needs.

`torchrun --nproc_per_node N -m -- rnngen train ...` (or `rnngen train --nproc N ...`, which starts
exactly that) runs N copies of the command; the `--` keeps torchrun's own parser off rnngen's options
(it refuses `--log` as an abbreviation of its `--log-dir`). Each finds torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) in its environment, joins a process group (gloo on the CPU, nccl on CUDA with
rank r on cuda:LOCAL_RANK), and trains on its share of the streams; DistributedDataParallel averages
the gradients. Without those variables nothing here runs: a single process trains as it always did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from rnngen.device import resolve_device
from rnngen.errors import RnngenError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device  # where this rank trains, and where its collectives' tensors live

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This rank's share of `batch` parallel streams: rank r takes streams r*B/N up to (r+1)*B/N."""
        share = batch // self.size
        return slice(self.rank * share, (self.rank + 1) * share)


def launched() -> bool:
    """True in a process that torchrun (or another launcher that sets its variables) started."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device: str) -> World | None:
    """Join the process group torchrun describes; None when this is an ordinary single process."""
    if not launched():
        return None
    import torch.distributed as dist

    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise RnngenError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} are not; start with torchrun")
    if not dist.is_available():
        raise RnngenError("this PyTorch build has no torch.distributed; train in one process")
    rank, size, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    dev = _rank_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before any collective, so nccl binds each rank to its own GPU
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return World(rank=rank, size=size, local_rank=local, device=dev)


def _rank_device(name: str, local_rank: int) -> torch.device:
    dev = resolve_device(name)
    if dev.type == "mps" and name.strip().lower() == "auto":
        return torch.device("cpu")
    if dev.type == "mps":
        raise RnngenError("data-parallel training runs on CUDA GPUs or the CPU, not on MPS; use --device cpu")
    if dev.type != "cuda":
        return dev
    if dev.index is not None:
        raise RnngenError(f"--device {name}: under torchrun each process takes the GPU cuda:LOCAL_RANK; "
                          "give --device cuda (or auto)")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RnngenError(f"process {local_rank} on this machine has no GPU of its own: there are {count}; "
                          f"start at most {count} processes per machine")
    return torch.device("cuda", local_rank)


def shutdown(world: World | None) -> None:
    """Leave the process group. DistributedDataParallel wrappers must be gone first: one that outlives
    the group can abort the process at exit ("terminate called without an active exception")."""
    import gc

    import torch.distributed as dist

    if world is not None and dist.is_initialized():
        gc.collect()  # a wrapper caught in a reference cycle
        dist.destroy_process_group()


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum over the ranks (float64, so that elapsed seconds keep their precision)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast(values: list[float], world: World) -> list[float]:
    """Rank 0's values, on every rank."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.broadcast(t, src=0)
    return t.tolist()


def gather(t: torch.Tensor, world: World) -> list[torch.Tensor]:
    """Every rank's `t` (same shape and dtype on each), in rank order, on the CPU."""
    import torch.distributed as dist

    t = t.detach().to(world.device).contiguous()
    parts = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(parts, t)
    return [p.cpu() for p in parts]


def launch(nproc: int, args: list[str]) -> int:
    """Start `nproc` processes of `rnngen train ARGS` on this machine and wait for them; the exit code.

    The same as typing `torchrun --standalone --nproc_per_node N -m -- rnngen train ARGS`: this process
    runs torchrun's launcher itself, so that Ctrl-C or SIGTERM, which torchrun passes on to the workers
    (they save a resumable checkpoint and stop together), ends with the workers' exit code and without
    torchrun's traceback.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if "OMP_NUM_THREADS" not in os.environ:  # share the CPU cores out, rather than torchrun's default of 1 each
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # `--` ends torchrun's own options: its parser would otherwise take `--log` for an abbreviation of its
    # `--log-dir` or `--logs-specs`, and stop.
    argv = ["--standalone", f"--nproc_per_node={nproc}", "-m", "--", "rnngen", "train", *args]
    try:
        torchrun.run(torchrun.parse_args(argv))
    except SignalException as e:
        return 128 + int(e.sigval)
    except ChildFailedError as e:  # the workers have said what went wrong, unless a signal killed one
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:
            raise RnngenError(f"the process of rank {rank} was killed by {failure.signal_name()}") from None
        return failure.exitcode
    return 0
