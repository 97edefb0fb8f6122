"""The CLI through typer's CliRunner: stdout and stderr apart, exit codes, and no tracebacks."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rnngen.cli import app
from tests.conftest import TINY

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def assert_clean_error(result, code=1, match=""):
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and not isinstance(result.exception, (TypeError, AttributeError))
    assert match.lower() in result.stderr.lower()


@pytest.fixture
def trained(tmp_path, corpus):
    out = tmp_path / "model.pt"
    result = invoke("train", corpus, *TINY, "--max-steps", 6, "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


def test_train_then_sample_end_to_end(tmp_path, corpus):
    out = tmp_path / "model.pt"
    result = invoke("train", corpus, *TINY, "--max-steps", 30, "--lr", "0.01", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # training talks on stderr only
    assert "step 30" in result.stderr and "bits/char" in result.stderr and "chars/s" in result.stderr
    assert "best validation loss" in result.stderr
    assert out.exists() and (tmp_path / "model.last.pt").exists()

    sample = invoke("sample", out, "-n", 200, "-p", "ROMEO:", "-s", 7)
    assert sample.exit_code == 0, sample.stderr
    assert sample.stdout.startswith("ROMEO:")
    assert len(sample.stdout) == len("ROMEO:") + 200 + 1  # prime, 200 characters, final newline
    assert sample.stderr == ""
    assert invoke("sample", out, "-n", 200, "-p", "ROMEO:", "-s", 7).stdout == sample.stdout
    assert invoke("sample", out, "-n", 200, "-p", "ROMEO:", "-s", 8).stdout != sample.stdout


def test_resume_from_the_last_checkpoint(tmp_path, trained):
    last = tmp_path / "model.last.pt"
    result = invoke("train", "--resume", last, "--max-steps", 9, "-q")
    assert result.exit_code == 0, result.stderr
    info = invoke("info", last)
    assert "9 steps" in info.stdout


def test_options_left_unset_follow_the_plan(tmp_path, corpus):
    from rnngen import checkpoint
    from rnngen.planner import Budget, choose

    def trained_with(*args):
        out = tmp_path / "budget.pt"
        result = invoke("train", corpus, *TINY, "--max-steps", 2, "--out", out, "--force", *args)
        assert result.exit_code == 0, result.stderr
        saved = checkpoint.load(out)
        return checkpoint.model_config(saved), saved["train"]["config"], result.stderr

    model_cfg, train_cfg, header = trained_with()
    chosen = choose(Budget(steps=2), 10**6, model_cfg.vocab_size).values  # two steps: a small fraction of an epoch
    assert (model_cfg.dropout, model_cfg.embed_dropout) == (chosen["dropout"], chosen["embed_dropout"])
    assert train_cfg["weight_decay"] == chosen["weight_decay"] and train_cfg["ema"] == chosen["ema"]
    assert "embedding dropout" not in header and f"weight decay {chosen['weight_decay']:g}" in header
    assert "planned: 1 x 32 as given" in header  # TINY gives the shape; the plan sets the rest
    model_cfg, train_cfg, header = trained_with("--embed-dropout", 0.05, "--weight-decay", 0.02)
    assert model_cfg.embed_dropout == 0.05 and train_cfg["weight_decay"] == 0.02
    assert "embedding dropout 0.05, weight decay 0.02" in header


def test_info_and_eval(trained, corpus):
    info = invoke("info", trained)
    assert info.exit_code == 0
    assert "lstm 1 x 32" in info.stdout and "validation" in info.stdout and "nats/char" in info.stdout
    ev = invoke("eval", trained, corpus, "--device", "cpu")
    assert ev.exit_code == 0, ev.stderr
    assert "nats/char" in ev.stdout and "bits/char" in ev.stdout and "perplexity" in ev.stdout
    nats = float(ev.stdout.split()[0])
    assert 0 < nats < 5


def test_unicode_corpus(tmp_path):
    corpus = tmp_path / "uni.txt"
    corpus.write_text(("Grüße aus 東京 🎵, ça va?\r\n" * 300), encoding="utf-8")
    out = tmp_path / "uni.pt"
    assert invoke("train", corpus, *TINY, "--max-steps", 3, "--out", out, "-q").exit_code == 0
    result = invoke("sample", out, "-n", 100, "-p", "東京 🎵", "-s", 1)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("東京 🎵")
    assert "\r" not in result.stdout
    assert set(result.stdout) <= set("Grüße aus 東京 🎵, ça va?\n")


def test_prime_with_unseen_characters_is_named(trained):
    result = invoke("sample", trained, "-p", "ROMEO: 東")
    assert_clean_error(result, 1, "'東'")


def test_jsonl_batch_and_stop(trained):
    result = invoke("sample", trained, "-b", 4, "-n", 80, "--format", "jsonl", "-s", 3, "--stop", "e")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert "e" not in r["text"]
        assert r["stop_reason"] in ("stop", "length") and r["seed"] == 3
        assert r["tokens"] >= len(r["text"])


def test_every_precision_samples_and_repeats_per_seed(trained):
    for precision in ("fp32", "bf16", "int8"):
        runs = [invoke("sample", trained, "-n", 40, "-s", 5, "-p", "NURSE:", "--precision", precision) for _ in "ab"]
        assert all(r.exit_code == 0 for r in runs), runs[0].stderr
        assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("NURSE:")
        text = runs[0].stdout  # prime, 40 characters, and a newline unless the last one was one
        assert len(text) == 6 + 40 + 1 or (len(text) == 6 + 40 and text.endswith("\n"))
        batches = [invoke("sample", trained, "-n", 40, "-b", 3, "-s", 5, "--format", "jsonl", "--precision", precision)
                   for _ in "ab"]
        assert all(r.exit_code == 0 for r in batches), batches[0].stderr
        rows = [json.loads(line) for line in batches[0].stdout.splitlines()]
        assert batches[0].stdout == batches[1].stdout and [r["tokens"] for r in rows] == [40] * 3


def test_int8_on_a_model_it_cannot_run(tmp_path, corpus):
    out = tmp_path / "odd.pt"
    assert invoke("train", corpus, *TINY, "--hidden", 24, "--max-steps", 2, "--out", out).exit_code == 0
    assert_clean_error(invoke("sample", out, "--precision", "int8"), 1, "multiples of 16")


def test_prime_from_stdin(trained):
    result = invoke("sample", trained, "-f", "-", "-n", 10, input="NURSE:")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("NURSE:")


# Bad input: one clear line, a non-zero exit, never a traceback.


def test_missing_file(tmp_path):
    assert_clean_error(invoke("train", tmp_path / "nope.txt"), 1, "no such file")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_clean_error(invoke("train", empty), 1, "no text")


def test_folder_without_text(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "a.dat").write_bytes(b"\x00\x01\x02" * 10)
    assert_clean_error(invoke("train", folder), 1, "no text")


def test_binary_file_given_as_text(tmp_path):
    blob = tmp_path / "blob.txt"
    blob.write_bytes(bytes(range(256)) * 4)
    assert_clean_error(invoke("train", blob), 1, "binary")


def test_corpus_shorter_than_a_window(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("just a few words\n" * 3)
    assert_clean_error(invoke("train", short, *TINY, "--max-steps", 2, "--out", tmp_path / "s.pt"), 1,
                       "fewer than one window")


def test_missing_checkpoint(tmp_path):
    assert_clean_error(invoke("sample", tmp_path / "none.pt"), 1, "no checkpoint")
    assert_clean_error(invoke("sample", "no-such-model"), 1, "shipped models")


def test_file_that_is_not_a_checkpoint(tmp_path, corpus):
    assert_clean_error(invoke("sample", corpus), 1, "not an rnngen checkpoint")
    assert_clean_error(invoke("info", corpus), 1, "not an rnngen checkpoint")


def test_existing_output_needs_force(tmp_path, trained, corpus):
    result = invoke("train", corpus, *TINY, "--max-steps", 2, "--out", trained)
    assert_clean_error(result, 1, "--force")


@pytest.mark.parametrize("args, option", [
    (["sample", "-n", "-5"], "--length"),
    (["sample", "-t", "-1"], "--temperature"),
    (["sample", "--top-p", "1.5"], "--top-p"),
    (["sample", "-b", "0"], "--num-samples"),
    (["train", "x.txt", "--batch-size", "0"], "--batch-size"),
    (["train", "x.txt", "--max-time", "soon"], "--max-time"),
    (["train", "x.txt", "--cell", "transformer"], "--cell"),
    (["train", "x.txt", "--dropout", "1"], "--dropout"),
    (["train", "x.txt", "--val-frac", "1.5"], "--val-frac"),
    (["train", "x.txt", "--lr", "abc"], "--lr"),
    (["sample", "-n", "many"], "--length"),
    (["sample", "--top-k", "0"], "--top-k"),
    (["sample", "--top-p", "0"], "--top-p"),
    (["sample", "--program", "200"], "--program"),
    (["sample", "--qpm", "0"], "--qpm"),
    (["sample", "--format", "xml"], "--format"),
    (["info"], "checkpoint"),
    (["eval", "shakespeare"], "files"),
    (["export", "shakespeare", "--format", "tflite"], "--format"),
])
def test_bad_options_exit_2_naming_the_option(args, option):
    result = invoke(*args)
    assert result.exit_code == 2
    assert option in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("device, message", [("tpu", "unknown device"), ("cuda:7", "cuda"), ("mps", "mps")])
def test_unknown_or_missing_device_is_a_usage_error(corpus, device, message):
    result = invoke("train", corpus, "--device", device)
    assert result.exit_code == 2 and "--device" in result.stderr and message in result.stderr.lower()


def test_help_answers():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "sample", "info", "eval"):
        assert command in result.stdout


_MAPPED_BLOCKS = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "keep":
    from rnngen.cli import keep_freed_memory
    keep_freed_memory()
before = libc.mallinfo2().hblks
libc.malloc(8 << 20)  # a tensor-sized block, as a training or batch sampling step makes many of
print(libc.mallinfo2().hblks - before)
"""


def _glibc() -> tuple[int, ...]:
    name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else ()


@pytest.mark.skipif(_glibc() < (2, 33), reason="a glibc setting, read through mallinfo2 (glibc 2.33 on)")
def test_megabyte_blocks_come_from_the_reused_heap_instead_of_fresh_mappings():
    # By default glibc maps a fresh block of this size (a page fault per 4 KB touched, every time it is made
    # again); with freed memory kept it comes from the heap, where freed blocks are reused. Counting the page
    # faults of a sampling run instead depends on the kernel: one machine kind shows none either way.
    mapped = {mode: int(subprocess.run([sys.executable, "-c", _MAPPED_BLOCKS, mode], capture_output=True,
                                       text=True, check=True).stdout)
              for mode in ("default", "keep")}
    assert mapped == {"default": 1, "keep": 0}


def test_the_command_line_sets_malloc_up_before_it_runs_except_in_data_parallel_workers(monkeypatch):
    from rnngen import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("malloc"))
    monkeypatch.setattr(cli, "app", lambda: calls.append("app"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cli.main()
    assert calls == ["malloc", "app"]
    monkeypatch.setattr(cli, "_leave", lambda code: calls.append(f"leave {code}"))  # os._exit, in a worker
    monkeypatch.setenv("LOCAL_RANK", "1")  # as torchrun starts its workers
    cli.main()
    assert calls == ["malloc", "app", "app", "leave 0"]

    def failing():
        calls.append("app")
        raise SystemExit(3)

    monkeypatch.setattr(cli, "app", failing)
    with pytest.raises(SystemExit):
        cli.main()
    assert calls[-2:] == ["app", "leave 3"]  # a worker leaves with its command's exit code


# Never replacing a user's file without --force; what --help promises; --version.


def test_sample_to_a_file_refuses_to_replace_it_without_force(trained, tmp_path):
    out = tmp_path / "mine.txt"
    out.write_text("my own words\n")
    result = invoke("sample", trained, "-n", 20, "-s", 1, "-o", out)
    assert_clean_error(result, 1, "--force")
    assert len(result.stderr.strip().splitlines()) == 1
    assert out.read_text() == "my own words\n"
    result = invoke("sample", trained, "-n", 20, "-s", 1, "-p", "ROMEO:", "-o", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and out.read_text().startswith("ROMEO:")


def test_a_text_model_refuses_a_midi_file_name(trained, tmp_path):
    for name in ("chorale.mid", "song.wav"):
        result = invoke("sample", trained, "-n", 20, "-o", tmp_path / name)
        assert_clean_error(result, 2, ".txt")
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / name).exists()


def test_train_refuses_to_replace_a_log_or_a_resumable_checkpoint(tmp_path, trained, corpus):
    log = tmp_path / "run.jsonl"
    log.write_text('{"step": 1, "loss": 9.0}\n')
    args = ["train", corpus, *TINY, "--max-steps", 2, "--log", log]
    assert_clean_error(invoke(*args, "--out", tmp_path / "new.pt"), 1, "--log")
    assert log.read_text() == '{"step": 1, "loss": 9.0}\n' and not (tmp_path / "new.pt").exists()
    # The last checkpoint beside --out counts too: here model.last.pt is there, model.pt is not.
    (tmp_path / "model.pt").unlink()
    assert_clean_error(invoke("train", corpus, *TINY, "--max-steps", 2, "--out", trained), 1, "model.last.pt")

    result = invoke(*args, "--out", tmp_path / "new.pt", "--force", "-q")  # replaces the log: one run in it
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    result = invoke("train", "--resume", tmp_path / "new.last.pt", "--max-steps", 3, "--log", log, "-q")
    assert result.exit_code == 0, result.stderr  # a resumed run goes on in its log
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert_clean_error(invoke(*args, "--out", tmp_path / "x.pt", "--log", tmp_path / "missing" / "x.jsonl"),
                       1, "does not exist")


def _help(command: str, option: str) -> str:
    import typer

    params = typer.main.get_command(app).commands[command].params
    return next(p.help for p in params if option in p.opts)


def test_help_says_what_the_defaults_do():
    assert "0, piano" not in _help("sample", "--program") and "keeps its own" in _help("sample", "--program")
    assert "5% of the run" in _help("train", "--warmup") and "(default: 100)" in _help("train", "--warmup")
    assert "ten times" not in _help("train", "--eval-every")
    assert "each tenth" in _help("train", "--eval-every") and "5% of the time" in _help("train", "--eval-every")
    assert "$XDG_CACHE_HOME/rnngen" in _help("train", "--cache-dir")
    assert "appends" in _help("train", "--log") and "--force" in _help("train", "--log")


def test_version_comes_from_the_package_metadata_without_torch():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == f"rnngen {version('rnngen')}\n"
    script = ("import sys\nsys.argv = ['rnngen', '--version']\nfrom rnngen.cli import main\n"
              "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code\n"
              "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"rnngen {version('rnngen')}\nFalse\n"
