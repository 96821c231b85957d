"""``/tokenize``, ``/detokenize`` and ``/apply-template``: a chat model's tokens in llama-server's
shapes, and vLLM's chat count (``/tokenize`` with ``messages``: ``count``, ``max_model_len``,
``tokens``), so a client can fit retrieved text to the window before it asks.

The model's chat runtime does the work (`ortmodels.runtime.tokens`): text is tokenized as text
(a special token's text in it never becomes a control token; ``add_special`` adds only the
model's own BOS, where its tokenizer adds one), and a chat's ids are those the chat service
builds for the same messages, tools and template switches (``usage.prompt_tokens`` of a chat
completion with the same body fields). No LangChain.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ChatInputError
from ..runtime.options import ChatOptions, ReasoningOptions
from ..runtime.tokens import Tokens
from .chat import chat_options, to_messages
from .errors import bad_request, validated
from .protocol import ChatCompletionRequest, ChatMessage, NamedToolChoice, Tool
from .protocols import TokenizingModel, as_tokenizing


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    model: str | None = None
    """A chat model's id (default: the server's default chat model)."""


#: The chat body's fields besides ``messages`` that change its prompt, which ``/tokenize`` takes
#: with ``messages`` and reads as ``/v1/chat/completions`` reads them (`prompt_options`).
PROMPT_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "chat_template_kwargs", "reasoning_effort",
                 *ReasoningOptions.model_fields)


class TokenizeRequest(ReasoningOptions, _Body):
    """llama-server's ``{"content"}`` or vLLM's ``{"messages"}``: one of the two; with ``messages``,
    the chat body's fields that change the prompt (`PROMPT_FIELDS`: tools, template switches)."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    content: str | None = None
    """Text to tokenize, as text: a special token's text in it stays text."""
    messages: Annotated[list[ChatMessage] | None, Field(min_length=1)] = None
    """A chat (OpenAI's messages): the ids of the prompt the model would read for it, and their count."""
    add_special: bool = False
    """With ``content``: add what the tokenizer adds around an input (the model's BOS, if it has one)."""
    with_pieces: bool = False
    """Each token as ``{"id", "piece"}``: its text, or its bytes where it holds part of a UTF-8 character."""
    tools: list[Tool] | None = None
    """With ``messages``: the tools a chat completion offers (their prompt is counted)."""
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    """With ``messages``: the template's variables, as chat takes them (``enable_thinking``)."""
    reasoning_effort: str | None = None
    """With ``messages``: OpenAI's level, as chat reads it (it switches the template's thinking)."""


class DetokenizeRequest(_Body):
    tokens: list[int]
    """Token ids of this model (0 to its largest id)."""


class ApplyTemplateRequest(_Body):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    """A chat (OpenAI's messages), rendered by the model's chat template with the assistant's turn opened."""


def messages_of(request: TokenizeRequest | ApplyTemplateRequest) -> list[dict[str, Any]] | None:
    """The chat service's message dicts of the body, checked before the model is asked."""
    return to_messages(request.messages) if request.messages is not None else None


def check(request: TokenizeRequest) -> None:
    """Exactly one of ``content`` and ``messages``; the chat's fields with ``messages`` only."""
    if (request.content is None) == (request.messages is None):
        given = "both content and messages" if request.content is not None else "neither content nor messages"
        raise bad_request(f"The body has {given}: give content (text) or messages (a chat), one of them.",
                          "content")
    if request.messages is not None and request.add_special:
        raise bad_request("add_special applies to content: a chat's prompt has the tokens its template writes.",
                          "add_special")
    if request.content is not None and (name := next(
            (n for n in PROMPT_FIELDS if getattr(request, n) is not None), None)):
        raise bad_request(f"{name} applies to messages: content is tokenized as text, without the chat template. "
                          f"Send the chat as messages, or leave {name} out.", name)
    prompt_options(request)  # a bad tool or switch: refused before the model is asked


def prompt_options(request: TokenizeRequest) -> ChatOptions | None:
    """The options of the chat completion whose prompt ``messages`` counts: `PROMPT_FIELDS` read by
    chat's own `chat_options`, so the count is that completion's ``usage.prompt_tokens``."""
    given = request.model_dump(include=set(PROMPT_FIELDS), exclude_none=True)
    if not given:
        return None
    # a bad tool, say: the 400 the chat route gives
    return chat_options(validated(ChatCompletionRequest, {"messages": request.messages, **given}))


def tokenizing(model: object, model_id: str) -> TokenizingModel:
    """`protocols.as_tokenizing`, its refusal a 400 naming ``model``."""
    try:
        return as_tokenizing(model, model_id)
    except ChatInputError as exc:
        raise bad_request(str(exc), "model") from None


def _tokens(found: Tokens, with_pieces: bool) -> list[Any]:
    if not with_pieces or found.pieces is None:
        return list(found.ids)
    return [{"id": token, "piece": piece if isinstance(piece, str) else list(piece)}
            for token, piece in zip(found.ids, found.pieces, strict=True)]


async def tokenize(model: object, model_id: str, request: TokenizeRequest) -> dict[str, Any]:
    """``{"tokens", "count", "max_model_len"}`` (llama-server reads ``tokens``; vLLM all three)."""
    tokens = tokenizing(model, model_id)
    messages = messages_of(request)
    if messages is not None:
        found = await tokens.achat_tokens(messages, prompt_options(request), with_pieces=request.with_pieces)
    else:
        assert request.content is not None  # `check`
        found = await tokens.atokenize(request.content, request.add_special, request.with_pieces)
    return {"tokens": _tokens(found, request.with_pieces), "count": len(found.ids),
            "max_model_len": found.context_length}


async def detokenize(model: object, model_id: str, request: DetokenizeRequest) -> dict[str, Any]:
    """``{"content"}``: the text of the ids."""
    try:
        return {"content": await tokenizing(model, model_id).adetokenize(list(request.tokens))}
    except ChatInputError as exc:  # an id outside the vocabulary: the message names the range
        raise bad_request(str(exc), "tokens", "invalid_value") from None


async def apply_template(model: object, model_id: str, request: ApplyTemplateRequest) -> dict[str, Any]:
    """``{"prompt"}``: the chat as the model reads it (and ``count``, its tokens)."""
    messages = messages_of(request)
    assert messages is not None
    found = await tokenizing(model, model_id).achat_tokens(messages)
    return {"prompt": found.prompt, "count": len(found.ids), "max_model_len": found.context_length}
