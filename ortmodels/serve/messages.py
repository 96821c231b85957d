"""``/v1/messages``: Anthropic's messages and options → the chat service's → Anthropic's content blocks.

The route only maps, as ``/v1/chat/completions`` does (`serve.chat`): the system prompt and the
content blocks become the service's message dicts (a ``tool_use`` block an assistant turn's call,
each ``tool_result`` block a tool message), the options its `ChatOptions`, and its events
Anthropic's message (text and ``tool_use`` blocks, ``stop_reason``, ``usage``) or Anthropic's
stream (``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``,
``message_stop``). Every error of these routes is Anthropic's shape (`AnthropicRoute`).

Usage as Anthropic counts it: ``input_tokens`` are the prompt tokens computed for this call,
``cache_read_input_tokens`` those taken from the prompt cache; their sum is the prompt, what
``/v1/messages/count_tokens`` gives.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..runtime.events import ChatEvent, Finished, ReasoningDelta, TextDelta, ToolCalls
from ..runtime.options import ChatOptions
from .anthropic import (
    CountTokensRequest,
    InputMessage,
    MessagesRequest,
    error_body,
    error_response,
)
from .errors import bad_request, from_exception
from .generation import Answer, answers_a_call, finish_reason, service_options, settled
from .protocols import TokenizingModel
from .sse import event

#: The service's finish reasons → Anthropic's stop reasons (``stop`` by a stop string: ``stop_sequence``).
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _blocks(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Content as blocks (a string is one text block); each block an object with a ``type``."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    for number, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise bad_request(f"{where}[{number}] has no type: give {{'type': 'text', 'text': ...}}.",
                              f"{where}[{number}].type")
    return content


def _refused(block: dict[str, Any], where: str, allowed: str) -> Exception:
    kind = block["type"]
    if kind in ("image", "document", "search_result"):
        why = f"this server's models read text only; send {allowed}"
    else:
        why = f"this server reads {allowed} here"
    return bad_request(f"{where} is of type {kind!r}: {why}.", f"{where}.type")


def _text_of(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise bad_request(f"{where}.text must be a string.", f"{where}.text")
    return text


def _system(system: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The system prompt (a string, or text blocks joined by newlines) as a system message, if given."""
    if system is None:
        return []
    texts = []
    for number, block in enumerate(_blocks(system, "system")):
        if block["type"] != "text":
            raise _refused(block, f"system[{number}]", "text blocks")
        texts.append(_text_of(block, f"system[{number}]"))
    return [{"role": "system", "content": "\n".join(texts)}]


def _result_text(block: dict[str, Any], where: str) -> str:
    """A ``tool_result``'s content: a string, or text blocks joined."""
    content = block.get("content", "")
    if content is None:
        return ""
    if not isinstance(content, (str, list)):
        raise bad_request(f"{where}.content must be a string or a list of text blocks.", f"{where}.content")
    texts = []
    for number, part in enumerate(_blocks(content, f"{where}.content")):
        if part["type"] != "text":
            raise _refused(part, f"{where}.content[{number}]", "text blocks")
        texts.append(_text_of(part, f"{where}.content[{number}]"))
    return "".join(texts)


def _user(message: InputMessage, index: int, called: tuple[int, set[str] | None] | None) -> list[dict[str, Any]]:
    """A user turn: its ``tool_result`` blocks as tool messages and its text as a user message, in
    order; each result answers a ``tool_use`` of ``called`` (the assistant turn before it)."""
    converted: list[dict[str, Any]] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            converted.append({"role": "user", "content": "".join(text)})
            text.clear()

    blocks = _blocks(message.content, f"messages[{index}].content")
    if not blocks:
        raise bad_request(f"messages[{index}].content is empty: a user turn needs a text or tool_result block.",
                          f"messages[{index}].content")
    for number, block in enumerate(blocks):
        where = f"messages[{index}].content[{number}]"
        if block["type"] == "text":
            text.append(_text_of(block, where))
        elif block["type"] == "tool_result":
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where} needs tool_use_id: the id of the tool_use block it answers.",
                                  f"{where}.tool_use_id")
            result = _result_text(block, where)
            answers_a_call(call_id, called, f"{where}.tool_use_id", "messages", "tool_use blocks")
            flush()
            converted.append({"role": "tool", "content": result, "tool_call_id": call_id,
                              "error": block.get("is_error") is True})
        else:
            raise _refused(block, where, "text and tool_result blocks")
    flush()
    return converted


def _assistant(message: InputMessage, index: int) -> dict[str, Any]:
    """An assistant turn: its text, and its ``tool_use`` blocks as the turn's calls."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for number, block in enumerate(_blocks(message.content, f"messages[{index}].content")):
        where = f"messages[{index}].content[{number}]"
        if block["type"] == "text":
            text.append(_text_of(block, where))
        elif block["type"] == "tool_use":
            name, arguments, call_id = block.get("name"), block.get("input", {}), block.get("id")
            if not isinstance(name, str) or not isinstance(arguments, dict) or not isinstance(call_id, str):
                raise bad_request(f"{where} needs id (a string), name (a string) and input (an object).", where)
            calls.append({"name": name, "arguments": arguments, "id": call_id})
        else:
            raise _refused(block, where, "text and tool_use blocks")
    return {"role": "assistant", "content": "".join(text), "tool_calls": calls}


def to_messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    """The system prompt and messages as the chat service's message dicts."""
    if body.messages[-1].role == "assistant":
        raise bad_request(f"messages[{len(body.messages) - 1}] is an assistant turn: this server does not continue "
                          "a prefilled answer; end the messages with a user turn.", "messages")
    converted = _system(body.system)
    called: tuple[int, set[str] | None] | None = None
    for index, message in enumerate(body.messages):
        if message.role == "user":
            converted.extend(_user(message, index, called))
            called = None  # a result answers the turn just before its own
        else:
            converted.append(assistant := _assistant(message, index))
            called = (index, {call["id"] for call in assistant["tool_calls"]})
    return converted


def _output(body: CountTokensRequest) -> dict[str, Any]:
    """Tools, tool choice and structured output in the chat service's spelling."""
    choice = body.tool_choice
    if choice is not None and choice.type in ("any", "tool") and not body.tools:
        raise bad_request(f"tool_choice {{'type': '{choice.type}'}} needs tools: give tools, or leave tool_choice out.",
                          "tool_choice")
    names = [t.name for t in body.tools or []]
    if choice is not None and choice.type == "tool" and choice.name not in names:
        raise bad_request(f"tool_choice {{'type': 'tool', 'name': {choice.name!r:.80}}} names no tool of this request; "
                          f"its tools: {', '.join(names)} (or give the type 'auto', 'any' or 'none').", "tool_choice")
    options: dict[str, Any] = {}
    if body.tools:
        options["tools"] = [{"type": "function", "function": {
            "name": t.name, "parameters": t.input_schema, **({"description": t.description} if t.description else {})}}
            for t in body.tools]
        if choice is not None:
            options["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type, choice.name)
            if choice.disable_parallel_tool_use is not None:
                options["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    if body.thinking is not None:
        options.update(body.thinking.options())
    if body.output_config is not None and body.output_config.format is not None:
        options["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": body.output_config.format.schema_}}
    return options


def message_options(body: MessagesRequest) -> ChatOptions:
    """The chat service's options for a messages body."""
    return service_options(body, body.max_tokens, stop=body.stop_sequences, **_output(body))


def count_options(body: CountTokensRequest) -> ChatOptions:
    """The options that shape a prompt (tools and the tool choice), for counting its tokens."""
    return ChatOptions.checked(**_output(body))


async def count_tokens(model: TokenizingModel, conversation: list[dict[str, Any]],
                       options: ChatOptions) -> dict[str, int]:
    """Anthropic's ``{"input_tokens": n}``: the prompt a call with this body reads, its tools' prompt included."""
    return {"input_tokens": len((await model.achat_tokens(conversation, options)).ids)}


def _usage(finished: Finished | None) -> dict[str, int]:
    if finished is None:  # a stream closed before its end: nothing counted
        return {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0}
    usage = finished.usage
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "output_tokens": usage.completion_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "cache_creation_input_tokens": 0}


def _stop(finished: Finished | None) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for how the answer ended."""
    if finished is None:
        return "end_turn", None
    reason = settled(finish_reason(finished)) or "stop"  # a cancelled or failed engine: its 503 / 500
    if reason == "stop" and finished.stop_sequence is not None:
        return "stop_sequence", finished.stop_sequence
    return _STOP_REASONS.get(reason, "end_turn"), None


def _tool_use(call: Any) -> dict[str, Any]:
    call_id = call.id if call.id and call.id.startswith("toolu_") else f"toolu_{uuid.uuid4().hex[:24]}"
    return {"type": "tool_use", "id": call_id, "name": call.name, "input": call.arguments}


def _named(payload: dict[str, Any]) -> str:
    """One SSE event as Anthropic sends it: ``event: <type>`` then its data."""
    return f"event: {payload['type']}\n{event(payload)}"


class MessageAnswer(Answer):
    """One Anthropic message, whole or streamed, read from the model's events."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.id = f"msg_{uuid.uuid4().hex[:24]}"

    def _message(self, content: list[dict[str, Any]], finished: Finished | None, stop: bool) -> dict[str, Any]:
        reason, sequence = _stop(finished) if stop else (None, None)
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": reason, "stop_sequence": sequence, "usage": _usage(finished)}

    async def complete(self, events: AsyncIterator[ChatEvent]) -> dict[str, Any]:
        """The whole message, gathered from the stream."""
        text: list[str] = []
        thought: list[str] = []
        calls: list[dict[str, Any]] = []
        finished: Finished | None = None
        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                if isinstance(item, ReasoningDelta):
                    thought.append(item.text)
                elif isinstance(item, TextDelta):
                    text.append(item.text)
                elif isinstance(item, ToolCalls):
                    text.append(item.content)
                    calls.extend(_tool_use(call) for call in item.calls)
                elif isinstance(item, Finished):
                    finished = item
        answer, thinking = "".join(text), "".join(thought)
        content = [{"type": "thinking", "thinking": thinking, "signature": ""}] if thinking else []
        content += [{"type": "text", "text": answer}] if answer else []
        return self._message(content + calls, finished, stop=True)

    async def stream(self, events: AsyncIterator[ChatEvent], include_usage: bool = True) -> AsyncIterator[str]:
        """Anthropic's events: ``message_start``, each block's start, deltas and stop, ``message_delta``
        (stop reason and the whole usage), ``message_stop``."""
        started, index = False, 0
        open_kind: str | None = None  # "text" or "thinking": the block the deltas go to now
        finished: Finished | None = None

        def add(kind: str, piece: str) -> list[str]:
            nonlocal open_kind
            opened = [] if open_kind == kind else [*close_text(), _named({
                "type": "content_block_start", "index": index, "content_block": (
                    {"type": "text", "text": ""} if kind == "text"
                    else {"type": "thinking", "thinking": "", "signature": ""})})]
            open_kind = kind
            delta = {"type": "text_delta", "text": piece} if kind == "text" else {"type": "thinking_delta",
                                                                                   "thinking": piece}
            return [*opened, _named({"type": "content_block_delta", "index": index, "delta": delta})]

        def text(piece: str) -> list[str]:
            return add("text", piece)

        def close_text() -> list[str]:
            nonlocal open_kind, index
            if open_kind is None:
                return []
            open_kind, index = None, index + 1
            return [_named({"type": "content_block_stop", "index": index - 1})]

        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                if not started:  # after the first event: a refused request never opens the stream
                    yield _named({"type": "message_start", "message": self._message([], None, stop=False)})
                    started = True
                pieces: list[str] = []
                if isinstance(item, ReasoningDelta) and item.text:
                    pieces = add("thinking", item.text)
                elif isinstance(item, TextDelta) and item.text:
                    pieces = text(item.text)
                elif isinstance(item, ToolCalls):
                    pieces = text(item.content) if item.content else []
                    for call in item.calls:
                        block = _tool_use(call)
                        pieces += [*close_text(),
                                   _named({"type": "content_block_start", "index": index,
                                           "content_block": {**block, "input": {}}}),
                                   _named({"type": "content_block_delta", "index": index, "delta": {
                                       "type": "input_json_delta",
                                       "partial_json": json.dumps(block["input"], ensure_ascii=False)}}),
                                   _named({"type": "content_block_stop", "index": index})]
                        index += 1
                elif isinstance(item, Finished):
                    finished = item
                for piece in pieces:
                    yield piece
        for piece in close_text():
            yield piece
        reason, sequence = _stop(finished)
        yield _named({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                      "usage": _usage(finished)})
        yield _named({"type": "message_stop"})

    def error_events(self, exc: BaseException) -> list[str]:
        """Anthropic's end of a stream that failed: one ``event: error``."""
        return [_named(error_body(from_exception(exc)))]


class AnthropicRoute(APIRoute):
    """A route whose every error (the key check, the body, the model, the engine) is answered in
    Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``, with its status."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except ClientDisconnect:
                raise  # the app's handler: nobody is there to read a body
            except Exception as exc:  # noqa: BLE001 - every error becomes Anthropic's body; the log has a bug's
                return error_response(from_exception(exc))

        return answer
