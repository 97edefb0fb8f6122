"""A closed pipe ends sampling quietly, also with Python's output buffering left on."""

import os
import subprocess
import sys

import pytest

from typer.testing import CliRunner

from rnngen.cli import app
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # starts processes or servers, or trains through them


def test_closed_pipe_is_quiet(tmp_path, corpus):
    out = tmp_path / "m.pt"
    assert CliRunner().invoke(app, ["train", str(corpus), *TINY, "--max-steps", "2", "--out", str(out), "-q"]).exit_code == 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    cmd = f'"{sys.executable}" -m rnngen sample "{out}" -n 200000 | head -c 100'
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, env=env, timeout=120)
    assert len(proc.stdout) == 100
    assert proc.returncode in (0, 1)
    assert b"Traceback" not in proc.stderr and b"Exception ignored" not in proc.stderr, proc.stderr
