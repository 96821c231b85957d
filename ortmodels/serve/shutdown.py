"""The end of a graceful shutdown: what still runs at ``--shutdown-timeout`` ends cleanly.

uvicorn lets running requests finish within its graceful timeout, then cancels their tasks:
a stream would stop without an error event or ``[DONE]``, a whole answer without any reply,
and each cancelled task would log a traceback. So the server cuts them itself at the
deadline: every wait of a running answer (`Shutdown.bounded`) ends with a 503 `ApiError`,
which a stream sends as its error event before ``[DONE]``. uvicorn's own timeout is set a
little later (`run.py`), for what cannot end by itself (a client that reads nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from .errors import ApiError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Shutdown:
    """Cuts the running answers' waits once the shutdown's time is up; event-loop thread only."""

    def __init__(self) -> None:
        self.due = False
        self._waits: set[asyncio.Timeout] = set()

    def cut(self) -> None:
        """The deadline: interrupt every wait in `bounded` now, and any that starts later."""
        self.due = True
        if self._waits:
            logger.warning("Shutdown timeout reached: ending %d running request(s) with an error", len(self._waits))
        now = asyncio.get_running_loop().time()
        for timeout in list(self._waits):
            timeout.reschedule(now)

    async def bounded(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, unless the shutdown's deadline comes first: then a 503 `ApiError`."""
        try:
            async with asyncio.timeout(0 if self.due else None) as timeout:
                self._waits.add(timeout)
                try:
                    return await awaitable
                finally:
                    self._waits.discard(timeout)
        except TimeoutError:
            if not timeout.expired():
                raise  # the awaitable's own timeout
            raise ApiError(503, "The server is shutting down and its shutdown timeout has passed: this answer "
                           "was cut short. Retry the request.", type="server_error",
                           code="server_shutting_down") from None
