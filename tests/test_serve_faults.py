"""The server's own faults, on a real server process: a client that leaves while sending its
body, streams still running at ``--shutdown-timeout``, and the API key rules of ``serve``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE, ROOT, SAMPLES_DIR
from .test_serve import Server, _endless, _metric, _start, _stop, _wait_for

pytestmark = pytest.mark.slow

WAIT_S = 60.0
NO_KEY_WARNING = "without an API key"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every interface, no key: the embedding sample only (the body is refused before any model)."""
    running = _start(tmp_path_factory.mktemp("serve-faults"), "--host", "0.0.0.0", "--models", EMBEDDING_SAMPLE)
    yield running
    _stop(running)


@pytest.fixture
def chat_server(tmp_path: Path) -> Iterator[Server]:
    """The chat sample with a short --shutdown-timeout: each test sends it SIGTERM."""
    running = _start(tmp_path, "--models", CHAT_SAMPLE, "--shutdown-timeout", "1")
    yield running
    _stop(running)


# -- a client that leaves while sending its body ---------------------------------------------

def _send_half_a_body(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(head + b'{"model": "all-minilm-l6-v2", "input": "hel')


def test_a_client_that_leaves_while_sending_its_body_is_no_error(open_server: Server) -> None:
    before = open_server.log.read_text(errors="replace")
    _send_half_a_body(open_server)
    _wait_for(lambda: "went away while sending" in open_server.log.read_text(errors="replace"), "logged")
    _wait_for(lambda: _metric(open_server, "ortmodels_server_requests_in_flight") == 0, "released")
    logged = open_server.log.read_text(errors="replace")[len(before):]
    assert "Traceback" not in logged and "ClientDisconnect" not in logged and "ERROR" not in logged, logged
    assert "INFO ortmodels.serve.errors: The client went away while sending its request (POST /v1/embeddings)" \
        in logged, logged
    assert _metric(open_server, "ortmodels_errors_total") == 0
    assert httpx.post(f"{open_server.v1}/embeddings", json={"model": EMBEDDING_SAMPLE, "input": "still here"},
                      timeout=WAIT_S).status_code == 200


# -- the API key -----------------------------------------------------------------------------

def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``ortmodels serve`` that must refuse to start; on a port in use, so that one which does
    start anyway fails at once (exit 1) instead of serving."""
    environ = {k: v for k, v in os.environ.items() if k != "ORTMODELS_API_KEY"}
    environ.update(env or {}, LOCAL_MODELS_DIR=str(SAMPLES_DIR), COLUMNS="300",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        return subprocess.run([sys.executable, "-m", "ortmodels", "serve", "--port", port, "--models", EMBEDDING_SAMPLE,
                               *args], capture_output=True, text=True, env=environ, timeout=WAIT_S)


def _words(text: str) -> str:
    """rich's error box without its frame and line breaks."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


@pytest.mark.parametrize(("args", "env", "words"), [
    (("--api-key", ""), {}, "is empty or blank"),
    (("--api-key", "   "), {}, "is empty or blank"),
    (("--api-key", " key-with-a-space"), {}, "contains spaces"),
    (("--api-key", "clé"), {}, "other than visible ASCII"),
    ((), {"ORTMODELS_API_KEY": ""}, "is empty or blank"),
    ((), {"ORTMODELS_API_KEY": "key "}, "contains spaces"),
])
def test_a_key_that_would_open_the_server_or_never_match_is_refused(args: tuple[str, ...], env: dict[str, str],
                                                                     words: str) -> None:
    out = _serve(*args, env=env)
    said = _words(out.stderr)
    assert out.returncode == 2, (out.returncode, said)
    assert "Invalid value for '--api-key'" in said and words in said, said
    assert "Traceback" not in said


def test_a_port_in_use_is_one_line_and_no_banner() -> None:
    """The port is bound before anything loads: taken, it is said in one line (exit 1), and the
    banner that says where the server listens is never printed (it came before the bind)."""
    out = _serve()
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Cannot listen on 127.0.0.1:"), out.stderr
    assert "Address already in use; stop what listens there, or choose another port." in lines[0]
    assert "ortmodels serve on" not in out.stdout and "Traceback" not in out.stderr


def test_every_interface_without_a_key_is_warned_about(open_server: Server) -> None:
    assert NO_KEY_WARNING in _words(open_server.log.read_text(errors="replace"))


def test_loopback_without_a_key_is_not_warned_about(chat_server: Server) -> None:
    assert NO_KEY_WARNING not in _words(chat_server.log.read_text(errors="replace"))


# -- streams still running at --shutdown-timeout -------------------------------------------

def test_a_stream_cut_at_the_shutdown_timeout_ends_with_an_error_event_then_done(chat_server: Server) -> None:
    with httpx.stream("POST", f"{chat_server.v1}/chat/completions", json=_endless(4000), timeout=WAIT_S) as reply:
        assert reply.status_code == 200
        lines = (line for line in reply.iter_lines() if line)
        assert next(lines).startswith("data: {")  # the stream is running
        chat_server.process.send_signal(signal.SIGTERM)
        rest = list(lines)
    assert rest[-1] == "data: [DONE]", rest[-3:]
    error = json.loads(rest[-2].removeprefix("data: "))["error"]
    assert error["code"] == "server_shutting_down" and "shutdown" in error["message"], error
    assert all("error" not in json.loads(line.removeprefix("data: ")) for line in rest[:-2])
    assert chat_server.process.wait(timeout=WAIT_S) == 0
    logged = chat_server.log.read_text(errors="replace")
    assert "Traceback" not in logged and "CancelledError" not in logged, logged[-4000:]
    assert "Shutdown timeout" in logged, logged[-4000:]


def test_a_responses_stream_cut_at_the_shutdown_timeout_ends_as_the_responses_api_ends_one(
        chat_server: Server) -> None:
    """``/v1/responses``: ``error`` then ``response.failed`` (the answer so far, incomplete), read by
    the official client as its own event types; no chat-shaped ``data: {"error": ...}``."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=chat_server.v1, api_key="unused", max_retries=0, timeout=WAIT_S)
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 4000}  # cannot end before the cut
    events = []
    with client.responses.create(model=CHAT_SAMPLE, input="Numbers.", max_output_tokens=4000, stream=True,
                                 text={"format": {"type": "json_schema", "name": "numbers", "schema": schema}}) as stream:
        for event in stream:
            events.append(event)
            if event.type == "response.output_text.delta" and len(events) == 5:  # the text is streaming
                chat_server.process.send_signal(signal.SIGTERM)
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"] and kinds[-2:] == ["error", "response.failed"], kinds[-4:]
    error, failed = events[-2:]
    assert error.code == "server_shutting_down" and "shutdown" in error.message, error
    assert failed.response.status == "failed" and failed.response.error.code == "server_error"
    [message] = failed.response.output
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert message.status == "incomplete" and message.content[0].text == text and text.startswith("[")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert chat_server.process.wait(timeout=WAIT_S) == 0
    logged = chat_server.log.read_text(errors="replace")
    assert "Traceback" not in logged and "CancelledError" not in logged, logged[-4000:]


def test_a_whole_answer_cut_at_the_shutdown_timeout_is_a_503(chat_server: Server) -> None:
    body = {**_endless(4000), "stream": False}
    replies: list[httpx.Response] = []
    asker = threading.Thread(target=lambda: replies.append(
        httpx.post(f"{chat_server.v1}/chat/completions", json=body, timeout=WAIT_S)))
    asker.start()
    _wait_for(lambda: _metric(chat_server, "ortmodels_engine_running_requests") == 1, "running")
    chat_server.process.send_signal(signal.SIGTERM)
    asker.join(WAIT_S)
    assert not asker.is_alive() and replies
    reply = replies[0]
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "server_shutting_down"
    assert chat_server.process.wait(timeout=WAIT_S) == 0
    logged = chat_server.log.read_text(errors="replace")
    assert "Traceback" not in logged and "CancelledError" not in logged, logged[-4000:]
