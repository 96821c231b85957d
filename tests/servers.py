"""Starting and stopping ``ortmodels serve`` for the tests that speak to a real server process.

`_start` returns once ``/health`` says 200 (the answers it saw on the way kept); `module_server`
makes the usual fixture of it: one process per test module, stopped after the module's last test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from .conftest import ROOT, SAMPLES_DIR

START_TIMEOUT_S = 120.0


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    health_seen: list[tuple[int, dict]]

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(tmp: Path, *args: str, models_dir: Path = SAMPLES_DIR, settings: dict[str, str] | None = None) -> Server:
    """``ortmodels serve`` in a subprocess (``settings``: its environment variables besides the
    store); returns once /health says 200."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFAULT_", "MODEL_"))}
    env["LOCAL_MODELS_DIR"] = str(models_dir)
    env.update(settings or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = tmp / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ortmodels", "-v", "serve", "--port", str(port), *args],
                                   cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log, [])
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"The server exited with {process.returncode}:\n{server.logs()}")
        try:
            reply = httpx.get(f"{server.url}/health", timeout=5)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        server.health_seen.append((reply.status_code, reply.json()))
        if reply.status_code == 200:
            return server
        time.sleep(0.1)
    _stop(server)
    pytest.fail(f"The server did not become healthy in {START_TIMEOUT_S} s:\n{server.logs()}")


def _stop(server: Server) -> int | None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=30)
    return server.process.returncode


def module_server(folder: str, *args: str, settings: dict[str, str] | None = None) -> Callable[..., Iterator[Server]]:
    """A module-scoped fixture (the test module's name for it is the name it is assigned to): one
    ``ortmodels serve`` with ``args``, in a fresh temporary ``folder``, stopped after the module."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        running = _start(tmp_path_factory.mktemp(folder), *args, settings=settings)
        yield running
        _stop(running)

    return server
