"""``/metrics``: the manager's Prometheus figures plus the server's own gauges.

``ortmodels_server_requests_in_flight`` is what ``--max-queue`` bounds (admitted requests,
waiting or running); ``ortmodels_engine_running_requests`` is each chat engine's decode
batch, so a client that left mid-stream shows as its row freed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServerState


def _gauge(name: str, help_text: str, samples: list[tuple[str, float]], kind: str = "gauge") -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _engine(model: Any) -> Any:
    """A loaded chat model's engine; ``None`` for embeddings, a user's class or an unloaded model."""
    if not getattr(model, "is_loaded", False):
        return None
    try:
        return model.loaded.engine
    except Exception:  # noqa: BLE001 - unloaded meanwhile, or a class without an engine
        return None


def metrics_text(state: ServerState) -> str:
    queue = state.queue
    running, waiting = [], []
    for model_id, model in sorted(state.catalog.used.copy().items()):  # copy: the loop may add one
        engine = _engine(model)
        if engine is not None:
            escaped = model_id.replace("\\", "\\\\").replace('"', '\\"')
            label = f'{{model="{escaped}"}}'
            running.append((label, len(engine.active)))
            waiting.append((label, engine.waiting))
    parts = [
        state.catalog.manager.prometheus_text().rstrip("\n") + "\n",
        _gauge("ortmodels_server_requests_in_flight", "Requests admitted by the server, waiting or running",
               [("", queue.in_flight)]),
        _gauge("ortmodels_server_max_queue", "Requests the server admits at once (--max-queue)", [("", queue.limit)]),
        _gauge("ortmodels_server_rejected_total", "Requests answered 503 because the queue was full",
               [("", queue.rejected)], "counter"),
        _gauge("ortmodels_engine_running_requests", "Requests in a chat engine's decode batch", running),
        _gauge("ortmodels_engine_waiting_requests", "Requests waiting for a chat engine's batch", waiting),
    ]
    return "".join(parts)
