"""What a route needs of a model, declared: the routes call these and nothing else.

`OnnxChatModel` and `OnnxEmbeddingModel` (and Ray's `RemoteModel`, which forwards each call
to a replica) are these; a user's own LangChain chat class is wrapped once, when the catalog
hands it out (`as_chat_model`), so no route picks a code path by looking at a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from ..engine import EngineGauges
from ..errors import ChatInputError
from ..runtime.events import ChatEvent
from ..runtime.options import ChatOptions
from ..runtime.tokens import Tokens


@runtime_checkable
class ChatModel(Protocol):
    """``/v1/chat/completions`` and ``/v1/completions``: the chat service's events for a call.

    Each returns at once (a refused call raises here, before any stream opens); closing the
    iterator cancels the request."""

    def achat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> AsyncIterator[ChatEvent]: ...

    def atext_events(self, prompt: str, options: ChatOptions) -> AsyncIterator[ChatEvent]: ...


class EmbeddingModel(Protocol):
    """``/v1/embeddings``: vectors with the tokens the model read for them (``usage``), given the
    request's options (`ortmodels.serve.embeddings.options_of`), and the vectors' length (read off
    the event loop: it may load the model)."""

    async def aembed_counted(self, texts: list[str],
                             options: dict[str, Any] | None = None) -> tuple[list[list[float]], int]: ...

    @property
    def dimension(self) -> int: ...


class RerankModel(Protocol):
    """``/v1/rerank``: ``(index, score)`` best first and the tokens the model read for them."""

    async def arerank_counted(self, query: str, documents: list[str],
                              top_n: int | None = None) -> tuple[list[tuple[int, float]], int]: ...


@runtime_checkable
class TokenizingModel(Protocol):
    """``/tokenize``, ``/detokenize``, ``/apply-template``: a chat model's tokens (ortmodels' own
    chat runtime, and Ray's stand-in for it; a user's LangChain class has none)."""

    async def atokenize(self, text: str, add_special: bool = False, with_pieces: bool = False) -> Tokens: ...

    async def achat_tokens(self, messages: list[dict[str, Any]], options: ChatOptions | None = None,
                           with_pieces: bool = False) -> Tokens: ...

    async def adetokenize(self, ids: list[int]) -> str: ...


@runtime_checkable
class Loadable(Protocol):
    """A model with a life cycle (``/v1/models`` says which are loaded now)."""

    @property
    def is_loaded(self) -> bool: ...


@runtime_checkable
class ReportsGauges(Protocol):
    """A model that runs an engine reports its figures (``/metrics``); ``None`` while not loaded."""

    def engine_gauges(self) -> EngineGauges | None: ...


def as_tokenizing(model: object, model_id: str) -> TokenizingModel:
    """``model`` as a `TokenizingModel`, or the error a route answers with a 400 (a user's own chat class)."""
    if not isinstance(model, TokenizingModel):
        raise ChatInputError(f"The model {model_id!r} is a chat class of your own without ortmodels' tokenizer; "
                             "tokenize with an exported ortmodels chat model.")
    return model


def as_chat_model(model: object) -> ChatModel:
    """``model`` as a `ChatModel`: itself, or a user's LangChain chat class read through
    `ortmodels.runtime.bridge` (LangChain is imported only then)."""
    if isinstance(model, ChatModel):
        return model
    from ..runtime.bridge import LangChainChat

    return LangChainChat(model)
