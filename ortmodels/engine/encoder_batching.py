"""Coalescing concurrent embedding calls into shared batches.

Many threads calling ``embed_query`` at once would each run a batch of one. Here the
first caller runs, and every caller that arrives while a batch is running joins the next
one: a leader takes all waiting texts (up to ``max_texts``), runs them as one call (which
sorts them by length into padded batches), and hands each caller exactly its own rows.
A caller alone pays no wait window; under load the batch grows by itself, as Ray Serve's
``@serve.batch`` and vLLM's scheduler let it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, Self, TypeVar


class Rows(Protocol):
    """A result with one row per text that slices into callers' rows (a numpy array, `Encoded`)."""

    def __getitem__(self, rows: slice, /) -> Self: ...


R = TypeVar("R", bound=Rows)


class _Job(Generic[R]):
    __slots__ = ("done", "error", "result", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False


class CoalescingBatcher(Generic[R]):
    """Runs ``run(texts) -> rows[len(texts)]`` (an array, `encoder.Encoded`) for many callers, in shared calls."""

    def __init__(self, run: Callable[[list[str]], R], max_texts: int = 256) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be at least 1, not {max_texts}.")
        self._run = run
        self.max_texts = max_texts
        self._cond = threading.Condition()
        self._pending: deque[_Job[R]] = deque()
        self._busy = False
        self.calls = 0
        """Shared calls made so far (fewer than callers when calls were coalesced)."""

    def __call__(self, texts: list[str]) -> R:
        job: _Job[R] = _Job(texts)
        with self._cond:
            self._pending.append(job)
            while self._busy and not job.done:
                self._cond.wait()
            if job.done:
                return self._outcome(job)
            self._busy = True  # this caller leads the next shared call
            batch = self._take(job)
        try:
            self._execute(batch)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return self._outcome(job)

    def _take(self, leader: _Job[R]) -> list[_Job[R]]:
        """The leader's job and every waiting one that fits within ``max_texts``."""
        batch, size = [], 0
        while self._pending:
            job = self._pending[0]
            if batch and size + len(job.texts) > self.max_texts and job is not leader:
                break
            batch.append(self._pending.popleft())
            size += len(job.texts)
        if leader not in batch:  # cannot happen while the queue is FIFO, but never strand the leader
            self._pending.remove(leader)
            batch.append(leader)
        return batch

    def _execute(self, batch: list[_Job[R]]) -> None:
        self.calls += 1
        texts = [text for job in batch for text in job.texts]
        try:
            vectors = self._run(texts)
        except BaseException:
            if len(batch) == 1:
                batch[0].error = _current_error()
                batch[0].done = True
                return
            for job in batch:  # one caller's failure must not fail the others: run each alone
                self._execute([job])
            return
        start = 0
        for job in batch:
            job.result = vectors[start:start + len(job.texts)]
            start += len(job.texts)
            job.done = True

    @staticmethod
    def _outcome(job: _Job[R]) -> R:
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result


def _current_error() -> BaseException:
    import sys

    error = sys.exc_info()[1]
    assert error is not None
    return error
