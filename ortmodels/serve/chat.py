"""``/v1/chat/completions``: OpenAI's messages → LangChain messages → the model's ``astream``.

The route only maps: the chat model renders the template, checks the options, builds the
grammar for tools or a ``response_format`` and runs the request on the engine, whose
decode steps every concurrent request shares. Streamed or not, the answer is read from
the same ``astream``, so both say the same thing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from .errors import ApiError, bad_request
from .protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    Delta,
    FunctionCall,
    ResponseMessage,
    ResponseToolCall,
    Usage,
)
from .sse import DONE, event


def _text(message: ChatMessage, index: int) -> str:
    """A message's text: a string, or text parts joined; other parts are refused."""
    content = message.content
    if content is None:
        if message.role == "assistant":
            return ""
        raise bad_request(f"messages[{index}].content is missing; a {message.role} message needs text.",
                          f"messages[{index}].content")
    if isinstance(content, str):
        return content
    parts = []
    for number, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
        else:
            raise bad_request(f"messages[{index}].content[{number}] is of type {kind!r}; this server's models "
                              "read text only ({'type': 'text', 'text': ...}).", f"messages[{index}].content")
    return "".join(parts)


def _calls(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    calls = []
    for number, call in enumerate(message.tool_calls or []):
        try:
            args = json.loads(call.function.arguments or "{}")
        except (ValueError, RecursionError):
            args = None
        if not isinstance(args, dict):
            raise bad_request(f"messages[{index}].tool_calls[{number}].function.arguments must be a JSON object "
                              "in a string.", f"messages[{index}].tool_calls")
        calls.append({"name": call.function.name, "args": args, "id": call.id or f"call_{index}_{number}",
                      "type": "tool_call"})
    return calls


def to_messages(messages: list[ChatMessage]) -> list[BaseMessage]:
    """OpenAI messages as LangChain messages (``developer`` is a system message)."""
    converted: list[BaseMessage] = []
    for index, message in enumerate(messages):
        text = _text(message, index)
        if message.role in ("system", "developer"):
            converted.append(SystemMessage(text))
        elif message.role == "user":
            converted.append(HumanMessage(text))
        elif message.role == "assistant":
            converted.append(AIMessage(text, tool_calls=_calls(message, index)))
        else:
            if not message.tool_call_id:
                raise bad_request(f"messages[{index}] is a tool message without tool_call_id.",
                                  f"messages[{index}].tool_call_id")
            converted.append(ToolMessage(text, tool_call_id=message.tool_call_id, name=message.name))
    return converted


def call_options(request: ChatCompletionRequest) -> dict[str, Any]:
    """The keyword arguments of the model's ``astream`` for this request."""
    if request.top_logprobs is not None and not request.logprobs:
        raise bad_request("top_logprobs needs logprobs: true.", "top_logprobs")
    choice = request.tool_choice
    if choice not in (None, "none", "auto") and not request.tools:
        raise bad_request("tool_choice needs tools: give tools, or leave tool_choice out.", "tool_choice")
    options: dict[str, Any] = {
        "max_tokens": request.max_completion_tokens or request.max_tokens,
        "temperature": request.temperature, "top_p": request.top_p, "seed": request.seed,
        "top_k": request.top_k, "repetition_penalty": request.repetition_penalty,
    }
    if request.logprobs:
        options["logprobs"] = True
        options["top_logprobs"] = request.top_logprobs or 0
    if request.tools:
        options["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
        options["tool_choice"] = choice.model_dump() if hasattr(choice, "model_dump") else choice
        if request.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None and request.response_format.type != "text":
        fmt = request.response_format
        if fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise bad_request("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}.",
                                  "response_format.json_schema")
            options["response_format"] = {"type": "json_schema",
                                          "json_schema": fmt.json_schema.model_dump(by_alias=True, exclude_none=True)}
        else:
            options["response_format"] = {"type": "json_object"}
    return {k: v for k, v in options.items() if v is not None}


def _usage(chunk: AIMessageChunk) -> Usage | None:
    meta = chunk.usage_metadata
    if not meta:
        return None
    cached = (meta.get("input_token_details") or {}).get("cache_read") or 0
    return Usage(prompt_tokens=meta["input_tokens"], completion_tokens=meta["output_tokens"],
                 total_tokens=meta["total_tokens"], prompt_tokens_details={"cached_tokens": cached})


def _tool_calls(chunk: AIMessageChunk, start: int) -> list[ResponseToolCall]:
    return [ResponseToolCall(index=start + n, id=c.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                             function=FunctionCall(name=c.get("name") or "", arguments=c.get("args") or "{}"))
            for n, c in enumerate(chunk.tool_call_chunks)]


def _logprobs(chunk: AIMessageChunk) -> dict[str, Any] | None:
    """The chunk's tokens' log-probabilities (``{"content": [...]}``), when they were asked for."""
    value = chunk.response_metadata.get("logprobs")
    return value if isinstance(value, dict) and value.get("content") else None


def _finish_reason(chunk: AIMessageChunk) -> str | None:
    reason = chunk.response_metadata.get("finish_reason")
    if reason == "cancelled":  # the engine closed under it: the model is being unloaded (shutdown)
        raise ApiError(503, "The request was cancelled: the model is being unloaded. Retry.", type="server_error",
                       code="unavailable", headers={"Retry-After": "1"})
    if reason == "error":
        raise ApiError(500, "The request failed inside the engine; the server log has the details.",
                       type="server_error")
    return reason


class ChatAnswer:
    """One request's identity: id, creation time and the model id it was asked of."""

    def __init__(self, model_id: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model_id

    async def complete(self, chunks: AsyncIterator[AIMessageChunk]) -> dict[str, Any]:
        """The whole answer, gathered from the stream."""
        text: list[str] = []
        calls: list[ResponseToolCall] = []
        logprobs: list[dict[str, Any]] | None = None
        reason, usage = None, None
        async with aclosing(chunks):  # a cancelled answer cancels the model's stream now
            async for chunk in chunks:
                if isinstance(chunk.content, str):
                    text.append(chunk.content)
                if (entries := _logprobs(chunk)) is not None:
                    logprobs = [*(logprobs or []), *entries["content"]]
                calls.extend(_tool_calls(chunk, len(calls)))
                reason = _finish_reason(chunk) or reason
                usage = _usage(chunk) or usage
        for call in calls:
            call.index = None
        content = "".join(text)
        message = ResponseMessage(content=content if content or not calls else None, tool_calls=calls or None)
        answer = ChatCompletion(id=self.id, created=self.created, model=self.model,
                                choices=[ChatChoice(message=message, finish_reason=reason)],
                                usage=usage or Usage(prompt_tokens=0, total_tokens=0))
        choice_logprobs = {"content": logprobs} if logprobs is not None else None
        return answer.model_dump(exclude_none=True) | {"choices": [
            {**answer.choices[0].model_dump(exclude_none=True), "logprobs": choice_logprobs}]}

    def _chunk(self, delta: Delta, reason: str | None = None, logprobs: dict[str, Any] | None = None) -> str:
        payload = ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                      choices=[ChunkChoice(delta=delta, finish_reason=reason, logprobs=logprobs)])
        body = payload.model_dump(exclude_none=True)
        body["choices"][0]["finish_reason"] = reason
        return event(body)

    async def stream(self, chunks: AsyncIterator[AIMessageChunk], include_usage: bool) -> AsyncIterator[str]:
        """SSE events: the role, content and tool-call deltas, the finish reason, usage, [DONE]."""
        started = False
        calls = 0
        reason, usage = None, None
        async with aclosing(chunks):  # a cancelled answer cancels the model's stream now
            async for chunk in chunks:
                if not started:  # after the first chunk: a refused request never opens the stream
                    yield self._chunk(Delta(role="assistant", content=""))
                    started = True
                entries = _logprobs(chunk)
                if isinstance(chunk.content, str) and (chunk.content or entries):
                    yield self._chunk(Delta(content=chunk.content), logprobs=entries)
                if chunk.tool_call_chunks:
                    deltas = _tool_calls(chunk, calls)
                    calls += len(deltas)
                    yield self._chunk(Delta(tool_calls=deltas))
                reason = _finish_reason(chunk) or reason
                usage = _usage(chunk) or usage
        yield self._chunk(Delta(), reason or "stop")
        if include_usage:
            final = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[],
                                        usage=usage or Usage(prompt_tokens=0, total_tokens=0))
            yield event(final.model_dump(exclude_none=True) | {"choices": []})
        yield DONE
