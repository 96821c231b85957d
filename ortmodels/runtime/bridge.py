"""A user's own LangChain chat class seen as a chat service: for the server, when a class has
no ``achat_events`` (only `OnnxChatModel` has one; the server imports this module only then).

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

from ..engine.toolcalls import ToolCall
from .events import ChatEvent, Finished, TextDelta, TokenLogprob, ToolCalls, Usage
from .options import ChatOptions

_METHODS = {"achat_events": "astream", "atext_events": "astream_text"}


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
    kwargs = options.model_dump(exclude_none=True, exclude={"stop", "truncate_prompt"})
    source = getattr(model, _METHODS[method])
    chunks = source(to_langchain(given) if method == "achat_events" else given, stop=options.stop or None, **kwargs)
    reason: str | None = None
    usage = Usage(0, 0, 0)
    first: float | None = None
    metadata: dict[str, Any] = {}
    async with aclosing(chunks):
        async for chunk in chunks:
            content = chunk.content if isinstance(chunk.content, str) else ""
            metadata = chunk.response_metadata or {}
            if calls := _calls(chunk):
                yield ToolCalls(content, calls)
            elif content or (metadata.get("logprobs") or {}).get("content"):
                entries = (metadata.get("logprobs") or {}).get("content") or []
                yield TextDelta(content, tuple(TokenLogprob(e["token"], e["logprob"], tuple(
                    (t["token"], t["logprob"]) for t in e.get("top_logprobs") or [])) for e in entries))
            reason = metadata.get("finish_reason") or reason
            first = metadata.get("time_to_first_token_s", first)
            if meta := chunk.usage_metadata:
                cached = (meta.get("input_token_details") or {}).get("cache_read") or 0
                usage = Usage(meta["input_tokens"], meta["output_tokens"], cached)
    yield Finished(reason or "stop", usage, first, metadata.get("variant"), metadata.get("device"))


def _calls(chunk: Any) -> tuple[ToolCall, ...]:
    """A chunk's tool calls: whole (``tool_call_chunks``), or a message's (a class without a
    stream of its own answers ``astream`` with its whole ``AIMessage``)."""
    found = [(c.get("name"), json.loads(c.get("args") or "{}"), c.get("id"))
             for c in getattr(chunk, "tool_call_chunks", None) or []]
    if not found:
        found = [(c["name"], c.get("args") or {}, c.get("id")) for c in getattr(chunk, "tool_calls", None) or []]
    return tuple(ToolCall(name or "", args, *([call_id] if call_id else [])) for name, args, call_id in found)
