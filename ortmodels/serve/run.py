"""Serve the app with uvicorn, exiting 0 after a graceful SIGTERM or Ctrl-C.

uvicorn stops accepting connections on SIGTERM and lets running requests finish; at
``shutdown_timeout`` seconds the app ends those still running itself (`Shutdown`: a stream
with an error event and ``[DONE]``, a whole answer with a 503), and uvicorn's own cancel
comes `CANCEL_GRACE_S` later, only for a client that reads nothing. Then it runs the
lifespan's shutdown (models unloaded), and finally re-raises the signal to the handler that
was there before it; the handlers set here make that a plain return, so the process ends
with status 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

from ..errors import OrtModelsError
from .app import DEFAULT_MAX_QUEUE, create_app
from .shutdown import Shutdown

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 3.0
"""Past the shutdown timeout, how long uvicorn waits before it cancels what the app's own cut
could not end (a response blocked on a client that reads nothing)."""


class _Server(uvicorn.Server):
    """uvicorn's server that tells the app's `Shutdown` when the shutdown's time is up."""

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown, timeout: float) -> None:
        super().__init__(config)
        self._cut, self._timeout = shutdown, timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().call_later(self._timeout, self._cut.cut)
        await super().shutdown(sockets)


def _stay(signum: int, frame: object) -> None:
    logger.info("Signal %d after shutdown: exiting", signum)


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything is built or loaded: a port in use (or a host
    that is not this machine's) is one line at once, not uvicorn's log after the models load."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)  # as uvicorn chooses
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:  # socket.gaierror too: a host name that does not resolve
        sock.close()
        fix = ("stop what listens there, or choose another port" if exc.errno == errno.EADDRINUSE
               else "give an address of this machine (127.0.0.1, 0.0.0.0 for every interface)")
        raise OrtModelsError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}; {fix}.") from None
    return sock


def run(host: str = "127.0.0.1", port: int = 8000, models: Sequence[str] | str | None = None,
        api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE, shutdown_timeout: float = 30.0,
        log_level: str = "info", ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; raises `OrtModelsError` if the server could not start.
    ``ready`` is called once the port is bound (the CLI's banner), so nothing says the server is
    there before it is."""
    sock = listening_socket(host, port)
    previous: dict[signal.Signals, Any] = {}
    try:
        app = create_app(models=models, api_key=api_key, max_queue=max_queue, unload_timeout=shutdown_timeout)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                timeout_graceful_shutdown=shutdown_timeout + CANCEL_GRACE_S, timeout_keep_alive=5)
        server = _Server(config, app.state.server.shutdown, shutdown_timeout)
        previous = {sig: signal.signal(sig, _stay) for sig in (signal.SIGTERM, signal.SIGINT)}
        if ready is not None:
            ready()
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:  # the port was bound: its startup (the app's lifespan) failed
        raise OrtModelsError(f"The server on {host}:{port} did not start; the log above says why.")
