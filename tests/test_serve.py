"""rnngen serve: each request answered as `rnngen sample` answers it alone, however many share the
batch; bad requests a 4xx naming the field; clients that leave free their rows; the openai package
works unchanged; signals end the server cleanly. Tiny untrained models made here; no network."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnngen import checkpoint, serve_cmd
from rnngen.cli import app
from rnngen.codec import TextCodec
from rnngen.config import ModelConfig, ServeConfig
from rnngen.midi.codec import MidiCodec
from rnngen.model import RNNModel
from rnngen.sample import Sampler, generate, make_step
from rnngen.serve_api import Limits
from rnngen.serve_http import Server
from rnngen.serve_loop import BatchLoop, Job
from tests.conftest import make_text

pytestmark = pytest.mark.slow  # starts processes or servers, or trains through them

runner = CliRunner()
LIMITS = Limits(max_tokens=1_000_000, max_n=4, max_prompt=200, max_rows=64)


def save_model(path: Path, codec, seed: int) -> Path:
    torch.manual_seed(seed)
    model = RNNModel(ModelConfig(vocab_size=codec.vocab_size, hidden=32, embed=16)).eval()
    checkpoint.save(checkpoint.make(model, codec, {}), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve")
    return {"words": save_model(folder / "words.pt", TextCodec.fit(make_text()), 1),
            "tune": save_model(folder / "tune.pt", MidiCodec(), 2)}


@pytest.fixture(scope="module")
def server(models):
    """A server on a free port, in this process, with its loops."""
    served = serve_cmd.load(ServeConfig(models=[str(p) for p in models.values()], precision="fp32",
                                        max_batch=LIMITS.max_rows))
    httpd = Server(("127.0.0.1", 0), served, LIMITS)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    for s in served.values():
        s.loop.stop()
    httpd.server_close()


def post(server, path: str, body, raw: bytes | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    data = raw if raw is not None else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, payload, dict(response.getheaders())


def complete(server, **body) -> dict:
    status, payload, _ = post(server, "/v1/completions", {"model": "words", **body})
    assert status == 200, payload
    return json.loads(payload)


def streamed(server, **body) -> list[str]:
    """Each row's text from a streamed completion, joined from its events."""
    status, payload, headers = post(server, "/v1/completions", {"model": "words", "stream": True, **body})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream"), payload
    events = [e.removeprefix("data: ") for e in payload.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    texts: dict[int, str] = {}
    for event in map(json.loads, events[:-1]):
        choice = event["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    return [texts[i] for i in sorted(texts)]


def sample_cli(model: Path, length: int, rows: int, seed: int, temperature: float, prime: str = "",
               stops=(), top_k=None, top_p=None, tag=None) -> list[str]:
    """What `rnngen sample` prints for these options, each sample's text without the prime."""
    args = ["sample", str(model), "-n", length, "-b", rows, "-s", seed, "-t", temperature, "--precision", "fp32",
            *(["--tag", tag] if tag else []),
            "--format", "jsonl", *(["-p", prime] if prime else []), *[a for s in stops for a in ("--stop", s)],
            *(["--top-k", top_k] if top_k else []), *(["--top-p", top_p] if top_p else [])]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return [json.loads(line)["text"] for line in result.stdout.splitlines()]


REQUESTS = [  # (options, streamed): mixed sizes, temperatures, filters, stops, with and without a prompt
    (dict(prompt="ROMEO:", max_tokens=300, seed=1, temperature=0.8), True),
    (dict(prompt="", max_tokens=200, seed=2, temperature=1.0, n=3), False),
    (dict(prompt="JULIET", max_tokens=150, seed=3, temperature=0), True),
    (dict(prompt="the", max_tokens=250, seed=4, temperature=0.9, n=2, top_k=4), False),
    (dict(prompt="NURSE:\n", max_tokens=400, seed=5, temperature=1.2, top_p=0.8), True),
    (dict(prompt="my", max_tokens=500, seed=6, temperature=1.5, stop=["\n\n", "M"], n=2), True),  # both rows stop
    (dict(prompt="the", max_tokens=300, seed=7, temperature=1.0, stop=["e"]), False),
]


def test_concurrent_requests_each_get_what_rnngen_sample_gives_them_alone(server, models):
    jobs = REQUESTS * 3  # 21 requests, joining and leaving while the others run
    answers: list = [None] * len(jobs)

    def ask(i: int) -> None:
        options, stream = jobs[i]
        time.sleep(0.003 * (i % 5))
        if stream:
            answers[i] = streamed(server, **options)
        else:
            answers[i] = [c["text"] for c in complete(server, **options)["choices"]]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (options, _), answer in zip(REQUESTS, answers):
        alone = sample_cli(models["words"], options["max_tokens"], options.get("n", 1), options["seed"],
                           options["temperature"], options["prompt"], options.get("stop", ()),
                           options.get("top_k"), options.get("top_p"))
        assert answer == alone, options
    assert answers[: len(REQUESTS)] == answers[len(REQUESTS) : 2 * len(REQUESTS)]
    assert len({tuple(a) for a in answers}) == len(REQUESTS)  # different requests, different texts


def test_rows_beyond_the_batch_wait_for_room_and_still_match(models):
    model, codec, _ = checkpoint.load_model(models["words"])
    cpu = torch.device("cpu")
    loop = BatchLoop(model, make_step(model, "fp32", 3, cpu), cpu, max_rows=3).start()
    got, ends = [[] for _ in range(5)], [threading.Event() for _ in range(5)]
    for i in range(5):  # rows 2, 1, 2, 1, 2 through a batch of at most 3
        job = Job([i + 1], 2 - i % 2, 40 + 7 * i, Sampler(0.9, generator=torch.Generator().manual_seed(i)),
                  take=lambda tokens, i=i: got[i].append(tokens) is not None, end=lambda e, i=i: ends[i].set())
        loop.submit(job)
        assert loop.rows() <= 3
    for e in ends:
        assert e.wait(30)
    loop.stop()
    for i in range(5):
        alone = torch.stack(list(generate(model, [i + 1], 40 + 7 * i, 2 - i % 2, 0.9, seed=i, precision="fp32")))
        assert got[i] == alone.tolist()


def test_a_tagged_model_answers_each_tag_as_rnngen_sample_does(tmp_path):
    codec = TextCodec.fit(make_text())
    torch.manual_seed(4)
    model = RNNModel(ModelConfig(vocab_size=codec.vocab_size, hidden=32, embed=16, tags=("verse", "prose"))).eval()
    path = tmp_path / "styles.pt"
    checkpoint.save(checkpoint.make(model, codec, {"tag_tokens": [300, 100]}), path)
    served = serve_cmd.load(ServeConfig(models=[str(path)], precision="fp32", max_batch=16))
    httpd = Server(("127.0.0.1", 0), served, LIMITS)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    asks = [dict(prompt="the", max_tokens=120, seed=5, temperature=1.0, n=2, tag="verse"),
            dict(prompt="", max_tokens=90, seed=6, temperature=0.9, tag="prose"),
            dict(prompt="my", max_tokens=100, seed=7, temperature=1.0, n=3)]  # no tag: drawn by share, seeded
    answers: list = [None] * len(asks)
    try:
        conn = http.client.HTTPConnection(*httpd.server_address[:2], timeout=30)
        conn.request("GET", "/v1/models")
        assert json.loads(conn.getresponse().read())["data"][0]["tags"] == ["verse", "prose"]
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(
            i, [c["text"] for c in complete(httpd, model="styles", **asks[i])["choices"]])) for i in range(len(asks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status, payload, _ = post(httpd, "/v1/completions", {"model": "styles", "prompt": "a", "tag": "poetry"})
    finally:
        httpd.shutdown()
        for s in served.values():
            s.loop.stop()
        httpd.server_close()
    for ask, answer in zip(asks, answers):
        assert answer == sample_cli(path, ask["max_tokens"], ask.get("n", 1), ask["seed"], ask["temperature"],
                                    ask["prompt"], tag=ask.get("tag")), ask
    error = json.loads(payload)["error"]
    assert status == 400 and error["param"] == "tag" and "verse, prose" in error["message"]


def test_midi_answers_with_the_file_rnngen_sample_writes(server, models, tmp_path):
    status, data, headers = post(server, "/v1/midi", {"model": "tune", "seed": 3, "max_tokens": 90})
    assert status == 200 and headers["Content-Type"] == "audio/midi" and headers["X-Seed"] == "3"
    result = runner.invoke(app, ["sample", str(models["tune"]), "-s", "3", "-n", "90", "--precision", "fp32",
                                 "-o", str(tmp_path / "alone.mid"), "-q"])
    assert result.exit_code == 0, result.stderr
    assert data == (tmp_path / "alone.mid").read_bytes()
    status, payload, _ = post(server, "/v1/midi", {"model": "tune", "seed": 3, "max_tokens": 90, "format": "json"})
    piece = json.loads(payload)
    import base64

    assert base64.b64decode(piece["midi"]) == data and piece["events"] <= 90
    assert base64.b64decode(piece["piano_roll"])[:4] == b"\x89PNG"  # the test extras include plot and audio
    assert base64.b64decode(piece["wav"])[:4] == b"RIFF"


@pytest.mark.parametrize("path, body, status, param", [
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", {"model": "nobody"}, 404, "model"),
    ("/v1/completions", {"model": 3}, 400, "model"),
    ("/v1/completions", {"model": "words", "max_tokens": "ten"}, 400, "max_tokens"),
    ("/v1/completions", {"model": "words", "max_tokens": 1_000_001}, 400, "max_tokens"),
    ("/v1/completions", {"model": "words", "n": 5}, 400, "n"),
    ("/v1/completions", {"model": "words", "n": True}, 400, "n"),
    ("/v1/completions", {"model": "words", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"model": "words", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": "words", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"model": "words", "stop": 7}, 400, "stop"),
    ("/v1/completions", {"model": "words", "prompt": "ROMEO: ¿qué?"}, 400, "prompt"),
    ("/v1/completions", {"model": "words", "prompt": "x" * 201}, 400, "prompt"),
    ("/v1/completions", {"model": "words", "logprobs": 2}, 400, "logprobs"),
    ("/v1/completions", {"model": "words", "colour": "red"}, 400, "colour"),
    ("/v1/completions", {"model": "tune"}, 400, "model"),
    ("/v1/midi", {"model": "words"}, 400, "model"),
    ("/v1/midi", {"model": "tune", "format": "mp3"}, 400, "format"),
    ("/v1/chat/completions", {}, 404, None),
])
def test_bad_requests_are_a_4xx_naming_the_field_and_serving_goes_on(server, path, body, status, param):
    got, payload, _ = post(server, path, None if isinstance(body, bytes) else body,
                           raw=body if isinstance(body, bytes) else None)
    assert got == status, payload
    error = json.loads(payload)["error"]
    assert error["param"] == param and "\n" not in error["message"] and error["message"]
    if param == "prompt" and "¿" in str(body):
        assert "'¿'" in error["message"] and "'é'" in error["message"]  # the unseen characters named
    assert complete(server, prompt="ROMEO:", max_tokens=5, seed=1)["choices"][0]["finish_reason"] == "length"


def wait_until(test, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if test():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_frees_its_rows(server, stream):
    loop = server.models["words"].loop
    assert wait_until(lambda: loop.rows() == 0)
    conn = socket.create_connection(server.server_address[:2])
    body = json.dumps({"model": "words", "max_tokens": 1_000_000, "n": 4, "stream": stream, "seed": 1}).encode()
    conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert wait_until(lambda: loop.rows() == 4)
    if stream:
        assert b"data: " in conn.recv(4096)  # text is arriving
    conn.close()
    assert wait_until(lambda: loop.rows() == 0, 5)  # long before its million steps
    assert complete(server, prompt="ROMEO:", max_tokens=5, seed=1)["choices"][0]["text"]


def test_the_openai_package_works_unchanged(server):
    openai = pytest.importorskip("openai", reason="the openai package is part of the test extra")
    host, port = server.server_address[:2]
    client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list()} == {"words", "tune"}
    done = client.completions.create(model="words", prompt="ROMEO:", max_tokens=60, seed=9, temperature=0.7)
    same = complete(server, prompt="ROMEO:", max_tokens=60, seed=9, temperature=0.7)
    assert done.choices[0].text == same["choices"][0]["text"]
    assert done.usage.completion_tokens == 60
    pieces = client.completions.create(model="words", prompt="ROMEO:", max_tokens=60, seed=9, temperature=0.7,
                                       stream=True)
    assert "".join(c.choices[0].text for c in pieces) == done.choices[0].text
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nobody", prompt="the")
    with pytest.raises(openai.BadRequestError, match="n must be between"):
        client.completions.create(model="words", prompt="the", n=9)


def test_the_page_is_served_in_one_file(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    page = response.read().decode()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert "/v1/completions" in page and "/v1/midi" in page
    assert "http://" not in page and "https://" not in page  # nothing loaded from the network


def start_cli(model: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rnngen", "serve", str(model), "--port", "0", "--precision", "fp32",
                             "--max-tokens", "10000000"],
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    assert "serving words (text)" in line, line + proc.stderr.read()
    return proc, int(line.split(":")[2].split("/")[0])


def test_sigterm_ends_the_streams_in_flight_and_exits_143_and_ctrl_c_130(models):
    proc, port = start_cli(models["words"])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/completions", json.dumps({"model": "words", "max_tokens": 10_000_000, "stream": True}))
    response = conn.getresponse()
    assert response.read(6) == b"data: "
    proc.send_signal(15)
    rest = response.read().decode()
    assert rest.endswith('"code": null}}\n\ndata: [DONE]\n\n') and "shutting down" in rest
    rc = proc.wait(20)
    assert rc == 143, proc.stderr.read()
    assert "Traceback" not in proc.stderr.read()
    proc, port = start_cli(models["words"])
    proc.send_signal(2)
    assert proc.wait(20) == 130
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_serve_usage_errors_are_one_line(models, tmp_path):
    result = runner.invoke(app, ["serve", str(tmp_path / "missing.pt")])
    assert result.exit_code == 1 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 2 and "--port" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = runner.invoke(app, ["serve", str(models["words"]), "--port", str(taken.getsockname()[1])])
    assert result.exit_code == 1 and "cannot listen on 127.0.0.1" in result.stderr
    result = runner.invoke(app, ["serve", str(models["words"]), str(models["words"])])
    assert result.exit_code == 1 and "two models would be called 'words'" in result.stderr


def test_help_still_imports_no_torch():
    code = "import sys, rnngen.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.fixture
def browser():
    """Headless Chromium through selenium, where the machine has them (CI installs them)."""
    import shutil

    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is part of the test extra")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield session
    session.quit()


def test_the_page_streams_text_and_shows_a_piece_in_a_real_browser(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    wait = WebDriverWait(browser, 30)
    field = lambda name: browser.find_element(By.ID, name)  # noqa: E731
    wait.until(lambda b: len(Select(field("model")).options) == 2)
    Select(field("model")).select_by_value("words")
    for name, value in (("prompt", "ROMEO:"), ("length", "80"), ("temperature", "0.7"), ("seed", "11")):
        field(name).clear()
        field(name).send_keys(value)
    field("go").click()
    wait.until(lambda b: "characters in" in field("status").text)
    alone = complete(server, prompt="ROMEO:", max_tokens=80, seed=11, temperature=0.7)["choices"][0]["text"]
    assert field("out").get_attribute("textContent") == "ROMEO:" + alone
    Select(field("model")).select_by_value("tune")
    for name, value in (("length", "60"), ("seed", "3")):
        field(name).clear()
        field(name).send_keys(value)
    field("go").click()
    wait.until(lambda b: field("download").is_displayed())
    assert field("download").get_attribute("href").startswith("data:audio/midi;base64,")
    assert browser.execute_script("return document.getElementById('roll').naturalWidth") > 0  # the piano roll drew
    assert field("audio").get_attribute("src").startswith("data:audio/wav;base64,")
