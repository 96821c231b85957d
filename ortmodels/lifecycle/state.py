"""The state a model's life cycle keeps, declared once for both halves (loading, admission).

The pydantic chat base declares the same fields as private attributes; the embedding base
fills them with `init_life_cycle`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .listener import ModelListener


class LifeCycleState:
    """What `LoadState` and `CallAdmission` share, all guarded by ``_lock``."""

    _lock: threading.RLock
    _idle: threading.Condition
    """Notified when the last running call ends, or an unload finishes."""
    _loaded: bool
    _active: int
    """Calls running on the model now."""
    _draining: int
    """Unloads waiting for running calls: new calls wait for them."""
    _pending: int
    """Calls loading the model to run on it: an idle unload waits for them."""
    _last_memory: int
    """What the model held when last loaded: the room to make before loading it again."""
    _opened: Any
    _lease: Any
    _listener: ModelListener | None
    _holders: dict[int, Any]
    """The calls admitted now, by id, for `unload`'s report when it times out."""


def init_life_cycle(model: Any) -> None:
    """The life-cycle state of a model that is not a pydantic model (the embedding base)."""
    model._lock = threading.RLock()
    model._idle = threading.Condition(model._lock)
    model._loaded = False
    model._active = 0
    model._draining = 0
    model._pending = 0
    model._last_memory = 0
    model._opened = None
    model._lease = None
    model._listener = None
    model._holders = {}
