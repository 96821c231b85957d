"""The ASGI app: its lifespan owns the process's `ModelManager`.

Models load in a worker thread after the server starts listening, so ``/health`` can say
503 while they load (uvicorn only listens once the lifespan's startup is done); requests
for models wait on the same load. At shutdown (uvicorn has already let running requests
finish, within its graceful timeout) every model is unloaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..config import check_api_key
from ..manager import ModelManager
from . import anthropic, errors
from .admission import AdmissionQueue
from .models import Catalog
from .response_store import ResponseStore
from .routes import router
from .state import ServerState

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 64
DEFAULT_UNLOAD_TIMEOUT_S = 30.0


async def _preload(state: ServerState) -> None:
    try:
        await asyncio.to_thread(state.catalog.load, state.preload)
    except Exception as exc:  # noqa: BLE001 - reported by /health and the log; the server stays up
        logger.error("Could not load %s: %s", ", ".join(state.preload), exc)
        state.status, state.error = "error", str(exc)
        return
    state.status = "ok"
    logger.info("Ready: %s", ", ".join(state.preload) or "no models preloaded")


def create_app(models: Sequence[str] | str | None = None, api_key: str | None = None,
               max_queue: int = DEFAULT_MAX_QUEUE, unload_timeout: float = DEFAULT_UNLOAD_TIMEOUT_S,
               catalog: Catalog | None = None) -> FastAPI:
    """The OpenAI-compatible app; for your own ASGI server: ``uvicorn --factory ortmodels.serve:create_app``.

    ``models``: ids to load at start (``name`` or ``name:int8``; a comma-separated string is
    split; default: ``DEFAULT_CHAT_MODEL`` and ``DEFAULT_EMBEDDING_MODEL`` where exported).
    Other exported models load on their first request. ``api_key``: every ``/v1`` route then
    needs ``Authorization: Bearer <key>`` (an empty key, or one with spaces, raises
    `ConfigurationError`: it would leave the server open, or match no request). ``max_queue``:
    requests waiting or running at once, past which the server answers 503 with
    ``Retry-After``. ``catalog``: where the routes get their models (default: this process's
    `ModelManager`; `ortmodels.serve.ray` passes one whose models are Ray Serve deployments).
    """
    catalog = catalog or Catalog(ModelManager())
    manager = catalog.manager
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    preload = list(models) if models else catalog.defaults()
    catalog.check(preload)
    state = ServerState(catalog, AdmissionQueue(max_queue), check_api_key(api_key), preload,
                        responses=ResponseStore(manager.settings.model_responses_store,
                                                manager.settings.model_responses_store_bytes))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(_preload(state))
        state.tasks.add(loading)
        try:
            yield
        finally:
            await asyncio.gather(loading, return_exceptions=True)
            logger.info("Unloading models")
            try:
                await asyncio.to_thread(manager.unload_all, unload_timeout)
            except Exception as exc:  # noqa: BLE001 - a model still busy: the process is ending anyway
                logger.warning("Unload at shutdown: %s", exc)

    app = FastAPI(title="ortmodels", summary="OpenAI-compatible server for local ONNX models",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    errors.install(app, {"/v1/messages": anthropic.error_response})
    app.include_router(router)
    return app
