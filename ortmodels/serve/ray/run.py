"""``ortmodels serve --ray``: start or join a Ray cluster, run the app, stop it on SIGTERM/Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence

import ray
from ray import serve

from ...errors import OrtModelsError
from ..app import DEFAULT_MAX_QUEUE
from .deployments import APP_NAME, build_app

logger = logging.getLogger(__name__)


def run(host: str = "127.0.0.1", port: int = 8000, models: Sequence[str] | str | None = None,
        replicas: int | None = 1, autoscale: str | None = None, threads: int | None = None,
        api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE, cpus: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT. With ``RAY_ADDRESS`` set, joins that cluster and, at the end,
    deletes only this app; otherwise starts a local cluster (``cpus``: its CPUs) and shuts it down."""
    address = os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    logger.info("Ray cluster at %s", ray.get_runtime_context().gcs_address)
    signals: list[int] = []  # a plain list: an Event set from a handler can deadlock with its own wait
    previous = {sig: signal.signal(sig, lambda signum, _: signals.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": host, "port": port})
        app = build_app(models=models, replicas=replicas if autoscale is None else None, autoscale=autoscale,
                        threads=threads, api_key=api_key, max_queue=max_queue)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except Exception as exc:  # noqa: BLE001 - Serve's message (a replica that failed to start) is the reason
            raise OrtModelsError(f"The Ray Serve app did not start: {exc}") from None
        logger.info("Serving on http://%s:%d (Ray Serve; SIGTERM or Ctrl-C stops)", host, port)
        while not signals:
            time.sleep(0.2)
        logger.info("Signal %d: stopping the Ray Serve app", signals[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            if address:
                serve.delete(APP_NAME)
            else:
                serve.shutdown()
        finally:
            ray.shutdown()
