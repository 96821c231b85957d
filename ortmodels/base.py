"""The two base interfaces every ortmodels model implements.

A subclass supplies only the model-specific part (`_load`, `_unload` and the
inference method); the base class gives LangChain's interface, input checks, lazy
loading and the life cycle the `ModelManager` drives.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessageChunk
from langchain_core.outputs import LLMResult
from pydantic import ConfigDict, Field, PrivateAttr

from .monitoring import stats

_loading: ContextVar[Any] = ContextVar("ortmodels_loading_model", default=None)
#: The model whose ``load()`` is running in this context, for `open_variant` to attach to.
_in_call: ContextVar[frozenset[int]] = ContextVar("ortmodels_in_call", default=frozenset())


def loading_model() -> Any:
    """The model whose ``load()`` is running in this thread or task, if any."""
    return _loading.get()


class _LifeCycle:
    """load / unload / is_loaded and the use guard, shared by both bases; thread-safe.

    Each base provides ``_lock`` (an ``RLock``), ``_idle`` (a ``Condition`` on it),
    ``_loaded``, ``_active`` (calls running now), ``_opened``/``_lease`` (what
    `open_variant` attached) and ``_observer`` (the `ModelManager` that caches the model,
    told of loads, unloads and uses so it can apply its memory budget and keep-alive).
    """

    _lock: threading.RLock
    _idle: threading.Condition
    _loaded: bool
    _active: int
    _draining: int
    _opened: Any
    _lease: Any
    _observer: Any
    version: str | None

    def _load(self) -> None:
        """Open whatever the model needs (sessions, tokenizers); called once per load."""

    def _unload(self) -> None:
        """Release what `_load` opened."""

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    @property
    def active_calls(self) -> int:
        """Calls running on this model right now."""
        return self._active

    @property
    def loaded_variant(self) -> str | None:
        """The precision that was opened (``fp32``, ``int4``, ...), once loaded by ortmodels' classes."""
        return self._opened.variant if self._opened is not None else None

    @property
    def loaded_version(self) -> str | None:
        """The export version that was opened, once loaded by ortmodels' classes."""
        return self._opened.info.version if self._opened is not None else None

    def memory_bytes(self) -> int:
        """What the loaded model holds, for the manager's memory budget (the variant's file size).

        A user's subclass that opens no ortmodels export may override this; 0 means unknown.
        """
        return self._opened.size if (self._loaded and self._opened is not None) else 0

    def _attach(self, opened: Any, lease: Any) -> None:
        """Called by `open_variant` during `_load`: what was opened, and the version lease."""
        if self._lease is not None:
            self._lease.release()
        self._opened, self._lease = opened, lease

    def load(self) -> Any:
        """Load the model if it is not loaded yet; returns ``self`` so calls can chain."""
        with self._lock:
            if self._loaded:
                return self
            started = time.perf_counter()
            token = _loading.set(self)
            try:
                self._load()
            except BaseException:
                self._release_variant()
                raise
            finally:
                _loading.reset(token)
            self._loaded = True
            seconds = time.perf_counter() - started
        stats.registry().record_load(self, seconds)
        if self._observer is not None:
            self._observer._model_loaded(self)
        return self

    def unload(self) -> None:
        """Release the model's memory once running calls have finished; a later call loads it again."""
        with self._lock:
            self._draining += 1  # new calls wait, so a busy model cannot put off its unload forever
            try:
                while self._active:
                    self._idle.wait()
                if not self._loaded:
                    return
                self._unload()
                self._loaded = False
                self._release_variant()
            finally:
                self._draining -= 1
                self._idle.notify_all()
        if self._observer is not None:
            self._observer._model_unloaded(self)

    def _release_variant(self) -> None:
        if self._lease is not None:
            self._lease.release()
        self._lease = None
        self._opened = None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    @contextmanager
    def _use(self) -> Iterator[stats.CallRecord | None]:
        """Hold the model loaded for one call, and record the call (once, however nested)."""
        outer = id(self) not in _in_call.get()
        with self._lock:
            while self._draining and outer:  # a nested call must not wait on its own outer call
                self._idle.wait()
            self._ensure_loaded()
            self._active += 1
        token = _in_call.set(_in_call.get() | {id(self)}) if outer else None
        record = stats.CallRecord() if outer else None
        try:
            yield record
        except BaseException:
            if record is not None:
                record.failed = True
            raise
        finally:
            if token is not None:
                try:
                    _in_call.reset(token)
                except ValueError:  # a stream closed from another context (garbage collection)
                    pass
            with self._lock:
                self._active -= 1
                if not self._active:
                    self._idle.notify_all()
            if record is not None:
                record.finish()
                stats.registry().record_call(self, record)
                if self._observer is not None:
                    self._observer._model_used(self)


def _init_life_cycle(model: Any) -> None:
    model._lock = threading.RLock()
    model._idle = threading.Condition(model._lock)
    model._loaded = False
    model._active = 0
    model._draining = 0
    model._opened = None
    model._lease = None
    model._observer = None


class BaseEmbeddingModel(_LifeCycle, Embeddings, ABC):
    """A LangChain `Embeddings` whose subclasses implement `_embed` (plus `_load`/`_unload`)."""

    def __init__(
        self,
        model_name: str | None = None,
        *,
        model_path: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        self.model_name = model_name
        self._model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.dtype = dtype
        self.version: str | None = None
        """Export version to load (``None``: the active one); see ``ortmodels versions``."""
        _init_life_cycle(self)

    @property
    def model_path(self) -> Path | None:
        """The model's folder in the store (its checkpoint and ``onnx/`` exports)."""
        return self._model_path

    @abstractmethod
    def _embed(self, texts: list[str]) -> list[list[float]]:
        """Embed non-empty, already validated texts, in order."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed search documents; ``[]`` gives ``[]``."""
        texts = _check_texts(texts)
        if not texts:
            return []
        with self._use() as record:
            vectors = self._embed(texts)
            if record is not None:
                record.items = len(texts)
            return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed a query text."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query expects a str, got {type(text).__name__}.")
        return self.embed_documents([text])[0]

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"{type(self).__name__}(model_name={self.model_name!r}, {state})"


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed_documents expects a list of str, got a single str; wrap it in a list.")
    try:
        items = list(texts)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"embed_documents expects a list of str, got {type(texts).__name__}."
        ) from None
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"embed_documents expects str items; item {index} is {type(item).__name__}: "
                f"{item!r:.60}"
            )
    return items


class BaseLLMModel(_LifeCycle, BaseChatModel):
    """A LangChain `BaseChatModel` whose subclasses implement `_generate` (plus `_load`/`_unload`)."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    model_name: str | None = None
    """Name of the model in the store (its folder name)."""

    model_path_: Path | None = Field(default=None, alias="model_path")
    """The model's folder in the store."""

    device: str | None = None
    """Execution device (auto, cpu, cuda, coreml); ``None`` takes the `MODEL_DEVICE` setting."""

    dtype: str | None = None
    """Precision to load; ``None`` takes the `MODEL_DTYPE` setting."""

    version: str | None = None
    """Export version to load (``None``: the active one); see ``ortmodels versions``."""

    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _idle: threading.Condition = PrivateAttr()
    _loaded: bool = PrivateAttr(default=False)
    _active: int = PrivateAttr(default=0)
    _draining: int = PrivateAttr(default=0)
    _opened: Any = PrivateAttr(default=None)
    _lease: Any = PrivateAttr(default=None)
    _observer: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._idle = threading.Condition(self._lock)

    # The public entry points hold the model loaded for the call and record it; LangChain's
    # invoke/batch go through generate, stream/astream through their own paths.

    def generate(self, messages: list, stop: list[str] | None = None, callbacks: Any = None,
                 **kwargs: Any) -> LLMResult:
        with self._use() as record:
            result = super().generate(messages, stop=stop, callbacks=callbacks, **kwargs)
            if record is not None:
                record.saw_result(result)
            return result

    async def agenerate(self, messages: list, stop: list[str] | None = None, callbacks: Any = None,
                        **kwargs: Any) -> LLMResult:
        with self._use() as record:
            result = await super().agenerate(messages, stop=stop, callbacks=callbacks, **kwargs)
            if record is not None:
                record.saw_result(result)
            return result

    def stream(self, input: Any, config: Any = None, *, stop: list[str] | None = None,
               **kwargs: Any) -> Iterator[BaseMessageChunk]:
        with self._use() as record:
            for chunk in super().stream(input, config, stop=stop, **kwargs):
                if record is not None:
                    record.saw_chunk(chunk)
                yield chunk

    async def astream(self, input: Any, config: Any = None, *, stop: list[str] | None = None,
                      **kwargs: Any) -> AsyncIterator[BaseMessageChunk]:
        with self._use() as record:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                if record is not None:
                    record.saw_chunk(chunk)
                yield chunk

    @property
    def model_path(self) -> Path | None:
        """The model's folder in the store."""
        return self.model_path_

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "device": self.device, "dtype": self.dtype}
