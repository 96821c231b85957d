"""Model ids as the API spells them: a store name, optionally with a precision tag (``name:int8``).

The server answers an id it does not know with a 404 that lists the ids it does know (of
the kind the endpoint serves), before the manager is asked for anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from ..errors import OrtModelsError, with_article
from ..manager import ModelManager
from ..store import ModelInfo
from ..store.catalog import failed_variant_message
from ..store.names import split_tag
from .errors import ApiError
from .protocols import ChatModel, EmbeddingModel, RerankModel, as_chat_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelId:
    """One id the server answers to: a model's name, or its name and an exported precision."""

    id: str
    name: str
    kind: str
    dtype: str | None
    exported: bool


def model_ids(infos: list[ModelInfo]) -> list[ModelId]:
    """Every id of every model: ``name`` then ``name:dtype`` for each variant that can be loaded."""
    ids = []
    for info in infos:
        variants = sorted(info.usable_variants)
        ids.append(ModelId(info.name, info.name, str(info.kind), None, bool(variants)))
        ids.extend(ModelId(f"{info.name}:{v}", info.name, str(info.kind), v, True) for v in variants)
    return ids


class Catalog:
    """The store's models as ids, and the model objects this server has handed out."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.used: dict[str, object] = {}
        """Id → the model object served under it (read by /metrics for engine gauges)."""
        self._ids: list[ModelId] = []
        self._failed: dict[tuple[str, str], str] = {}  # (name, precision) that failed its gates -> why
        self._read_at = 0.0

    def ids(self, refresh: bool = False) -> list[ModelId]:
        """The ids of the store's models, re-read at most once a second (a new export shows up);
        ``refresh`` (an id not found) re-reads sooner, but never more than four times a second,
        so clients sending unknown ids cannot keep the event loop reading the disk."""
        age = time.monotonic() - self._read_at
        if age > 1.0 or (refresh and age > 0.25):
            infos = self.manager.list_available_models()
            self._ids = model_ids(infos)
            self._failed = {(info.name, dtype): failed_variant_message(info, dtype)
                            for info in infos for dtype in info.failed_variants()}
            self._read_at = time.monotonic()
        return self._ids

    def loaded_ids(self) -> set[str]:
        """The ids whose model is loaded now: a tagged id if its precision is, a plain name if
        any precision of it is (the one it is served as), however it came to be loaded."""
        held = {(row.name, row.kind, row.variant) for row in self.manager.loaded()}
        return {m.id for m in self.ids() if (m.name, m.kind, m.dtype) in held
                or (m.dtype is None and any(h[:2] == (m.name, m.kind) for h in held))}

    def resolve(self, model: str | None, kind: str) -> ModelId:
        """The id ``model`` names, of ``kind``; otherwise a 404 listing the known ids of that kind."""
        for refresh in (False, True):
            found = self._match(model, kind, refresh)
            if found is not None:
                return found
        known = [m.id for m in self.ids() if m.kind == kind and m.exported]
        other = self._match(model, None, False)  # there, but of another kind: say which
        if not model:
            what = "No model given"
        elif other is not None:
            what = f"The model {model!r} is {with_article(other.kind)} model, not {with_article(kind)} model"
        elif (failed := self._failed_message(model)) is not None:  # there, but not loadable: the store's words
            raise ApiError(404, failed, param="model", code="model_not_found")
        else:
            what = f"The model {model!r:.80} does not exist"
        raise ApiError(404, f"{what}; {kind} models here: {', '.join(known) or 'none'}.",
                       param="model", code="model_not_found")

    def _failed_message(self, model: str) -> str | None:
        """Why ``model`` (``name:dtype``) is not served when its precision failed its quality gates."""
        try:
            name, dtype = split_tag(model)
        except OrtModelsError:
            return None
        return self._failed.get((name, dtype)) if dtype is not None else None

    def _match(self, model: str | None, kind: str | None, refresh: bool) -> ModelId | None:
        if not isinstance(model, str) or not model:
            return None
        try:
            name, dtype = split_tag(model)
        except OrtModelsError:  # a bad name or precision names no model here
            return None
        for entry in self.ids(refresh):
            if entry.name == name and entry.dtype == dtype and kind in (None, entry.kind) and entry.exported:
                return entry
        return None

    async def chat(self, entry: ModelId) -> ChatModel:
        """The chat model for ``entry``, as the routes call it."""
        return as_chat_model(await self.get(entry))

    async def embedding(self, entry: ModelId) -> EmbeddingModel:
        """The embedding model for ``entry`` (`OnnxEmbeddingModel`, a user's `BaseEmbeddingModel`,
        Ray's stand-in: each has ``aembed_counted``)."""
        return cast(EmbeddingModel, await self.get(entry))

    async def reranker(self, entry: ModelId) -> RerankModel:
        """The reranker for ``entry`` (`RerankRuntime`, a user's `BaseRerankModel`, Ray's
        stand-in: each has ``arerank_counted``)."""
        return cast(RerankModel, await self.get(entry))

    async def get(self, entry: ModelId) -> Any:
        """The loaded model for ``entry`` (loading it off the event loop if needed): ortmodels'
        LangChain-free runtime, or a user's registered class."""
        model = await asyncio.to_thread(self.manager.get_runtime, entry.kind, entry.name, dtype=entry.dtype)
        self.used[entry.id] = model
        return model

    def check(self, names: list[str]) -> list[ModelId]:
        """The ids ``names`` stand for; an `OrtModelsError` naming the known ones if one is not here."""
        found = []
        for name in names:
            entry = self._match(name, None, True)
            if entry is None and (failed := self._failed_message(name)) is not None:
                raise OrtModelsError(f"Cannot serve {name!r}: {failed}")
            if entry is None:
                known = ", ".join(m.id for m in self.ids() if m.exported)
                raise OrtModelsError(f"Cannot serve {name!r}: not an exported model in "
                                     f"{self.manager.settings.local_models_dir}. Known: {known or 'none'}.")
            found.append(entry)
        return found

    def load(self, names: list[str]) -> None:
        """Load ``names`` (ids, tags allowed) now; blocking, for the server's start."""
        for found in self.check(names):
            self.used[found.id] = self.manager.get_runtime(found.kind, found.name, dtype=found.dtype)
            logger.info("Serving %s (%s)", found.id, found.kind)

    def defaults(self) -> list[str]:
        """The default chat, embedding and rerank models, those of them that are exported here."""
        settings = self.manager.settings
        exported = {m.id for m in self.ids(True) if m.exported}
        defaults = (settings.default_chat_model, settings.default_embedding_model, settings.default_rerank_model)
        return [n for n in defaults if n in exported]
