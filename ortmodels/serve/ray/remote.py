"""The ingress's side: models that live in Ray Serve deployments, seen as local models.

The routes (`ortmodels.serve.routes`) ask their `Catalog` for a model and call its
``achat_events``, ``atext_events``, (embeddings) ``aembed_counted`` or (rerankers)
``arerank_counted``. `RayCatalog`
answers with a `RemoteModel` that forwards each call to the model's deployment through its
handle: a stream is a `DeploymentResponseGenerator` of the chat service's events (frozen
dataclasses, `ortmodels.runtime.events`), closed (and so cancelled on the replica, with its
engine request) when the route closes it. The store is still
read here, for the ids and the 404 that lists them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    RayTaskError,
)
from ray.serve.handle import DeploymentHandle

from ...errors import ReplicaUnavailableError
from ...manager import ModelManager
from ...runtime.events import ChatEvent
from ...runtime.options import ChatOptions
from ...runtime.tokens import Tokens
from ..errors import ApiError
from ..models import Catalog, ModelId

logger = logging.getLogger(__name__)

_GONE = (RayActorError, ActorDiedError, ActorUnavailableError)


def _unwrap(exc: BaseException) -> BaseException:
    """The error the replica raised (Ray wraps it with the replica's traceback in its text),
    or `ReplicaUnavailableError` for a replica that died under the call."""
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    if isinstance(exc, _GONE):
        logger.warning("A model replica failed under a request: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return ReplicaUnavailableError(
            "The replica holding the model stopped while answering; Ray Serve restarts it. Retry the request.")
    return exc


class RemoteModel:
    """A model served by a Ray Serve deployment, with the methods the routes call."""

    def __init__(self, handle: DeploymentHandle, entry: ModelId, dimension: int | None) -> None:
        self._handle, self._entry = handle, entry
        self.dimension = dimension
        """Length of an embedding (from the store's manifest, so no remote call is needed)."""

    async def _stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        stream = getattr(self._handle.options(stream=True), method).remote(self._entry.id, *args, **kwargs)
        try:
            async for chunk in stream:
                yield chunk
        except BaseException as exc:
            unwrapped = _unwrap(exc)
            if unwrapped is exc:
                raise
            raise unwrapped from None
        finally:
            stream.cancel()  # a client that left: the replica's generator is closed, its request cancelled

    def achat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> AsyncIterator[ChatEvent]:
        return self._stream("achat_events", messages, options)

    def atext_events(self, prompt: str, options: ChatOptions) -> AsyncIterator[ChatEvent]:
        return self._stream("atext_events", prompt, options)

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self._handle, method).remote(self._entry.id, *args)
        except BaseException as exc:
            unwrapped = _unwrap(exc)
            if unwrapped is exc:
                raise
            raise unwrapped from None

    async def aembed_counted(self, texts: list[str],
                             options: dict[str, Any] | None = None) -> tuple[list[list[float]], int]:
        return await self._call("aembed_counted", texts, options)  # type: ignore[no-any-return]

    async def arerank_counted(self, query: str, documents: list[str],
                              top_n: int | None) -> tuple[list[tuple[int, float]], int]:
        return await self._call("arerank_counted", query, documents, top_n)  # type: ignore[no-any-return]

    async def atokenize(self, text: str, add_special: bool = False, with_pieces: bool = False) -> Tokens:
        return await self._call("atokenize", text, add_special, with_pieces)  # type: ignore[no-any-return]

    async def achat_tokens(self, messages: list[dict[str, Any]], options: ChatOptions | None = None,
                           with_pieces: bool = False) -> Tokens:
        return await self._call("achat_tokens", messages, options, with_pieces)  # type: ignore[no-any-return]

    async def adetokenize(self, ids: list[int]) -> str:
        return await self._call("adetokenize", ids)  # type: ignore[no-any-return]


class RayCatalog(Catalog):
    """The store's ids, answered by the model deployments in ``handles`` (id → handle)."""

    def __init__(self, manager: ModelManager, handles: Mapping[str, DeploymentHandle]) -> None:
        super().__init__(manager)
        self.handles = dict(handles)
        self._dimensions: dict[str, int | None] = {}  # read from the manifest once, not per request

    async def get(self, entry: ModelId) -> object:
        handle = self.handles.get(entry.id)
        if handle is None:
            raise ApiError(404, f"The model {entry.id!r} is exported but not deployed on this Ray Serve app; "
                           f"deployed: {', '.join(sorted(self.handles)) or 'none'} (start it with --models).",
                           param="model", code="model_not_found")
        dimension = None
        if entry.kind == "embedding":
            if entry.name not in self._dimensions:
                self._dimensions[entry.name] = self.manager.get_model_info(entry.name).embedding_size
            dimension = self._dimensions[entry.name]
        return RemoteModel(handle, entry, dimension)

    def load(self, names: list[str]) -> None:
        """Blocks (in the lifespan's thread) until a replica of each model answers, so ``/health``
        says 503 until then: a replica is only routed to once its model has loaded."""
        for name in names:
            handle = self.handles.get(name)
            if handle is None:
                raise ApiError(500, f"No deployment for {name}.", type="server_error")
            handle.ready.remote().result()
            logger.info("Serving %s (Ray Serve deployment)", name)
