"""The manager's cache policy: least recently used first out of a memory budget, idle keep-alive.

Pure bookkeeping over cache entries, with no locks and no unloading of its own, so the
rules can be read (and tested) apart from the threads that apply them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

FOREVER = -1.0


@dataclass
class CacheEntry:
    """One cached model object; it stays in the cache while unloaded, so it is reused."""

    key: tuple[Any, ...]
    model: Any
    """What the manager built: ortmodels' LangChain-free runtime, or a user's class."""
    adapter: Any = None
    """The LangChain object handed out for it (the runtime's face, made when first asked for)."""
    loaded_at: float | None = None
    last_used: float = field(default_factory=time.time)
    expires_at: float | None = None
    """Wall-clock time after which an idle model is unloaded; ``None``: never."""

    @property
    def loaded(self) -> bool:
        return bool(self.model.is_loaded)

    @property
    def busy(self) -> bool:
        return bool(getattr(self.model, "active_calls", 0))

    @property
    def memory(self) -> int:
        return int(self.model.memory_bytes()) if self.loaded else 0

    def touch(self, keep_alive: float, now: float | None = None) -> None:
        """Mark as used now; an idle model then lives ``keep_alive`` seconds (-1: forever)."""
        now = time.time() if now is None else now
        self.last_used = now
        self.expires_at = None if keep_alive < 0 else now + keep_alive


def eviction_order(entries: list[CacheEntry], keep: CacheEntry | None = None) -> list[CacheEntry]:
    """Loaded, idle entries other than ``keep``, least recently used first."""
    candidates = [e for e in entries if e.loaded and not e.busy and e is not keep]
    return sorted(candidates, key=lambda e: e.last_used)


def victims_for_budget(entries: list[CacheEntry], budget: int, incoming: int = 0,
                       keep: CacheEntry | None = None) -> list[CacheEntry]:
    """The entries to unload so that what stays loaded, plus ``incoming`` bytes, fits ``budget``.

    A budget of 0 means no limit. Models in use are never chosen; if they alone exceed
    the budget, the budget is exceeded rather than a running call broken.
    """
    if budget <= 0:
        return []
    used = sum(e.memory for e in entries if e.loaded) + incoming
    victims = []
    for entry in eviction_order(entries, keep):
        if used <= budget:
            break
        victims.append(entry)
        used -= entry.memory
    return victims


def expired(entries: list[CacheEntry], now: float | None = None) -> list[CacheEntry]:
    """Loaded, idle entries whose keep-alive has run out."""
    now = time.time() if now is None else now
    return [e for e in entries if e.loaded and not e.busy and e.expires_at is not None and e.expires_at <= now]


def next_expiry(entries: list[CacheEntry]) -> float | None:
    """When the next idle model expires; a busy one is looked at again when its call ends."""
    times = [e.expires_at for e in entries if e.loaded and not e.busy and e.expires_at is not None]
    return min(times) if times else None
