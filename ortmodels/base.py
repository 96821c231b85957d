"""The two base interfaces every ortmodels model implements.

A subclass supplies only the model-specific part (`_load`, `_unload` and the
inference method); the base class gives LangChain's interface, input checks, lazy
loading and the life cycle the `ModelManager` drives.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessageChunk
from langchain_core.outputs import LLMResult
from pydantic import ConfigDict, Field, PrivateAttr

from .errors import EmbeddingInputError, ModelBusyError
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
    _last_memory: int
    """What the model held when last loaded: the room to make before loading it again."""
    _opened: Any
    _lease: Any
    _observer: Any
    _holders: dict[int, _Call]
    """The calls admitted now, by id, for `unload`'s report when it times out."""
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
        """Load the model if it is not loaded yet; returns ``self`` so calls can chain.

        The manager is told before (to make room within its memory budget) and after,
        never while this model's lock is held, so two models loading at once cannot wait
        on each other.
        """
        if self._loaded:
            return self
        if self._observer is not None:
            self._observer._model_loading(self)
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
            self._last_memory = self.memory_bytes()
            key = stats.key_of(self)
        stats.registry().record_load(key, self, seconds, self._last_memory)
        if self._observer is not None:
            self._observer._model_loaded(self)
        return self

    def unload(self, timeout: float | None = None) -> None:
        """Release the model's memory once running calls have finished; a later call loads it again.

        New calls wait while an unload waits, so a busy model cannot put it off forever. With
        a ``timeout`` (seconds), an unload that still finds calls running then gives up and
        raises `ModelBusyError` naming them (a stream that was opened and never read, say);
        the model stays loaded and the waiting calls go on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._draining += 1
            try:
                while self._active:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise ModelBusyError(
                            f"Could not unload {getattr(self, 'model_name', None) or type(self).__name__} "
                            f"within {timeout:g} s: {self._active} call(s) still hold it "
                            f"({self._describe_holders()}). Finish or close those calls (a stream "
                            "must be read to its end or closed), or unload with a longer timeout."
                        )
                    self._idle.wait(left)
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

    def _describe_holders(self) -> str:
        now = time.monotonic()
        calls = sorted(self._holders.values(), key=lambda h: h.started)
        return "; ".join(f"{h.what} from thread {h.thread!r}, running {now - h.started:.1f} s" for h in calls) or "?"

    def unload_unless_version(self, version: str | None) -> bool:
        """Unload if the loaded export version is not ``version``; a load in progress is waited for.

        What a rollback uses: the model's lock is held for the whole of a load, so an
        instance that was opening the replaced version when the rollback happened is
        seen here once it has opened it, never skipped.
        """
        with self._lock:
            if not self._loaded or self.loaded_version in (None, version):
                return False
        self.unload()
        return True

    def _unload_if_idle(self, still_wanted: Any = None) -> bool:
        """Unload now if no call is running or waiting and ``still_wanted()`` agrees; never blocks.

        What the manager's budget and keep-alive use: a busy model is skipped, not waited for.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if not self._loaded or self._active or self._draining:
                return False
            if still_wanted is not None and not still_wanted():
                return False
            self._unload()
            self._loaded = False
            self._release_variant()
        finally:
            self._lock.release()
        if self._observer is not None:
            self._observer._model_unloaded(self)
        return True

    def _release_variant(self) -> None:
        if self._lease is not None:
            self._lease.release()
        self._lease = None
        self._opened = None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    # -- the call guard -----------------------------------------------------------------------
    # Every public entry point runs inside it: the model stays loaded for the call (an unload
    # waits), and the call is timed into the stats once, however nested (LangChain's stream
    # falls back to invoke, for instance). Nesting is told by a context variable that holds
    # the model only while the model's own code runs, never while a stream is handed back
    # to the caller.

    def _begin_call(self, nested: bool, what: str) -> _Call:
        """Wait out an unload in progress, load if needed, count the call; blocking."""
        while True:
            with self._lock:
                while self._draining and not nested:  # a nested call must not wait on its outer call
                    self._idle.wait()
                if self._loaded:
                    self._active += 1
                    call = _Call(what)
                    self._holders[id(call)] = call
                    if not nested:
                        call.record = stats.CallRecord()
                        call.record.key = stats.key_of(self)
                    return call
            self.load()  # outside the lock: the manager may unload other models to make room

    async def _abegin_call(self, what: str) -> _Call:
        """`_begin_call` off the event loop, with an undo that a cancelled caller cannot skip.

        The admission runs in a worker thread; if the awaiting task is cancelled meanwhile
        (``asyncio.wait_for`` on a model still loading), the thread still finishes admitting
        the call, so the call is ended as soon as it does, instead of being counted forever.
        """
        loop = asyncio.get_running_loop()
        admitted = loop.run_in_executor(None, self._begin_call, self._nested(), what)
        try:
            return await asyncio.shield(admitted)
        except asyncio.CancelledError:
            def undo(future: asyncio.Future) -> None:
                if not future.cancelled() and future.exception() is None:
                    call = future.result()
                    if call.record is not None:
                        call.record.failed = True
                    loop.run_in_executor(None, self._end_call, call)  # takes the model's lock

            admitted.add_done_callback(undo)
            raise

    async def _aend_call(self, call: _Call) -> None:
        """`_end_call` off the event loop; it runs to the end even if the caller is cancelled."""
        ended = asyncio.get_running_loop().run_in_executor(None, self._end_call, call)
        await asyncio.shield(ended)

    def _end_call(self, call: _Call) -> None:
        with self._lock:
            if self._holders.pop(id(call), None) is None:
                return  # already ended: an undo can never count a call twice
            self._active -= 1
            if not self._active:
                self._idle.notify_all()
        record = call.record
        if record is not None:
            record.finish()
            stats.registry().record_call(record.key, self, record)
            if self._observer is not None:
                self._observer._model_used(self)

    def _nested(self) -> bool:
        return id(self) in _in_call.get()

    @contextmanager
    def _marked(self) -> Iterator[None]:
        token = _in_call.set(_in_call.get() | {id(self)})
        try:
            yield
        finally:
            _in_call.reset(token)

    @contextmanager
    def _use(self, what: str = "call") -> Iterator[stats.CallRecord | None]:
        """The call guard for a call that does not hand control back before it returns."""
        call = self._begin_call(self._nested(), what)
        try:
            with self._marked():
                yield call.record
        except BaseException:
            if call.record is not None:
                call.record.failed = True
            raise
        finally:
            self._end_call(call)

    @asynccontextmanager
    async def _ause(self, what: str = "async call") -> AsyncIterator[stats.CallRecord | None]:
        """The call guard for coroutines: waiting and loading run off the event loop."""
        call = await self._abegin_call(what)
        try:
            with self._marked():
                yield call.record
        except BaseException:
            if call.record is not None:
                call.record.failed = True
            raise
        finally:
            await self._aend_call(call)

    def _guarded_iter(self, iterator: Iterator[Any]) -> Iterator[Any]:
        """Run a stream under the guard; the model is marked only while producing a chunk."""
        call = self._begin_call(self._nested(), "stream")
        record = call.record
        try:
            while True:
                with self._marked():
                    chunk = next(iterator, _DONE)
                if chunk is _DONE:
                    return
                if record is not None:
                    record.saw_chunk(chunk)
                yield chunk
        except BaseException:
            if record is not None:
                record.failed = not isinstance(sys.exc_info()[1], GeneratorExit)
            raise
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a caller that stopped early: let the model's stream clean up now
                with self._marked():
                    close()
            self._end_call(call)

    async def _aguarded_iter(self, iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        call = await self._abegin_call("async stream")
        record = call.record
        try:
            while True:
                with self._marked():
                    chunk = await anext(iterator, _DONE)
                if chunk is _DONE:
                    return
                if record is not None:
                    record.saw_chunk(chunk)
                yield chunk
        except BaseException:
            if record is not None:
                record.failed = not isinstance(sys.exc_info()[1], GeneratorExit)
            raise
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with self._marked():
                    await aclose()
            await self._aend_call(call)


class _Call:
    """One admitted call: what it is and who made it, so a timed-out unload can name it."""

    __slots__ = ("record", "started", "thread", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.thread = threading.current_thread().name
        self.started = time.monotonic()
        self.record: stats.CallRecord | None = None


_DONE = object()


def _init_life_cycle(model: Any) -> None:
    model._lock = threading.RLock()
    model._idle = threading.Condition(model._lock)
    model._loaded = False
    model._active = 0
    model._draining = 0
    model._last_memory = 0
    model._opened = None
    model._lease = None
    model._observer = None
    model._holders = {}


class BaseEmbeddingModel(_LifeCycle, Embeddings, ABC):
    """A LangChain `Embeddings` whose subclasses implement `_embed` (plus `_load`/`_unload`)."""

    kind: ClassVar[str] = "embedding"

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
        with self._use("embed_documents") as record:
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
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EmbeddingInputError(
                f"Text {index} is not valid Unicode: {exc.object[exc.start:exc.end]!r} at character "
                f"{exc.start} is a lone surrogate. Decode the input with errors='replace' first."
            ) from None
    return items


class BaseLLMModel(_LifeCycle, BaseChatModel):
    """A LangChain `BaseChatModel` whose subclasses implement `_generate` (plus `_load`/`_unload`)."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    kind: ClassVar[str] = "chat"

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
    _last_memory: int = PrivateAttr(default=0)
    _opened: Any = PrivateAttr(default=None)
    _lease: Any = PrivateAttr(default=None)
    _observer: Any = PrivateAttr(default=None)
    _holders: dict = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._idle = threading.Condition(self._lock)

    # The public entry points hold the model loaded for the call and record it; LangChain's
    # invoke/batch go through generate, stream/astream through their own paths.

    def generate(self, messages: list, stop: list[str] | None = None, callbacks: Any = None,
                 **kwargs: Any) -> LLMResult:
        with self._use("invoke") as record:
            result = super().generate(messages, stop=stop, callbacks=callbacks, **kwargs)
            if record is not None:
                record.saw_result(result)
            return result

    async def agenerate(self, messages: list, stop: list[str] | None = None, callbacks: Any = None,
                        **kwargs: Any) -> LLMResult:
        async with self._ause("ainvoke") as record:
            result = await super().agenerate(messages, stop=stop, callbacks=callbacks, **kwargs)
            if record is not None:
                record.saw_result(result)
            return result

    def stream(self, input: Any, config: Any = None, *, stop: list[str] | None = None,
               **kwargs: Any) -> Iterator[BaseMessageChunk]:
        return self._guarded_iter(super().stream(input, config, stop=stop, **kwargs))

    def astream(self, input: Any, config: Any = None, *, stop: list[str] | None = None,
                **kwargs: Any) -> AsyncIterator[BaseMessageChunk]:
        return self._aguarded_iter(super().astream(input, config, stop=stop, **kwargs))

    @property
    def model_path(self) -> Path | None:
        """The model's folder in the store."""
        return self.model_path_

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "device": self.device, "dtype": self.dtype}
