"""``/metrics``: the manager's Prometheus figures plus the server's and each chat engine's.

``ortmodels_server_requests_in_flight`` is what ``--max-queue`` bounds (admitted requests,
waiting or running); ``ortmodels_engine_running_requests`` is each chat engine's decode
batch, so a client that left mid-stream shows as its row freed. Every family is rendered by
prometheus-client (`ortmodels.monitoring.prometheus`); the figures are the queue's and what
each model reports (`protocols.ReportsGauges`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engine import EngineGauges
from ..monitoring.prometheus import FiguresCollector, exposition
from .protocols import ReportsGauges
from .state import ServerState


def _figure(help_text: str, counter: bool = False) -> Any:
    return field(metadata={"help": help_text, "counter": counter})


@dataclass(frozen=True)
class ServerFigures:
    """The admission queue's figures (``ortmodels_server_<field>``)."""

    requests_in_flight: int = _figure("Requests admitted by the server, waiting or running")
    max_queue: int = _figure("Requests the server admits at once (--max-queue)")
    rejected: int = _figure("Requests answered 503 because the queue was full", counter=True)


def _engines(state: ServerState) -> Iterator[tuple[dict[str, str], EngineGauges]]:
    for model_id, model in sorted(state.catalog.used.copy().items()):  # copy: a request may add one
        if isinstance(model, ReportsGauges) and (gauges := model.engine_gauges()) is not None:
            yield {"model": model_id}, gauges


def metrics_text(state: ServerState) -> str:
    queue = state.queue
    server = FiguresCollector(
        "ortmodels_server", [],
        lambda: [({}, ServerFigures(queue.in_flight, queue.limit, queue.rejected))], ServerFigures)
    engines = FiguresCollector("ortmodels_engine", ["model"], lambda: _engines(state), EngineGauges)
    return exposition(state.catalog.manager.loaded, extra=[server, engines])
