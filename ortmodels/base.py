"""The two base interfaces every ortmodels model implements.

A subclass supplies only the model-specific part (`_load`, `_unload` and the
inference method); the base class gives LangChain's interface, input checks, lazy
loading and the life cycle the `ModelManager` drives.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from pydantic import ConfigDict, Field, PrivateAttr


class _LifeCycle:
    """load / unload / is_loaded, shared by both bases; thread-safe and idempotent.

    Each base provides ``_lock`` (an ``RLock``) and ``_loaded`` (a bool).
    """

    _lock: threading.RLock
    _loaded: bool

    def _load(self) -> None:
        """Open whatever the model needs (sessions, tokenizers); called once per load."""

    def _unload(self) -> None:
        """Release what `_load` opened."""

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def load(self) -> Any:
        """Load the model if it is not loaded yet; returns ``self`` so calls can chain."""
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def unload(self) -> None:
        """Release the model's memory; a later call loads it again."""
        with self._lock:
            if self._loaded:
                self._unload()
                self._loaded = False

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()


class BaseEmbeddingModel(_LifeCycle, Embeddings, ABC):
    """A LangChain `Embeddings` whose subclasses implement `_embed` (plus `_load`/`_unload`)."""

    def __init__(
        self,
        model_name: str | None = None,
        *,
        model_path: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        self.model_name = model_name
        self._model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.dtype = dtype
        self._lock = threading.RLock()
        self._loaded = False

    @property
    def model_path(self) -> Path | None:
        """The model's folder in the store (its checkpoint and ``onnx/`` exports)."""
        return self._model_path

    @abstractmethod
    def _embed(self, texts: list[str]) -> list[list[float]]:
        """Embed non-empty, already validated texts, in order."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed search documents; ``[]`` gives ``[]``."""
        texts = _check_texts(texts)
        if not texts:
            return []
        self._ensure_loaded()
        return self._embed(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed a query text."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query expects a str, got {type(text).__name__}.")
        return self.embed_documents([text])[0]

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"{type(self).__name__}(model_name={self.model_name!r}, {state})"


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed_documents expects a list of str, got a single str; wrap it in a list.")
    try:
        items = list(texts)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"embed_documents expects a list of str, got {type(texts).__name__}."
        ) from None
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"embed_documents expects str items; item {index} is {type(item).__name__}: "
                f"{item!r:.60}"
            )
    return items


class BaseLLMModel(_LifeCycle, BaseChatModel):
    """A LangChain `BaseChatModel` whose subclasses implement `_generate` (plus `_load`/`_unload`)."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    model_name: str | None = None
    """Name of the model in the store (its folder name)."""

    model_path_: Path | None = Field(default=None, alias="model_path")
    """The model's folder in the store."""

    device: str | None = None
    """Execution device (auto, cpu, cuda, coreml); ``None`` takes the `MODEL_DEVICE` setting."""

    dtype: str | None = None
    """Precision to load; ``None`` takes the `MODEL_DTYPE` setting."""

    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _loaded: bool = PrivateAttr(default=False)

    @property
    def model_path(self) -> Path | None:
        """The model's folder in the store."""
        return self.model_path_

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "device": self.device, "dtype": self.dtype}
