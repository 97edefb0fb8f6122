"""Data-parallel training under torchrun: who this process is, and the few collectives the trainer needs.

`torchrun --nproc_per_node N -m -- rnngen train ...` (or `rnngen train --nproc N ...`, which starts
exactly that) runs N copies of the command; the `--` keeps torchrun's own parser off rnngen's options
(it refuses `--log` as an abbreviation of its `--log-dir`). Each finds torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) in its environment, joins a process group (gloo on the CPU, nccl on CUDA with
rank r on cuda:LOCAL_RANK), and trains on its share of the streams; DistributedDataParallel averages
the gradients. Without those variables nothing here runs: a single process trains as it always did.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from rnngen.device import resolve_device
from rnngen.errors import RnngenError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """The processes training together, and the few collectives the trainer needs."""

    rank: int
    size: int
    local_rank: int
    device: torch.device  # where this rank trains, and where its collectives' tensors live

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This rank's share of `batch` parallel streams: rank r takes streams r*B/N up to (r+1)*B/N."""
        check_batch(batch, self.size)
        share = batch // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def stop_signal(self, agreed: int | None, received: int | None) -> int | None:
        """The signal to stop on: the one the ranks agreed on at the last step, so that all stop at the
        same step (one process stops on the one it received)."""
        return agreed

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model that averages gradients in backward(); rank 0's weights go to all."""
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64, so that elapsed seconds keep their precision)."""
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's values, on every rank."""
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `t` (same shape and dtype on each), in rank order, on the CPU."""
        import torch.distributed as dist

        t = t.detach().to(self.device).contiguous()
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t)
        return [p.cpu() for p in parts]


class OneProcess(World):
    """The world of an ordinary run: one rank, whose collectives are its own values, so that the
    trainer reads the same with or without torchrun."""

    def __init__(self, device: torch.device):
        super().__init__(rank=0, size=1, local_rank=0, device=device)

    def stop_signal(self, agreed: int | None, received: int | None) -> int | None:
        return received

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def all_sum(self, values: list[float]) -> list[float]:
        return list(values)

    def broadcast(self, values: list[float]) -> list[float]:
        return list(values)

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        return [t.detach().cpu()]


def check_batch(batch: int, processes: int) -> None:
    if batch % processes:
        raise RnngenError(f"--batch-size {batch} is the total over {processes} processes and must divide "
                          f"evenly among them; use a multiple of {processes}")


def check_sources(sources: list[str]) -> None:
    if "-" in sources:
        raise RnngenError("several processes cannot share standard input; train from a file")


def launched() -> bool:
    """True in a process that torchrun (or another launcher that sets its variables) started."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device: str) -> World:
    """Join the process group torchrun describes; an ordinary single process is a world of one."""
    if not launched():
        return OneProcess(resolve_device(device))
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


def shutdown() -> None:
    """Leave the process group. DistributedDataParallel wrappers must be gone first: one that outlives
    the group can abort the process at exit ("terminate called without an active exception")."""
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        gc.collect()  # a wrapper caught in a reference cycle
        dist.destroy_process_group()


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
    # torchrun's own log lines ("Received 2 death signal, shutting down workers", "Sending process ... closing
    # signal", "failed (exitcode: 1) ...") repeat what the workers say and what the exit code tells; this
    # process only runs the launcher, so its warnings and errors are silenced while it does.
    logging.disable(logging.ERROR)
    try:
        torchrun.run(torchrun.parse_args(argv))
    except SignalException as e:
        return 128 + int(e.sigval)
    except ChildFailedError as e:  # the workers have said what went wrong, unless a signal killed one
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:
            raise RnngenError(f"the process of rank {rank} was killed by {failure.signal_name()}") from None
        return failure.exitcode
    finally:
        logging.disable(logging.NOTSET)
    return 0
