"""Waiting in tests without deciding a race by a sleep: poll a state with a deadline, bound
every join, and hold an engine between steps while requests queue up.

A test that needs something "in flight" holds it open with an event (a model method or a
logits processor that blocks on one) and waits here for the state it needs; a hang fails
with what was awaited, never blocks the run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

#: Long enough for a loaded 2-core machine; a state that is not reached by then never will be.
DEADLINE_S = 30.0


def wait_until(predicate: Callable[[], object], timeout: float = DEADLINE_S, what: str = "the condition",
               interval: float = 0.01) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"Still not {what} after {timeout:g} s")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], object], timeout: float = DEADLINE_S,
                           what: str = "the condition", interval: float = 0.01) -> None:
    """`wait_until` inside an event loop: the loop keeps running while it polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"Still not {what} after {timeout:g} s")
        await asyncio.sleep(interval)


def wait_for_event(event: threading.Event, timeout: float = DEADLINE_S, what: str = "set") -> None:
    """``event.wait`` that fails the test, naming ``what``, instead of returning False."""
    if not event.wait(timeout):
        pytest.fail(f"Still not {what} after {timeout:g} s")


def join_all(threads: Iterable[threading.Thread], timeout: float = DEADLINE_S * 4) -> None:
    """Join every thread within one shared deadline; fail naming those still running."""
    threads = list(threads)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        pytest.fail(f"{len(alive)} thread(s) still running after {timeout:g} s: {', '.join(alive)}")


@contextmanager
def engine_held(engine: Any) -> Iterator[None]:
    """Hold ``engine``'s scheduler between two steps (its step lock) for the ``with`` body.

    Requests added meanwhile queue up, so they are all waiting when the next step runs:
    what a test of shared decode steps needs, whatever the threads' timing.
    """
    with engine._step_lock:
        yield
