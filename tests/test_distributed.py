"""Data-parallel training: two CPU processes with gloo on 127.0.0.1 train as one process does."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from rnngen import checkpoint, distributed
from rnngen.cli import app
from rnngen.data import split
from rnngen.trainer import Interrupted, Trainer
from tests.conftest import TINY, text_ids, tiny_config, tiny_model

pytestmark = [pytest.mark.slow,  # starts processes
              pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")]

CPU = torch.device("cpu")
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform.startswith("linux") else {}  # gloo talks on 127.0.0.1
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_trainer(tmp_path, cfg, world=None, name="m.pt"):
    codec, ids = text_ids()
    train_ids, val_ids = split(ids, 0.1)
    return Trainer(tiny_model(vocab=codec.vocab_size), train_ids, val_ids, cfg, CPU, None,
                   checkpoint.Saver(tmp_path / name, codec), world=world)


def _rank(rank: int, port: int, tmp_path) -> None:
    """One of two ranks: train three steps, then stop on a signal that only rank 1 received."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), **LOOPBACK)
    torch.set_num_threads(1)
    world = distributed.setup("cpu")
    try:
        trainer = make_trainer(tmp_path, tiny_config(max_steps=3, eval_every=3), world, name="dp.pt")
        losses = []
        trainer.report = lambda e: losses.append(e.loss)  # rank 0 reports, for every rank
        trainer.run()
        weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}

        stopping = make_trainer(tmp_path, tiny_config(max_steps=100, eval_every=100), world, name="stop.pt")
        if rank == 1:
            stopping.signals.received = signal.SIGTERM
        try:
            stopping.run()
            stopped = None
        except Interrupted as stop:
            stopped = (stop.step, stop.signum)
        torch.save({"weights": weights, "losses": losses, "stopped": stopped}, tmp_path / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def test_two_ranks_agree_and_match_one_process(tmp_path):
    ctx = mp.start_processes(_rank, args=(free_port(), tmp_path), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 90
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish in 90 s")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["weights"].keys() == r1["weights"].keys()
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])  # DDP kept them in step

    one: list[float] = []
    single = make_trainer(tmp_path, tiny_config(max_steps=3, eval_every=3), name="one.pt")
    single.report = lambda e: one.append(e.loss)
    single.run()
    assert r0["losses"] == pytest.approx(one, abs=1e-5)  # batch 4 on one process = 2 x 2 on two
    for k, v in single.model.state_dict().items():
        assert torch.allclose(r0["weights"][k], v, atol=1e-5), k

    # A SIGTERM that reached rank 1 alone stopped both ranks at the same step, after saving.
    assert r0["stopped"] == r1["stopped"] == (1, signal.SIGTERM)
    saved = checkpoint.load(tmp_path / "stop.last.pt")
    assert saved["resume"]["processes"] == 2
    assert [tuple(h.shape) for h in saved["resume"]["hidden"]] == [(2, 4, 16)] * 2  # all 4 streams


def log_losses(path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


def test_nproc_run_samples_and_resumes_in_one_process(tmp_path, corpus):
    args = [str(corpus), *TINY, "--dropout", "0", "--embed-dropout", "0", "--max-steps", "4", "--eval-every", "2"]
    two, one = tmp_path / "two.pt", tmp_path / "one.pt"
    cmd = [sys.executable, "-m", "rnngen", "train", *args, "--nproc", "2", "--out", str(two),
           "--log", str(tmp_path / "two.jsonl")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **LOOPBACK}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("data-parallel on 2 processes (gloo): global batch 4 = 2 x 2 streams") == 1
    assert proc.stderr.count("done: 4 steps") == 1  # rank 0 alone speaks
    assert not [line for line in proc.stderr.splitlines() if TORCHRUN_LINE.match(line) or "*****" in line]

    result = runner.invoke(app, ["train", *args, "--out", str(one), "--log", str(tmp_path / "one.jsonl"), "-q"])
    assert result.exit_code == 0, result.stderr
    assert log_losses(tmp_path / "two.jsonl") == pytest.approx(log_losses(tmp_path / "one.jsonl"), abs=1e-5)

    # The checkpoints hold plain weights: one process samples from them and resumes the run.
    result = runner.invoke(app, ["sample", str(two), "-n", "40", "-s", "1", "-q"])
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout) >= 40
    last = checkpoint.load(tmp_path / "two.last.pt")
    assert [tuple(h.shape) for h in last["resume"]["hidden"]] == [(1, 4, 32)] * 2
    for name in ("two", "one"):  # both go on from step 4 in one process, the same way
        result = runner.invoke(app, ["train", "--resume", str(tmp_path / f"{name}.last.pt"), "--max-steps", "6",
                                     "--precision", "fp32", "--log", str(tmp_path / f"{name}.jsonl"), "-q"])
        assert result.exit_code == 0, result.stderr
        assert checkpoint.load(tmp_path / f"{name}.last.pt")["resume"]["step"] == 6
    assert log_losses(tmp_path / "two.jsonl")[4:] == pytest.approx(log_losses(tmp_path / "one.jsonl")[4:], abs=1e-5)


# torchrun's own log lines: "W1208 01:45:03.119000 4015 torch/distributed/elastic/...] Received 2 death signal"
TORCHRUN_LINE = re.compile(r"[DIWEF]\d{4} [\d:.]+ +\d+ .*\] ")


def test_a_failing_nproc_run_says_one_line_without_torchrun_chatter(tmp_path, corpus):
    out = tmp_path / "m.pt"
    out.write_bytes(b"mine")  # a worker refuses to replace it; torchrun used to log the failure again
    cmd = [sys.executable, "-m", "rnngen", "train", str(corpus), *TINY, "--max-steps", "2", "--nproc", "2",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **LOOPBACK})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: (rank 0) {out} already exists; pass --force to overwrite it, "
                                        "or choose another --out"]
    assert out.read_bytes() == b"mine"


def test_nproc_refuses_what_cannot_be_split(corpus):
    result = runner.invoke(app, ["train", str(corpus), *TINY, "--nproc", "3"])
    assert result.exit_code == 2 and "multiple of 3" in result.stderr
    result = runner.invoke(app, ["train", "-", "--nproc", "2", "--device", "cpu"])
    assert result.exit_code == 2 and "standard input" in result.stderr
