"""A bounded admission queue: how many requests may wait or run at once, server-wide.

The engine queues requests without limit; a server under more load than it can answer
should say so at once (503 with ``Retry-After``) rather than let waits grow until clients
time out. Everything here runs on the event loop's thread, so plain counters suffice.
"""

from __future__ import annotations

from .errors import ApiError

RETRY_AFTER_S = 1


class Slot:
    """One admitted request; `release` is idempotent, so every exit path may call it."""

    __slots__ = ("_queue", "released")

    def __init__(self, queue: AdmissionQueue) -> None:
        self._queue, self.released = queue, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._queue.in_flight -= 1


class AdmissionQueue:
    """At most ``limit`` requests admitted (waiting for the engine or running) at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_queue must be at least 1, not {limit}.")
        self.limit = limit
        self.in_flight = 0
        self.rejected = 0

    def enter(self) -> Slot:
        """A slot, or a 503 with ``Retry-After`` when the queue is full."""
        if self.in_flight >= self.limit:
            self.rejected += 1
            raise ApiError(
                503, f"The server is busy: {self.in_flight} request{'s are' if self.in_flight != 1 else ' is'} "
                f"waiting or running (--max-queue "
                f"{self.limit}). Retry in a moment.", type="server_error", code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.in_flight += 1
        return Slot(self)
