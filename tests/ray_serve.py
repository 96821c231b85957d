"""``ortmodels serve --ray`` as the Ray tests start it: one helper, so every module starts its
cluster the same way (a free port, a loopback cluster without auth, the log kept) and stops it
with SIGTERM (``serve.shutdown()`` and ``ray.shutdown()``), whatever the test did."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT
from .servers import _free_port

#: A Ray cluster takes minutes to start on 2 busy cores.
START_TIMEOUT_S = 180.0


@dataclass
class RayServer:
    process: subprocess.Popen
    url: str
    log: Path
    address: str
    """The Ray cluster's GCS address, for a test that joins it (``ray.init(address=...)``)."""

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then a kill if it has not ended within a minute."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def serve_on_ray(tmp: Path, store: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = START_TIMEOUT_S) -> Iterator[RayServer]:
    """``ortmodels -v serve --ray ARGS`` on ``store``, ready (``/health`` 200 and serving) when
    yielded; stopped, with exit status 0 checked, when the block ends."""
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DEFAULT_", "MODEL_", "RAY_"))}
    environ.update(LOCAL_MODELS_DIR=str(store), RAY_AUTH_MODE="disabled",  # a loopback cluster for this test only
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")])))
    environ.update(env or {})
    log = tmp / f"serve-ray-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ortmodels", "-v", "serve", "--ray", "--port", str(port),
                                    *args], cwd=tmp, env=environ, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"ortmodels serve --ray exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"ortmodels serve --ray did not answer /health in time:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200 and "Serving on" in log.read_text():
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        found = re.search(r"Ray cluster at (\S+)", log.read_text(errors="replace"))
        assert found, log.read_text()[-4000:]
        yield RayServer(process, url, log, found.group(1))
    finally:
        stop(process)
    assert process.returncode == 0, log.read_text(errors="replace")[-4000:]
