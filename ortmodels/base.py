"""The base interfaces every ortmodels model implements (chat, embedding, reranker).

A subclass supplies only the model-specific part (`_load`, `_unload` and the
inference method); the base class gives LangChain's interface, input checks, lazy
loading and the life cycle the `ModelManager` drives.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessageChunk
from langchain_core.outputs import LLMResult
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr

from .errors import EmbeddingOptionError, RerankInputError
from .inputs import check_texts, ranked, rerank_pairs
from .lifecycle import LifeCycle, Managed, ManagedEmbedding, loading_model, set_recorder
from .monitoring import stats

__all__ = ["BaseEmbeddingModel", "BaseLLMModel", "BaseRerankModel", "loading_model"]

set_recorder(stats.RECORDER)  # a model used without the manager records its calls too


class _PlainModel(Managed):
    """What the bases that are not pydantic models share: name, folder, device, precision."""

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

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"{type(self).__name__}(model_name={self.model_name!r}, {state})"


class BaseEmbeddingModel(_PlainModel, ManagedEmbedding, Embeddings, ABC):
    """A LangChain `Embeddings` whose subclasses implement `_embed` (plus `_load`/`_unload`)."""

    kind: ClassVar[str] = "embedding"

    @abstractmethod
    def _embed(self, texts: list[str]) -> list[list[float]]:
        """Embed non-empty, already validated texts, in order."""

    def _embed_as(self, texts: list[str], input_type: str | None, prompt_name: str | None,
                  dimensions: int | None, matryoshka: bool) -> tuple[list[list[float]], int]:
        """Embed for a role (``query``, ``document``), a named prompt or fewer dimensions, with the
        tokens the model read (0: this class does not count them). A model with prompts or
        truncation overrides this; here every text is embedded alike by `_embed`, and a prompt name
        or another size is refused rather than ignored."""
        if prompt_name is not None:
            raise EmbeddingOptionError(f"{self.model_name} has no prompts; leave prompt_name out.", "prompt_name")
        vectors = self._embed(texts)
        if dimensions is not None and vectors and dimensions != len(vectors[0]):
            raise EmbeddingOptionError(f"{self.model_name} gives {len(vectors[0])} dimensions; it cannot give "
                                       f"{dimensions}.", "dimensions")
        return vectors, 0

    def embed(self, texts: list[str], *, input_type: str | None = None, prompt_name: str | None = None,
              dimensions: int | None = None, matryoshka: bool = False) -> list[list[float]]:
        """Embed ``texts`` as a query or as documents (``input_type``), or with a prompt of the model's
        by name, cut to ``dimensions`` where the model allows it; neither role: sentence-transformers'
        plain ``encode``. ``[]`` gives ``[]``."""
        return self.embed_counted(texts, input_type=input_type, prompt_name=prompt_name, dimensions=dimensions,
                                  matryoshka=matryoshka)[0]

    async def aembed(self, texts: list[str], *, input_type: str | None = None, prompt_name: str | None = None,
                     dimensions: int | None = None, matryoshka: bool = False) -> list[list[float]]:
        """`embed` off the event loop."""
        return await run_in_executor(None, partial(self.embed, texts, input_type=input_type, prompt_name=prompt_name,
                                                   dimensions=dimensions, matryoshka=matryoshka))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed search documents (with the model's document prompt, if it has one); ``[]`` gives ``[]``."""
        return self.embed(texts, input_type="document")

    def embed_query(self, text: str) -> list[float]:
        """Embed a query text (with the model's query prompt, if it has one)."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query expects a str, got {type(text).__name__}.")
        return self.embed([text], input_type="query")[0]


class BaseRerankModel(_PlainModel, BaseCrossEncoder, ABC):
    """A LangChain `BaseCrossEncoder` whose subclasses implement `_score` (plus `_load`/`_unload`).

    `score` is LangChain's interface (so LangChain's own ``CrossEncoderReranker`` takes the
    model); `rerank` gives each document's index and score, best first.
    """

    kind: ClassVar[str] = "reranker"

    @abstractmethod
    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Score non-empty, already validated (query, document) pairs, in order."""

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """The relevance score of each (query, document) pair; ``[]`` gives ``[]``."""
        pairs = _check_pairs(text_pairs)
        if not pairs:
            return []
        with self._use("score") as record:
            scores = self._score(pairs)
            if record is not None:
                record.items = len(pairs)
            return scores

    def rerank(self, query: str, documents: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """``(index, score)`` of the ``top_n`` best ``documents`` for ``query`` (all if ``None``), best first."""
        return ranked(self.score(rerank_pairs(query, documents, top_n)), top_n)

    def rerank_counted(self, query: str, documents: list[str],
                       top_n: int | None = None) -> tuple[list[tuple[int, float]], int]:
        """`rerank` and the tokens the model read for it (the server's ``usage``; 0: this class does
        not count them)."""
        return self.rerank(query, documents, top_n), 0

    async def arerank_counted(self, query: str, documents: list[str],
                              top_n: int | None = None) -> tuple[list[tuple[int, float]], int]:
        """`rerank_counted` off the event loop."""
        return await asyncio.to_thread(self.rerank_counted, query, documents, top_n)

    async def ascore(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """`score` off the event loop."""
        return await asyncio.to_thread(self.score, text_pairs)

    async def arerank(self, query: str, documents: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """`rerank` off the event loop."""
        return await asyncio.to_thread(self.rerank, query, documents, top_n)


def _check_pairs(pairs: object) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, tuple)):
        raise TypeError("score expects a list of (query, document) pairs; wrap a single pair in a list.")
    try:
        items = list(pairs)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"score expects a list of (query, document) pairs, got {type(pairs).__name__}.") from None
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"score expects (query, document) pairs; item {index} is {item!r:.60}.")
        check_texts(list(item), "score", RerankInputError, f"pair {index}: ")
        checked.append((item[0], item[1]))
    return checked


class BaseLLMModel(Managed, BaseChatModel):
    """A LangChain `BaseChatModel` whose subclasses implement `_generate` (plus `_load`/`_unload`)."""

    # by name too: LangChain's configurable_fields and copies rebuild a model from its field
    # names (``model_path_``), a user from the alias (``model_path``)
    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True,
                              validate_by_name=True, validate_by_alias=True)

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
