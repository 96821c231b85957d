"""An async call cancelled while its model loads, in an event loop that then ends.

``asyncio.run`` shuts the loop's executor down before it returns; the cancelled call's
admission finishes after that (the load goes on in its thread), and its undo must still end
the call, or the model stays held for ever: ``unload`` would wait out its whole timeout and
every call queued behind that unload with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ortmodels.monitoring import stats
from ortmodels.runtime.chat import OnnxChatModel

from .conftest import CHAT_SAMPLE

pytestmark = pytest.mark.slow

WAIT_S = 60.0


class _LoadGate:
    """Holds a model's load until the loop's executor is being shut down."""

    def __init__(self) -> None:
        self.loading = threading.Event()
        self.release = threading.Event()


def _gated_model(gate: _LoadGate, folder: Path) -> OnnxChatModel:
    class GatedChat(OnnxChatModel):
        def _load(self) -> None:
            gate.loading.set()
            gate.release.wait(WAIT_S)
            super()._load()

    return GatedChat(model_path=folder, dtype="int4", max_tokens=2)


class _CallEnded:
    """The model's listener: `model_used` is told once a call has been ended and recorded."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def model_loading(self, model: Any) -> None: ...

    def model_loaded(self, model: Any) -> None: ...

    def model_unloaded(self, model: Any) -> None: ...

    def model_used(self, model: Any) -> None:
        self.ended.set()


class _ReleasingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: its shutdown (by ``asyncio.run``, after the main coroutine)
    lets the load finish, so the admission ends after the loop stopped taking work."""

    def __init__(self, gate: _LoadGate) -> None:
        super().__init__()
        self._gate = gate

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._gate.release.set()
        super().shutdown(wait, cancel_futures=cancel_futures)


def test_a_call_cancelled_while_loading_is_uncounted_after_the_loop_ends(samples_dir: Path) -> None:
    gate = _LoadGate()
    chat = _gated_model(gate, samples_dir / CHAT_SAMPLE)
    listener = _CallEnded()
    chat.set_listener(listener)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(_ReleasingExecutor(gate))
        call = asyncio.create_task(chat.ainvoke("hi"))
        assert await asyncio.to_thread(gate.loading.wait, WAIT_S), "the load never started"
        call.cancel()  # lands while the model loads: the admission is still running in its thread
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    assert gate.release.is_set()
    # the load finishes and admits the cancelled call; its undo must end it (before the fix the
    # undo raised "Executor shutdown has been called" and the call stayed counted for ever)
    assert listener.ended.wait(WAIT_S), f"the cancelled call was never ended: {chat.active_calls} active"
    assert chat.active_calls == 0
    started = time.monotonic()
    chat.unload(timeout=WAIT_S)  # nothing holds the model: no wait for the timeout, no ModelBusyError
    assert not chat.is_loaded and time.monotonic() - started < WAIT_S / 2
    rows = [r for r in stats.registry().snapshot() if r["model"] == CHAT_SAMPLE]
    assert [(r["calls"], r["errors"], r["cancelled"]) for r in rows] == [(1, 0, 1)], rows

    answer: list[Any] = []  # a later call is not queued behind anything
    worker = threading.Thread(target=lambda: answer.append(chat.invoke("hi")))
    worker.start()
    worker.join(WAIT_S)
    assert not worker.is_alive() and answer and answer[0].content is not None
    chat.unload(timeout=WAIT_S)
