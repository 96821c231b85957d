"""The thread that unloads models whose keep-alive has run out (``MODEL_KEEP_ALIVE``).

It sleeps until the next expiry (or a minute, or until woken by a call that changed one),
then unloads each expired model that is idle; a busy one is looked at again shortly,
never waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .cache import CacheEntry, expired, next_expiry

logger = logging.getLogger(__name__)


class KeepAliveThread:
    """Started on first use; ``wake()`` after anything that moves an expiry time."""

    def __init__(self, lock: threading.RLock, entries: Callable[[], list[CacheEntry]]) -> None:
        self._lock = lock
        self._wake = threading.Condition(lock)
        self._entries = entries
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ortmodels-keep-alive", daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                entries = self._entries()
                due = expired(entries)
                if not due:
                    upcoming = next_expiry(entries)
                    self._wake.wait(timeout=60.0 if upcoming is None else max(0.01, upcoming - time.time()))
                    continue
            for entry in due:
                def still_expired(entry: CacheEntry = entry) -> bool:
                    return entry.expires_at is not None and entry.expires_at <= time.time()

                if entry.model.unload_if_idle(still_expired):
                    logger.info("Unloaded %s: idle for its keep-alive", entry.key[1])
                else:  # busy now: look again shortly rather than spin
                    with self._lock:
                        self._wake.wait(timeout=0.05)
