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
