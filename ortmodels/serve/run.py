"""Serve the app with uvicorn, exiting 0 after a graceful SIGTERM or Ctrl-C.

uvicorn stops accepting connections on SIGTERM, lets running requests finish within
``shutdown_timeout`` seconds (then cancels them), runs the lifespan's shutdown (models
unloaded), and finally re-raises the signal to the handler that was there before it; the
handlers set here make that a plain return, so the process ends with status 0.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

import uvicorn

from ..errors import OrtModelsError
from .app import DEFAULT_MAX_QUEUE, create_app

logger = logging.getLogger(__name__)


def _stay(signum: int, frame: object) -> None:
    logger.info("Signal %d after shutdown: exiting", signum)


def run(host: str = "127.0.0.1", port: int = 8000, models: Sequence[str] | str | None = None,
        api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE, shutdown_timeout: float = 30.0,
        log_level: str = "info") -> None:
    """Serve until SIGTERM/SIGINT; raises `OrtModelsError` if the server could not start."""
    app = create_app(models=models, api_key=api_key, max_queue=max_queue, unload_timeout=shutdown_timeout)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=shutdown_timeout, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    previous = {sig: signal.signal(sig, _stay) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise OrtModelsError(f"The server did not start on {host}:{port} (see the log above: port in use?).")
