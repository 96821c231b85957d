"""What a model tells whoever manages it: a typed interface instead of private attributes."""

from __future__ import annotations

from typing import Any, Protocol


class ModelListener(Protocol):
    """Told of a model's life cycle; the `ModelManager` is one (memory budget, keep-alive,
    runtime state). Each call happens outside the model's lock."""

    def model_loading(self, model: Any) -> None:
        """Before a load: make room within a memory budget."""

    def model_loaded(self, model: Any) -> None:
        """After every load, including a reload on the next use."""

    def model_unloaded(self, model: Any) -> None:
        """After an unload."""

    def model_used(self, model: Any) -> None:
        """After each call: last-use time and keep-alive expiry."""


class CallRecorder(Protocol):
    """Told of every model's loads and calls, process-wide: the stats (`monitoring.stats`)
    install one, so the life cycle records figures without importing who keeps them."""

    def key_of(self, model: Any) -> Any:
        """What the figures are kept under, read while the model is surely loaded."""

    def start_call(self, model: Any) -> Any:
        """A record for a call beginning now; the call fills it (``items``, ``saw_chunk``,
        ``saw_result``, ``failed``, ``cancelled``) and hands it to `record_call`."""

    def record_call(self, key: Any, model: Any, record: Any) -> None:
        """A call has ended."""

    def record_load(self, key: Any, model: Any, seconds: float, memory: int) -> None:
        """A load has ended, after ``seconds``, holding ``memory`` bytes."""


_recorder: CallRecorder | None = None


def set_recorder(calls: CallRecorder | None) -> None:
    """Who records every model's loads and calls (one per process; ``None``: nobody)."""
    global _recorder
    _recorder = calls


def recorder() -> CallRecorder | None:
    """The process-wide `CallRecorder`, if one is installed."""
    return _recorder
