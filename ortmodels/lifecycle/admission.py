"""Call admission: every public entry point runs inside this guard.

The model stays loaded for the call (an unload waits), the call is timed into the stats
once however nested, and its undo cannot be skipped, not even by a cancelled task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .listener import recorder
from .state import LifeCycleState

_in_call: ContextVar[frozenset[int]] = ContextVar("ortmodels_in_call", default=frozenset())
_admissions = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="ortmodels-admission")
#: Where async calls wait for their admission (a load, an unload): ours, so a loop that ends
#: (and shuts its executor down) cannot strand an admission that finishes after it. Its threads
#: mostly wait, and are started only when needed: enough that calls waiting for one model's
#: load do not queue the admissions of other models behind them.


class CallAdmission(LifeCycleState):
    """The call guard every public entry point runs in (see the comment below); thread-safe."""

    if TYPE_CHECKING:
        def load(self) -> Any: ...  # from LoadState

    # -- the call guard -----------------------------------------------------------------------
    # Every public entry point runs inside it: the model stays loaded for the call (an unload
    # waits), and the call is timed into the stats once, however nested (LangChain's stream
    # falls back to invoke, for instance). Nesting is told by a context variable that holds
    # the model only while the model's own code runs, never while a stream is handed back
    # to the caller.

    def _begin_call(self, nested: bool, what: str) -> _Call:
        """Wait out an unload in progress, load if needed, count the call; blocking.

        While it loads for a call, the model counts as wanted (``_pending``), so a keep-alive
        of 0 or a tight budget cannot unload it between the load and the call's admission
        (which, under load, could repeat without end).
        """
        pending = False
        try:
            while True:
                with self._lock:
                    while self._draining and not nested:  # a nested call must not wait on its outer call
                        self._idle.wait()
                    if self._loaded:
                        if pending:
                            self._pending -= 1
                            pending = False
                        self._active += 1
                        call = _Call(what, outer=not nested)
                        self._holders[id(call)] = call
                        if call.outer and (calls := recorder()) is not None:
                            call.record = calls.start_call(self.owner)
                        return call
                    if not pending:
                        self._pending += 1
                        pending = True
                self.load()  # outside the lock: the manager may unload other models to make room
        except BaseException:
            if pending:
                with self._lock:
                    self._pending -= 1
            raise

    async def _abegin_call(self, what: str) -> _Call:
        """`_begin_call` off the event loop, with an undo that a cancelled caller cannot skip.

        The admission runs in a worker thread of this module's own pool, not the loop's: if the
        awaiting task is cancelled meanwhile (``asyncio.wait_for`` on a model still loading),
        the thread still finishes admitting the call, and the undo then ends it in that thread,
        even when the loop has shut down its executor or closed (``asyncio.run`` returning).
        """
        admitted = _admissions.submit(self._begin_call, self._nested(), what)
        waiting = asyncio.wrap_future(admitted)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.cancel()  # not started yet: never admitted; its result is then never sent to the loop

            def undo(future: concurrent.futures.Future) -> None:
                if not future.cancelled() and future.exception() is None:
                    call = future.result()
                    if call.record is not None:
                        call.record.cancelled = True
                    self._end_call(call)  # in the admitting thread; never blocks for long (see `_end_call`)

            admitted.add_done_callback(undo)
            raise

    async def _aend_call(self, call: _Call) -> None:
        """`_end_call` off the event loop; it runs to the end even if the caller is cancelled."""
        ended = asyncio.get_running_loop().run_in_executor(None, self._end_call, call)
        await asyncio.shield(ended)

    def _end_call(self, call: _Call) -> None:
        """Uncount the call and record it; short waits only (nothing holds the model's lock for
        long while a call is admitted: loads and unloads wait for it), so any thread may end it."""
        with self._lock:
            if self._holders.pop(id(call), None) is None:
                return  # already ended: an undo can never count a call twice
            self._active -= 1
            if not self._active:
                self._idle.notify_all()
        record = call.record
        if record is not None and (calls := recorder()) is not None:
            record.finish()
            calls.record_call(record.key, self.owner, record)
        if call.outer and self._listener is not None:
            self._listener.model_used(self.owner)

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
    def use(self, what: str = "call") -> Iterator[Any]:
        """The call guard for a call that does not hand control back before it returns."""
        call = self._begin_call(self._nested(), what)
        try:
            with self._marked():
                yield call.record
        except BaseException as exc:
            _mark_ended(call.record, exc)
            raise
        finally:
            self._end_call(call)

    @asynccontextmanager
    async def ause(self, what: str = "async call") -> AsyncIterator[Any]:
        """The call guard for coroutines: waiting and loading run off the event loop."""
        call = await self._abegin_call(what)
        try:
            with self._marked():
                yield call.record
        except BaseException as exc:
            _mark_ended(call.record, exc)
            raise
        finally:
            await self._aend_call(call)

    def guarded_iter(self, iterator: Iterator[Any]) -> Iterator[Any]:
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
        except BaseException as exc:
            _mark_ended(record, exc)
            raise
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a caller that stopped early: let the model's stream clean up now
                with self._marked():
                    close()
            self._end_call(call)

    async def aguarded_iter(self, iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
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
        except BaseException as exc:
            _mark_ended(record, exc)
            raise
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with self._marked():
                    await aclose()
            await self._aend_call(call)


def _mark_ended(record: Any, exc: BaseException) -> None:
    """A call that raised: cancelled if its caller gave up on it (a cancelled task, a stream
    closed early), so client departures never count as errors; failed otherwise."""
    if record is not None:
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            record.cancelled = True
        else:
            record.failed = True


class _Call:
    """One admitted call: what it is and who made it, so a timed-out unload can name it."""

    __slots__ = ("outer", "record", "started", "thread", "what")

    def __init__(self, what: str, outer: bool) -> None:
        self.what, self.outer = what, outer
        self.thread = threading.current_thread().name
        self.started = time.monotonic()
        self.record: Any = None


_DONE = object()
