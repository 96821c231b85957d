"""One life-cycle object per model (`LifeCycle`), and what a model class says to it (`Managed`).

A model holds its `LifeCycle` by composition: the fields live once, in that object; the
model class only forwards to it. Two faces of one model (ortmodels' LangChain adapter over
its LangChain-free runtime) share one `LifeCycle`, so they load, unload and count calls as one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Any

from ..inputs import check_texts
from .admission import CallAdmission
from .loading import LoadState

if TYPE_CHECKING:
    from .listener import ModelListener


class LifeCycle(LoadState, CallAdmission):
    """A model's load state, version lease, listener and call guard; thread-safe."""


class Managed:
    """The life-cycle side of a model class: each method forwards to its ``_life`` (a
    `LifeCycle` whose owner supplies ``_load``/``_unload``)."""

    if TYPE_CHECKING:
        _life: LifeCycle
        model_name: str | None

    def _load(self) -> None:
        """Open whatever the model needs (sessions, tokenizers); called once per load."""

    def _unload(self) -> None:
        """Release what `_load` opened."""

    @property
    def life_cycle(self) -> LifeCycle:
        """This model's life cycle (shared by ortmodels' adapter and its runtime)."""
        return self._life

    def load(self) -> Any:
        """Load the model if it is not loaded yet; returns ``self`` so calls can chain.

        The manager is told before (to make room within its memory budget) and after,
        never while this model's lock is held, so two models loading at once cannot wait
        on each other.
        """
        self._life.load()
        return self

    def unload(self, timeout: float | None = None) -> None:
        """Release the model's memory once running calls have finished; a later call loads it again.

        New calls wait while an unload waits, so a busy model cannot put it off forever. With
        a ``timeout`` (seconds), an unload that still finds calls running then gives up and
        raises `ModelBusyError` naming them; the model stays loaded and the waiting calls go on.
        """
        self._life.unload(timeout)

    def unload_if_idle(self, still_wanted: Any = None) -> bool:
        """Unload now if no call is running or waiting and ``still_wanted()`` agrees; never blocks."""
        return self._life.unload_if_idle(still_wanted)

    def hold_unless_version(self, version: str, deadline: float | None, timeout: float | None) -> bool:
        """What a rollback takes before it switches the ``onnx`` link (see `LoadState`)."""
        return self._life.hold_unless_version(version, deadline, timeout)

    def release_hold(self, unload_unless: str | None) -> None:
        self._life.release_hold(unload_unless)

    def set_listener(self, listener: ModelListener | None) -> None:
        """Who is told of this model's loads, unloads and calls (the manager that caches it)."""
        self._life.set_listener(listener)

    def attach_variant(self, opened: Any, lease: Any) -> None:
        """Called by `open_variant` during `_load`: what was opened, and the version lease."""
        self._life.attach_variant(opened, lease)

    def memory_bytes(self) -> int:
        """What the loaded model holds, for the manager's memory budget (the variant's file size).

        A user's subclass that opens no ortmodels export may override this; 0 means unknown.
        """
        return self._life.variant_bytes()

    @property
    def is_loaded(self) -> bool:
        return self._life.is_loaded

    @property
    def active_calls(self) -> int:
        """Calls running on this model right now."""
        return self._life.active_calls

    @property
    def _draining(self) -> bool:
        return self._life.draining

    @property
    def last_memory_bytes(self) -> int:
        """What the model held when last loaded: the room to make before loading it again."""
        return self._life.last_memory_bytes

    @property
    def loaded_variant(self) -> str | None:
        """The precision that was opened (``fp32``, ``int4``, ...), once loaded by ortmodels' classes."""
        return self._life.loaded_variant

    @property
    def loaded_version(self) -> str | None:
        """The export version that was opened, once loaded by ortmodels' classes."""
        return self._life.loaded_version

    @property
    def loaded_device(self) -> str | None:
        """The device the opened variant runs on, once loaded by ortmodels' classes."""
        return self._life.loaded_device

    def _ensure_loaded(self) -> None:
        self._life.ensure_loaded()

    def _use(self, what: str = "call") -> AbstractContextManager[Any]:
        """The call guard for a call that does not hand control back before it returns."""
        return self._life.use(what)

    def _ause(self, what: str = "async call") -> AbstractAsyncContextManager[Any]:
        """The call guard for coroutines: waiting and loading run off the event loop."""
        return self._life.ause(what)

    def _guarded_iter(self, iterator: Iterator[Any]) -> Iterator[Any]:
        """A stream under the guard; the model is marked only while producing a chunk."""
        return self._life.guarded_iter(iterator)

    def _aguarded_iter(self, iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return self._life.aguarded_iter(iterator)


#: Texts one `_embed_as` call embeds at most: a long list runs in slices, so callers who come
#: later share batches between them (`CoalescingBatcher`) rather than wait for all of it.
EMBED_SLICE = 256


class ManagedEmbedding(Managed):
    """The guarded calls of an embedding class (ortmodels' LangChain base and its LangChain-free
    runtime alike), on the class's ``_embed_as``."""

    def _embed_as(self, texts: list[str], input_type: str | None, prompt_name: str | None,
                  dimensions: int | None, matryoshka: bool) -> tuple[list[list[float]], int]:
        """Embed non-empty, checked texts for a role, prompt or size, with the tokens read."""
        raise NotImplementedError

    def embed_counted(self, texts: list[str], *, input_type: str | None = None, prompt_name: str | None = None,
                      dimensions: int | None = None, matryoshka: bool = False,
                      stop: threading.Event | None = None) -> tuple[list[list[float]], int]:
        """`_embed_as` under the call guard, texts checked first: the vectors and the tokens the
        model read for them (the server's ``usage``); ``[]`` gives ``([], 0)``. Many texts run
        `EMBED_SLICE` at a time, so other callers' batches run between the slices, and a set
        ``stop`` (the caller gave up) ends the call at the next slice, counted as cancelled."""
        texts = check_texts(texts)
        if not texts:
            return [], 0
        with self._use("embed_documents") as record:
            vectors: list[list[float]] = []
            tokens = 0
            for start in range(0, len(texts), EMBED_SLICE):
                if stop is not None and stop.is_set():
                    raise asyncio.CancelledError(f"embedding stopped after {start} of {len(texts)} texts")
                part, read = self._embed_as(texts[start:start + EMBED_SLICE], input_type, prompt_name,
                                            dimensions, matryoshka)
                vectors.extend(part)
                tokens += read
            if record is not None:
                record.items = len(texts)
            return vectors, tokens

    async def aembed_counted(self, texts: list[str],
                             options: dict[str, Any] | None = None) -> tuple[list[list[float]], int]:
        """`embed_counted` off the event loop; ``options``: its keywords (the server's request
        fields). A caller that stops waiting (a client gone) stops the work at its next slice."""
        stop = threading.Event()
        try:
            return await asyncio.to_thread(partial(self.embed_counted, texts, stop=stop, **(options or {})))
        finally:
            stop.set()

