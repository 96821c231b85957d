"""A user's own LangChain chat class seen as a chat service: for the server, when a class has
no ``achat_events`` (only `OnnxChatModel` has one; the server imports this module only then,
through `ortmodels.serve.protocols.as_chat_model`).

The service's message dicts become LangChain messages, its options keyword arguments, and the
class's chunks the service's events, as the server read them before the service existed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ..engine.json_text import NotJsonNumber, loads, non_json_reason
from ..engine.toolcalls import ToolCall
from ..errors import ChatInputError, StructuredOutputError
from .events import ChatEvent, Finished, ReasoningDelta, TextDelta, TokenLogprob, ToolCalls, Usage
from .options import ChatOptions, ModelOptions

_METHODS = {"achat_events": "astream", "atext_events": "astream_text"}


class LangChainChat:
    """A user's LangChain chat model with the chat service's two streams (`serve.protocols.ChatModel`)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def achat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> AsyncIterator[ChatEvent]:
        return langchain_events(self.model, "achat_events", messages, options)

    def atext_events(self, prompt: str, options: ChatOptions) -> AsyncIterator[ChatEvent]:
        """Refused at once (before any stream opens) for a class without ``astream_text``."""
        if not hasattr(self.model, "astream_text"):
            name = getattr(self.model, "model_name", None) or type(self.model).__name__
            raise ChatInputError(f"{name} cannot continue plain text (its class {type(self.model).__name__} has no "
                                 "astream_text); use /v1/chat/completions.")
        return langchain_events(self.model, "atext_events", prompt, options)


def to_langchain(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """The service's message dicts as LangChain messages."""
    converted: list[BaseMessage] = []
    for message in messages:
        role, text = message["role"], message.get("content") or ""
        if role == "system":
            converted.append(SystemMessage(text))
        elif role == "user":
            converted.append(HumanMessage(text))
        elif role == "assistant":
            calls = [{"name": c["name"], "args": c.get("arguments") or {}, "id": c.get("id"), "type": "tool_call"}
                     for c in message.get("tool_calls") or []]
            converted.append(AIMessage(text, tool_calls=calls))
        else:
            converted.append(ToolMessage(text, tool_call_id=message.get("tool_call_id"), name=message.get("name"),
                                         status="error" if message.get("error") else "success"))
    return converted


async def langchain_events(model: Any, method: str, given: Any, options: ChatOptions) -> AsyncIterator[ChatEvent]:
    """``model.astream`` (``astream_text`` for a plain prompt) read as the service's events."""
    kept = {"stop", "truncate_prompt"}
    if options.truncate_prompt:  # asked for: refused, never ignored, where the class has no such option
        if not isinstance(model, ModelOptions):
            raise ChatInputError(f"{type(model).__name__} takes no truncate_prompt; shorten the prompt instead.")
        kept = {"stop"}
    kwargs = options.model_dump(exclude_none=True, exclude=kept)
    source = getattr(model, _METHODS[method])
    chunks = source(to_langchain(given) if method == "achat_events" else given, stop=options.stop or None, **kwargs)
    reason: str | None = None
    usage = Usage(0, 0, 0)
    first: float | None = None
    metadata: dict[str, Any] = {}
    pieces: dict[Any, dict[str, Any]] = {}  # streamed tool calls, by index: arguments arrive in fragments
    async with aclosing(chunks):
        async for chunk in chunks:
            content = chunk.content if isinstance(chunk.content, str) else ""
            metadata = chunk.response_metadata or {}
            thought = (chunk.additional_kwargs or {}).get("reasoning_content")
            if isinstance(thought, str) and thought:  # ChatOllama(reasoning=True) and ortmodels' own
                yield ReasoningDelta(thought)
            streamed = getattr(chunk, "tool_call_chunks", None) or []
            for position, piece in enumerate(streamed):
                _gather(pieces, piece, position)
            whole = [] if streamed else getattr(chunk, "tool_calls", None) or []
            if whole:  # a class without a stream of its own answers `astream` with its whole AIMessage
                yield ToolCalls(content, tuple(_call(c["name"], c.get("args") or {}, c.get("id")) for c in whole))
            elif content or (metadata.get("logprobs") or {}).get("content"):
                entries = (metadata.get("logprobs") or {}).get("content") or []
                yield TextDelta(content, tuple(_logprob(e) for e in entries if _has_logprob(e)))
            reason = metadata.get("finish_reason") or reason
            first = metadata.get("time_to_first_token_s", first)
            if meta := chunk.usage_metadata:
                cached = (meta.get("input_token_details") or {}).get("cache_read") or 0
                usage = Usage(meta["input_tokens"], meta["output_tokens"], cached)
    if pieces:
        yield ToolCalls("", tuple(_parsed(piece) for piece in pieces.values()))
    yield Finished(reason or "stop", usage, first, metadata.get("variant"), metadata.get("device"))


def _gather(pieces: dict[Any, dict[str, Any]], piece: dict[str, Any], position: int) -> None:
    """One ``tool_call_chunk`` added to its call (LangChain's merge: by ``index``, arguments concatenated).

    Not LangChain's own merge (``AIMessageChunk`` addition, then ``.tool_calls``): that parses
    the joined arguments with ``parse_partial_json``, which closes what is open, so a call cut
    short (``{"city": "Par``) would be served as a whole call with other arguments
    (``{"city": "Par"}``). The joined text is parsed strictly instead (`_parsed`).
    """
    key = piece.get("index") if piece.get("index") is not None else f"at {position}"
    call = pieces.setdefault(key, {"name": "", "args": "", "id": None})
    call["name"] = call["name"] or piece.get("name") or ""
    call["id"] = call["id"] or piece.get("id")
    call["args"] += piece.get("args") or ""


def _parsed(call: dict[str, Any]) -> ToolCall:
    try:
        arguments = loads(call["args"] or "{}")
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(
            f"The model's call of tool {call['name']!r} has arguments that are not JSON ({exc.msg} at character "
            f"{exc.pos}): {call['args'][:200]!r}. The model class's stream must give JSON arguments."
        ) from None
    except NotJsonNumber as exc:
        raise StructuredOutputError(f"The model's call of tool {call['name']!r} has arguments that are not JSON "
                                    f"({exc}): {call['args'][:200]!r}.") from None
    if not isinstance(arguments, dict):
        raise StructuredOutputError(f"The model's call of tool {call['name']!r} has arguments that are not a JSON "
                                    f"object: {call['args'][:200]!r}.")
    return _call(call["name"], arguments, call["id"])


def _call(name: str | None, arguments: dict[str, Any], call_id: str | None) -> ToolCall:
    why = non_json_reason(arguments)
    if why is not None:  # served as a JSON string, which no client could read back
        raise StructuredOutputError(f"The model's call of tool {name!r} has arguments that cannot be written as "
                                    f"JSON: {why}.")
    return ToolCall(name or "", arguments, *([call_id] if call_id else []))


def _has_logprob(entry: Any) -> bool:
    """An OpenAI-shaped logprob entry (a class may write its own shape: those are left out)."""
    return isinstance(entry, dict) and isinstance(entry.get("token"), str) and isinstance(
        entry.get("logprob"), (int, float))


def _logprob(entry: dict[str, Any]) -> TokenLogprob:
    top = tuple((t["token"], t["logprob"]) for t in entry.get("top_logprobs") or [] if _has_logprob(t))
    return TokenLogprob(entry["token"], entry["logprob"], top)
