"""The README's shell and Python examples, run as tests, so that the README cannot drift from the tool.

Every ```sh and ```python block of README.md is one test (a Python block runs with `python -c`), run in the README's order in one temporary folder laid out
as a fresh checkout (corpora/, checkpoints/, examples/), as a new reader would run them one after the
other. Each command line runs in bash with `pipefail`; its exit status is checked, it must print no
traceback, and every file it names after `-o`, `--out` or `--log` must exist afterwards (a folder: with
files in it).
The blocks build on each other (a model trained in one is sampled in the next), so run the module whole.

The one switch, here and not in rnngen: training is cut short by rewriting the command before it runs
(`shortened`). Each `rnngen train` loses its limit (--max-time, --max-steps, --epochs; none means 10
minutes) and gets `--max-steps 1`; a `--resume` run gets `--max-steps 2`, one step more than the run it
continues. A new model (neither --resume nor --init-from, which keep their model's shape) is also made
small, `--layers 1 --hidden 64`, unless the command sets either itself: the validation of a 2 x 512 model
on tiny shakespeare would otherwise take most of each run's time.

Marks, an HTML comment directly above a block's fence in README.md, in pytest-codeblocks' syntax:
    <!--pytest.mark.skip(reason="needs a 17 GB corpus")-->    cannot run here; reported as skipped
    <!--pytest.mark.slow-->                                   long; `pytest -m "not slow"` leaves it out
    <!--pytest.mark.server("rnngen serve")-->                 runs while that server runs, started here
A block that calls a program that is not installed (jq, curl) is skipped, naming it.

Files that the README treats as the reader's own (notes.txt, held_out.txt, src/, songs/, jigs/) are
small stand-ins cut from the shipped corpora and source (`_stand_ins`).

Why this tool: pytest-codeblocks (PyPI) reads the blocks and their `pytest.mark` comments, so skip and
slow are ordinary pytest marks written in its documented syntax. Its own runner (`pytest --codeblocks`)
runs each block by itself in pytest's folder and cannot lay out a checkout, shorten training or start a
server, so the running is this module's. Sybil runs blocks through evaluators of one's own too, but
carries no pytest marks and collects README.md only from a conftest.py at the root; mktestdocs runs bash
blocks with no marks or folder; cram and prysk want their own transcript format, not ```sh fences.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts processes or servers, or trains through them

codeblocks = pytest.importorskip("pytest_codeblocks")

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CHECKOUT = ("corpora", "checkpoints", "examples")  # what the README's commands read from a checkout
LIMITS = re.compile(r"\s--(max-time|max-steps|epochs)(=|\s+)\S+")
SMALL = {"--layers": "1", "--hidden": "64"}  # a new model's shape in these tests, where the command names none
LINE_TIMEOUT = 300  # seconds; a hung command fails its test rather than CI


def _headings() -> dict[int, str]:
    """Each line's section: the last heading above it (outside fences)."""
    section, fenced, out = "", False, {}
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        fenced ^= line.lstrip().startswith("```")
        if not fenced and line.startswith("#"):
            section = line.lstrip("#").strip()
        out[number] = section
    return out


def _blocks() -> list:
    params, headings = [], _headings()
    for block in codeblocks.extract_from_file(README):
        if block.syntax not in ("sh", "python"):
            continue
        marks = [eval(m, {"pytest": pytest, "sys": sys}) for m in block.marks]  # as the plugin reads them
        params.append(pytest.param(block, marks=marks, id=f"{headings[block.lineno]}, line {block.lineno}"))
    return params


def _commands(code: str) -> list[str]:
    """The block's command lines, a line ending in a backslash joined to the next."""
    return [c.strip() for c in code.replace("\\\n", " ").splitlines() if c.strip()]


def shortened(command: str) -> str:
    """The command with each `rnngen train` cut to a step or two of a small model (the one switch)."""
    if "rnngen train" not in command:
        return command
    cut = [f"--max-steps {2 if '--resume' in command else 1}"]
    if "--resume" not in command and "--init-from" not in command:  # those keep their model's shape
        cut += [f"{option} {value}" for option, value in SMALL.items() if not re.search(rf"{option}\b", command)]
    return LIMITS.sub("", command).replace("rnngen train", " ".join(["rnngen train", *cut]))


PY_LIMITS = re.compile(r"\b(max_time|max_steps|epochs)=[^,)]+")


def shortened_python(code: str) -> str:
    """A Python example with each `rnngen.train(...)` cut the same way (`max_steps=1`, a small model)."""
    if "rnngen.train(" not in code:
        return code
    cut = "max_steps=1" + "".join(f", {o.lstrip('-')}={v}" for o, v in SMALL.items() if f"{o.lstrip('-')}=" not in code)
    return PY_LIMITS.sub(cut, code, count=1)


def written(command: str) -> list[str]:
    """The files a command says it writes: what follows -o, --out or --log (not `-`, stdout)."""
    words = shlex.split(command, comments=True)
    return [b for a, b in zip(words, words[1:]) if a in ("-o", "--out", "--log") and b != "-"]


def _programs(command: str) -> set[str]:
    """The programs a command line starts: its first word and the first after each | && ;."""
    words = shlex.split(command, comments=True)
    firsts = {words[0]} | {b for a, b in zip(words, words[1:]) if a in ("|", "&&", "||", ";")}
    return {w for w in firsts if w not in (".", "cd", "echo")}


def _stand_ins(root: Path) -> None:
    """The reader's own files that the examples name, made from what the checkout has."""
    text = (REPO / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    (root / "notes.txt").write_text(text[:50_000], encoding="utf-8")
    (root / "held_out.txt").write_text(text[-5_000:], encoding="utf-8")
    (root / "src").mkdir()
    for name in ("chart.py", "errors.py", "config.py"):
        shutil.copy(REPO / "rnngen" / name, root / "src" / name)
    shutil.copy(REPO / "rnngen" / "chart.py", root / "held_out.py")  # characters the model saw
    chorales = sorted((REPO / "corpora" / "bach-chorales").glob("*.mid"))
    for folder, files in (("songs", chorales[:24]), ("jigs", chorales[24:48])):  # a batch of 64 x 128 windows
        (root / folder).mkdir()
        for f in files:
            shutil.copy(f, root / folder / f.name)


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """A fresh checkout's folder and an environment in which `rnngen` runs this checkout's code."""
    root = tmp_path_factory.mktemp("readme")
    for name in CHECKOUT:
        shutil.copytree(REPO / name, root / name)
    _stand_ins(root)
    bin_dir = root.parent / f"{root.name}-bin"  # outside the folder, so `*.txt`-style globs never see it
    bin_dir.mkdir()
    shim = bin_dir / "rnngen"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rnngen "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                                 os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("PYTHONUNBUFFERED", None)  # a closed pipe is tested as a reader meets it
    return root, env


def _run(command: str, root: Path, env: dict) -> None:
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=root, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=LINE_TIMEOUT)
    err = done.stderr.decode(errors="replace")
    said = f"$ {command}\n--- stderr (end) ---\n{err[-3000:]}"
    assert done.returncode == 0, f"exit {done.returncode}\n{said}"
    assert "Traceback (most recent call last)" not in err, said
    for path in written(command):
        target = root / path
        assert target.exists(), f"{path} was not written\n{said}"
        assert not target.is_dir() or any(target.iterdir()), f"{path} is empty\n{said}"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class _Server:
    """A command that serves until stopped, started before a block and stopped (Ctrl-C) after it."""

    def __init__(self, command: str, root: Path, env: dict, port: int = 8000):
        self.command, self.root, self.env, self.port = command, root, env, port

    def __enter__(self):
        if not _port_free(self.port):
            pytest.skip(f"port {self.port} is in use")
        self.log = open(self.root.parent / f"{self.root.name}-server.log", "w+b")
        self.proc = subprocess.Popen(["bash", "-c", f"exec {self.command}"], cwd=self.root, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2).close()
                return self
            except OSError:
                time.sleep(0.25)
        self.__exit__()
        pytest.fail(f"`{self.command}` did not answer:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _run_python(code: str, root: Path, env: dict) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=LINE_TIMEOUT)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"exit {done.returncode}\n{code}\n--- stderr (end) ---\n{err[-3000:]}"


@pytest.mark.parametrize("block", _blocks())
def test_readme_block(block, reader, request):
    root, env = reader
    server = request.node.get_closest_marker("server")
    if block.syntax == "python":
        with _Server(server.args[0], root, env) if server else contextlib.nullcontext():
            _run_python(shortened_python(block.code), root, env)
        return
    commands = [shortened(c) for c in _commands(block.code)]
    missing = sorted({p for c in commands for p in _programs(c) if shutil.which(p, path=env["PATH"]) is None})
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, not installed here")
    if server is None:
        for command in commands:
            _run(command, root, env)
        return
    with _Server(server.args[0], root, env):
        for command in commands:
            _run(command, root, env)


def test_the_switch_shortens_every_training_run():
    small = "rnngen train --max-steps 1 --layers 1 --hidden 64"
    assert shortened("rnngen train a.txt --max-time 10m --out x.pt") == f"{small} a.txt --out x.pt"
    assert shortened("cat *.txt | rnngen train - --out m.pt") == f"cat *.txt | {small} - --out m.pt"
    assert (shortened("rnngen train --resume x.last.pt --max-time 20m # more")
            == "rnngen train --max-steps 2 --resume x.last.pt # more")
    assert (shortened("rnngen train a/ --init-from b.pt --max-steps 2000 --eval-every 250")
            == "rnngen train --max-steps 1 a/ --init-from b.pt --eval-every 250")
    assert (shortened("rnngen train a.txt --layers 3 --hidden 256 --epochs 2")
            == "rnngen train --max-steps 1 a.txt --layers 3 --hidden 256")
    assert shortened("rnngen sample -n 100000 | head -c 500") == "rnngen sample -n 100000 | head -c 500"


def test_the_switch_shortens_python_training_too():
    code = 'm = rnngen.train(["a.txt"], max_time="2m", out="run.pt")'
    assert shortened_python(code) == 'm = rnngen.train(["a.txt"], max_steps=1, layers=1, hidden=64, out="run.pt")'
    assert shortened_python("rnngen.load('x').sample(500)") == "rnngen.load('x').sample(500)"


def test_written_files_are_read_from_the_options():
    assert written('rnngen sample bach -b 8 -o out/   # eight pieces') == ["out/"]
    assert written("rnngen sample bach -o - | timidity -") == []
    assert written("rnngen train a.txt --log r.jsonl && rnngen plot r.jsonl -o c.png") == ["r.jsonl", "c.png"]


def test_every_sh_block_is_collected_with_its_marks():
    blocks = _blocks()
    fences = sum(line.strip() in ("```sh", "```python") for line in README.read_text(encoding="utf-8").splitlines())
    assert len(blocks) == fences
    reasons = [m.kwargs.get("reason") for b in blocks for m in b.marks if m.name == "skip"]
    assert reasons and all(reasons), "a skipped block says why"
