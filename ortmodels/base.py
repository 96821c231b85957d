"""The two base interfaces every ortmodels model implements.

A subclass supplies only the model-specific part (`_load`, `_unload` and the
inference method); the base class gives LangChain's interface, input checks, lazy
loading and the life cycle the `ModelManager` drives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessageChunk
from langchain_core.outputs import LLMResult
from pydantic import ConfigDict, Field, PrivateAttr

from .inputs import check_texts
from .lifecycle import LifeCycle, Managed, loading_model, set_recorder
from .monitoring import stats

__all__ = ["BaseEmbeddingModel", "BaseLLMModel", "loading_model"]

set_recorder(stats.RECORDER)  # a model used without the manager records its calls too


class BaseEmbeddingModel(Managed, Embeddings, ABC):
    """A LangChain `Embeddings` whose subclasses implement `_embed` (plus `_load`/`_unload`)."""

    kind: ClassVar[str] = "embedding"

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
        self.version: str | None = None
        """Export version to load (``None``: the active one); see ``ortmodels versions``."""
        self._life = self._new_life_cycle()

    def _new_life_cycle(self) -> LifeCycle:
        return LifeCycle(self)

    @property
    def model_path(self) -> Path | None:
        """The model's folder in the store (its checkpoint and ``onnx/`` exports)."""
        return self._model_path

    @abstractmethod
    def _embed(self, texts: list[str]) -> list[list[float]]:
        """Embed non-empty, already validated texts, in order."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed search documents; ``[]`` gives ``[]``."""
        texts = check_texts(texts)
        if not texts:
            return []
        with self._use("embed_documents") as record:
            vectors = self._embed(texts)
            if record is not None:
                record.items = len(texts)
            return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed a query text."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query expects a str, got {type(text).__name__}.")
        return self.embed_documents([text])[0]

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"{type(self).__name__}(model_name={self.model_name!r}, {state})"


class BaseLLMModel(Managed, BaseChatModel):
    """A LangChain `BaseChatModel` whose subclasses implement `_generate` (plus `_load`/`_unload`)."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    kind: ClassVar[str] = "chat"

    model_name: str | None = None
    """Name of the model in the store (its folder name)."""

    model_path_: Path | None = Field(default=None, alias="model_path")
    """The model's folder in the store."""

    device: str | None = None
    """Execution device (auto, cpu, cuda, coreml); ``None`` takes the `MODEL_DEVICE` setting."""

    dtype: str | None = None
    """Precision to load; ``None`` takes the `MODEL_DTYPE` setting."""

    version: str | None = None
    """Export version to load (``None``: the active one); see ``ortmodels versions``."""

    _life: LifeCycle = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._life = self._new_life_cycle()

    def _new_life_cycle(self) -> LifeCycle:
        """This model's life cycle (ortmodels' adapter shares its runtime's)."""
        return LifeCycle(self)

    # The public entry points hold the model loaded for the call and record it; LangChain's
    # invoke/batch go through generate, stream/astream through their own paths.

    def generate(self, messages: list, stop: list[str] | None = None, callbacks: Any = None,
                 **kwargs: Any) -> LLMResult:
        with self._use("invoke") as record:
            result = super().generate(messages, stop=stop, callbacks=callbacks, **kwargs)
            if record is not None:
                record.saw_result(result)
            return result

    async def agenerate(self, messages: list, stop: list[str] | None = None, callbacks: Any = None,
                        **kwargs: Any) -> LLMResult:
        async with self._ause("ainvoke") as record:
            result = await super().agenerate(messages, stop=stop, callbacks=callbacks, **kwargs)
            if record is not None:
                record.saw_result(result)
            return result

    def stream(self, input: Any, config: Any = None, *, stop: list[str] | None = None,
               **kwargs: Any) -> Iterator[BaseMessageChunk]:
        return self._guarded_iter(super().stream(input, config, stop=stop, **kwargs))

    def astream(self, input: Any, config: Any = None, *, stop: list[str] | None = None,
                **kwargs: Any) -> AsyncIterator[BaseMessageChunk]:
        return self._aguarded_iter(super().astream(input, config, stop=stop, **kwargs))

    @property
    def model_path(self) -> Path | None:
        """The model's folder in the store."""
        return self.model_path_

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "device": self.device, "dtype": self.dtype}
