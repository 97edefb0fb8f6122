"""What a checkpoint holds about the run, and what `--resume` needs beyond the weights: the position in the data, the optimiser, the hidden
state of every stream and the random state, taken from a Trainer and put back into a new one."""

from __future__ import annotations

from dataclasses import asdict

import torch

from rnngen import __version__
from rnngen.config import LIMITS
from rnngen.device import precision_name
from rnngen.errors import RnngenError
from rnngen.train_parts import Schedule


def info(trainer) -> dict:
    """What a checkpoint says about the run that made it (`rnngen info` shows it)."""
    t = trainer
    return {
        "config": asdict(t.cfg), "step": t.step, "epoch": t.epoch_position(),
        "tokens": t.tokens, "elapsed": t.clock.elapsed(), "val_loss": t.best_val,
        "last_val_loss": t.last_val, "device": str(t.device), "processes": t.world.size,
        "precision": precision_name(t.dtype), "rnngen": __version__, "val_history": [list(p) for p in t.val_history],
        **({"val_by_tag": list(t.val_by_tag)} if t.val_by_tag else {}),
    }


def capture(trainer) -> dict:
    """Distributed: every rank must call this (it gathers), and rank 0's answer is the one to save."""
    t, world = trainer, trainer.world
    rng_cuda = torch.cuda.get_rng_state(t.device) if t.device.type == "cuda" else None
    state = {
        "step": t.step, "epoch": t.epoch, "window": t.window, "tokens": t.tokens,
        "elapsed": t.clock.elapsed(), "best_val": t.best_val, "last_val": t.last_val,
        "optimizer": t.opt.state_dict(), "scaler": t.scaler.state_dict(),
        # the whole (layers, B, hidden) state, and each rank's random state
        "hidden": [torch.cat(world.gather(s), dim=1) for s in t.state],
        "rng_cpu": torch.get_rng_state(), "rng_cuda": rng_cuda,
        "processes": world.size, "rng_cpu_ranks": world.gather(torch.get_rng_state()),
        "val_history": [list(p) for p in t.val_history], "schedule": t.schedule.to_dict(),
    }
    if rng_cuda is not None:
        state["rng_cuda_ranks"] = world.gather(rng_cuda)
    if t.average.average is not None:  # the checkpoint's weights are the average; these are the ones being trained
        state["raw_weights"] = [p.detach().cpu().clone() for p in t.average.raw_weights()]
    return state


def upgrade(ckpt: dict) -> None:
    """A resume state saved before the schedule was gets the one its run had: the decay over the
    limits in its settings, so that new limits carry it on rather than start it again."""
    state, config = ckpt.get("resume"), (ckpt.get("train") or {}).get("config") or {}
    limits = {k: config.get(k) for k in LIMITS}
    if isinstance(state, dict) and "schedule" not in state and any(limits.values()):
        state["schedule"] = {"limits": limits, "start": [0.0, 0.0]}


def restore(trainer, r: dict) -> None:
    t = trainer
    try:
        t.step, t.epoch, t.window, t.tokens = r["step"], r["epoch"], r["window"], r["tokens"]
        t.clock.before = float(r["elapsed"])
        t.schedule = Schedule.resumed(r.get("schedule"), t.cfg, t.step, t.clock.before, t.epoch_position())
        t.best_val, t.last_val = float(r["best_val"]), float(r["last_val"])
        t.opt.load_state_dict(r["optimizer"])
        t.val_history = [list(p) for p in r.get("val_history", [])]  # older checkpoints lack it
        t.average.restore(r.get("raw_weights"))
        if r.get("scaler"):
            t.scaler.load_state_dict(r["scaler"])
        hidden = tuple(h.to(t.device) for h in r["hidden"])  # (layers, B, hidden): all the streams
        whole = t.model.init_state(t.cfg.batch_size, "meta")
        if [tuple(h.shape) for h in hidden] != [tuple(s.shape) for s in whole]:
            raise RnngenError("the resumed run's batch size differs from the checkpoint's; keep --batch-size")
        t.state = tuple(h[:, t.rows].contiguous() for h in hidden)  # this rank's streams
        _restore_rng(t, r)
    except (KeyError, TypeError, ValueError) as e:
        raise RnngenError(f"the checkpoint's training state is damaged or incomplete ({e})") from e
    for group in t.opt.param_groups:  # a resumed run may change the peak learning rate
        group["lr"] = t.cfg.lr


def _restore_rng(t, r: dict) -> None:
    """Each rank takes back its own random state when the process count is unchanged. With another
    count, rank 0 takes the saved rank 0's and the others draw fresh seeds: the run then continues
    statistically rather than bit for bit (and exactly where nothing is random, as with dropout 0)."""
    rank, size = t.world.rank, t.world.size
    cpu, cuda = r["rng_cpu"], r.get("rng_cuda")
    if rank > 0:
        if len(r.get("rng_cpu_ranks") or []) != size:
            torch.manual_seed(t.cfg.seed + 1_000_003 * t.step + rank)
            return
        cpu = r["rng_cpu_ranks"][rank]
        cuda = (r.get("rng_cuda_ranks") or [None] * size)[rank]
    torch.set_rng_state(cpu)
    if cuda is not None and t.device.type == "cuda":
        torch.cuda.set_rng_state(cuda, t.device)
