"""`ServerState`: what the routes share, in a module of its own so that the app, the routes
and ``/metrics`` each import it and not one another."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .admission import AdmissionQueue
from .models import Catalog
from .response_store import ResponseStore
from .shutdown import Shutdown


@dataclass
class ServerState:
    """What the routes share: the models, the admission queue, the key and the load status."""

    catalog: Catalog
    queue: AdmissionQueue
    api_key: str | None
    preload: list[str]
    status: str = "loading"
    """``loading``, ``ok`` or ``error`` (a model listed to serve failed to load)."""
    error: str | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)
    shutdown: Shutdown = field(default_factory=Shutdown)
    """Cut by `run` when the graceful shutdown's time is up: running answers end with an error."""
    responses: ResponseStore = field(default_factory=ResponseStore)
    """``/v1/responses``' kept responses (``previous_response_id``, ``GET /v1/responses/{id}``)."""
