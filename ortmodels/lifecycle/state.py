"""The state of one model's life cycle, declared once: the fields both halves (loading,
admission) work on, in the one `LifeCycle` object each model holds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import ModelInfo
    from ..store.versions import VersionLease
    from .listener import ModelListener


@dataclass(frozen=True)
class VariantChoice:
    """What a load will open, chosen once: the model's info (its manifest read once), the
    variant, the device, and the lease that keeps that export version from being pruned."""

    info: ModelInfo
    variant: str
    device: str
    lease: VersionLease | None

    @property
    def size(self) -> int:
        """Bytes of the variant's files, as its manifest records them (the memory estimate)."""
        return self.info.variants[self.variant].size

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()


class LifeCycleState:
    """What `LoadState` and `CallAdmission` share, all guarded by ``_lock``."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        """The model whose ``_load``/``_unload``/``memory_bytes`` this life cycle runs, and
        whom the listener is told about."""
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        """Notified when the last running call ends, or an unload finishes."""
        self._loaded = False
        self._active = 0
        """Calls running on the model now."""
        self._draining = 0
        """Unloads waiting for running calls: new calls wait for them."""
        self._pending = 0
        """Calls loading the model to run on it: an idle unload waits for them."""
        self._last_memory = 0
        """What the model held when last loaded: the room to make before loading it again."""
        self._opened: Any = None
        """What `open_variant` opened (info, variant, device, session), while loaded."""
        self._lease: Any = None
        """The lease on the opened export version, while loaded."""
        self._chooser: Callable[[], VariantChoice] | None = None
        """Makes the next load's `VariantChoice` (the loader's; ``None``: the model opens its own)."""
        self._choice: VariantChoice | None = None
        """The choice the next load opens, once made (by the loader, or for the memory estimate)."""
        self._listener: ModelListener | None = None
        self._holders: dict[int, Any] = {}
        """The calls admitted now, by id, for `unload`'s report when it times out."""

    @property
    def draining(self) -> bool:
        """Whether an unload is waiting for running calls now."""
        return bool(self._draining)
