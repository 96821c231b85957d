"""``/v1/responses``: OpenAI's Responses API items and options → the chat service's → response
objects and streaming events.

The route only maps, as ``/v1/chat/completions`` does (`serve.chat`): input items become the
service's message dicts (``instructions`` a system message first, ``function_call`` items an
assistant turn's calls, ``function_call_output`` items tool results), ``tools`` /
``tool_choice`` / ``text.format`` / ``max_output_tokens`` its `ChatOptions`; its events become
output items (a reasoning model's ``reasoning`` first, its text as ``reasoning_text`` content,
then one ``message``, then one ``function_call`` per call), whole or as the API's events, each
with its ``sequence_number``; a stream that fails after it started ends with ``error`` and
``response.failed``, as OpenAI ends one. ``reasoning.effort`` is read as chat's
``reasoning_effort``. A response made with ``store`` (the default) is kept in the server's
`ResponseStore` with its conversation, so ``previous_response_id`` continues it; one the store
does not keep (turned off, or larger than its whole byte bound) says ``store: false`` (a stream's
``created`` event, sent before the answer's size is known, says what was asked).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ..engine.toolcalls import ToolCall
from ..errors import ChatInputError
from ..runtime.events import (
    ChatEvent,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolCalls,
    arguments_json,
)
from ..runtime.options import ChatOptions, ReasoningOptions
from .chat import parse_arguments, with_effort
from .errors import Spelling, bad_request, from_exception
from .generation import Answer, finish_reason, service_options, settled
from .protocol_responses import ResponsesRequest
from .response_store import ResponseStore, StoredResponse
from .sse import event

#: Message roles an input item may have, and the service's role for each.
_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


def _parts_text(content: Any, kinds: tuple[str, ...], where: str) -> str:
    """A string, or text parts of ``kinds`` joined; other parts (images, files, audio) are refused."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts such as "
                          f"{{'type': '{kinds[0]}', 'text': ...}}.", where)
    texts = []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        key = "refusal" if kind == "refusal" else "text"
        if kind not in kinds:
            raise bad_request(f"{where}[{number}] is of type {kind!r:.40}; this server's models read text only "
                              f"({{'type': '{kinds[0]}', 'text': ...}}).", where)
        if not isinstance(part.get(key), str):
            raise bad_request(f"{where}[{number}] ({kind}) has no string {key!r}; give "
                              f"{{'type': '{kind}', '{key}': ...}}.", where)
        texts.append(part[key])
    return "".join(texts)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{where}.{key} is missing or not a string; a {item.get('type')} item needs it.",
                          f"{where}.{key}")
    return value


def input_messages(given: str | list[dict[str, Any]],
                   earlier: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The input as the chat service's message dicts: a string is one user message; items are
    messages (``developer`` is a system message), ``function_call`` (joined to the assistant turn
    just before it) and ``function_call_output`` (a tool result); ``reasoning`` items a client
    sends back are taken and not shown to the model (as Qwen3's template drops earlier turns'
    reasoning, and chat's ``reasoning_content``). A ``function_call_output`` answers a call made
    before it, in this input or in ``earlier`` (the previous response's conversation)."""
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not given:
        raise bad_request("input is an empty list: give a string, or at least one item such as "
                          "{'role': 'user', 'content': 'Hi'}.", "input")
    messages: list[dict[str, Any]] = []
    made = {call["id"] for message in earlier for call in message.get("tool_calls") or ()}
    for index, item in enumerate(given):
        where = f"input[{index}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _ROLES:
                raise bad_request(f"{where}.role is {role!r:.40}; give user, system, developer or assistant.",
                                  f"{where}.role")
            kinds = ("output_text", "refusal", "input_text") if role == "assistant" else ("input_text",)
            text = _parts_text(item.get("content"), kinds, f"{where}.content")
            messages.append({"role": _ROLES[role], "content": text,
                             **({"tool_calls": []} if role == "assistant" else {})})
        elif kind == "function_call":
            call = {"name": _string(item, "name", where), "id": _string(item, "call_id", where),
                    "arguments": parse_arguments(item.get("arguments"), f"{where}.arguments", f"{where}.arguments")}
            made.add(call["id"])
            if messages and messages[-1]["role"] == "assistant":
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", where)
            if call_id not in made:  # OpenAI's "No tool call found for function call output with call_id"
                raise bad_request(f"{where}.call_id {call_id!r:.80} answers no function_call of this input or of "
                                  "the previous response: send the call's item (or its previous_response_id) "
                                  "before its output.", f"{where}.call_id")
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": _parts_text(item.get("output"), ("input_text",), f"{where}.output")})
        elif kind != "reasoning":
            raise bad_request(f"{where} is an item of type {kind!r:.40}; this server reads message, function_call, "
                              "function_call_output and reasoning items.", f"{where}.type")
    if not messages:
        raise bad_request("input has only reasoning items: give at least one message, such as "
                          "{'role': 'user', 'content': 'Hi'}.", "input")
    return messages


#: Where a Responses body's structured output is (a schema that cannot compile is a 400 naming it).
FORMAT_FIELD = "text.format.schema"


def response_options(body: ResponsesRequest) -> ChatOptions:
    """The chat service's options for a Responses body."""
    output: dict[str, Any] = {}
    if body.tools:
        output["tools"] = body.tools
        output["tool_choice"] = body.tool_choice
        if body.parallel_tool_calls is not None:
            output["parallel_tool_calls"] = body.parallel_tool_calls
    try:
        response_format = body.format().response_format()
    except ChatInputError as exc:
        raise bad_request(str(exc), FORMAT_FIELD) from None
    if response_format is not None:
        output["response_format"] = response_format
    given = {name: value for name in ReasoningOptions.model_fields if (value := getattr(body, name)) is not None}
    output.update(with_effort(given, body.reasoning.effort if body.reasoning else None, "reasoning.effort"))
    if body.truncation == "auto":  # OpenAI's spelling of truncate_prompt
        output["truncate_prompt"] = True
    return service_options(body, body.max_output_tokens, **output)


@dataclass(frozen=True)
class Turn:
    """One request's conversation and options, read before it is admitted."""

    messages: list[dict[str, Any]]
    """What the model reads: the instructions, the earlier turns, this input."""
    history: list[dict[str, Any]]
    """The same without the instructions: what is kept with the answer."""
    options: ChatOptions


def prepare(body: ResponsesRequest, store: ResponseStore) -> Turn:
    """The turn a body asks for: ``previous_response_id``'s conversation (a 400 naming it, as
    OpenAI's, if it is not kept) with this input after it, and this request's instructions first."""
    history = []
    if body.previous_response_id is not None:
        history = list(store.previous(body.previous_response_id).messages)
    history += input_messages(body.input, history)
    instructions = [{"role": "system", "content": body.instructions}] if body.instructions else []
    return Turn(instructions + history, history, response_options(body))


def _usage(finished: Finished | None) -> dict[str, Any] | None:
    if finished is None:
        return None
    usage = finished.usage
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            # the prompt cache counts the tokens it gave, not those it keeps: no writes are reported
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


@dataclass
class _Output:
    """The answer as it arrives: its reasoning, its text, its calls, why it ended and what it cost."""

    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    reasoning_id: str = field(default_factory=lambda: f"rs_{uuid.uuid4().hex}")
    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    reason: str | None = None
    finished: Finished | None = None

    def read(self, item: ChatEvent) -> tuple[str, str]:
        """Take one event; the reasoning and the answer text it adds."""
        thought = item.text if isinstance(item, ReasoningDelta) else ""
        text = item.text if isinstance(item, TextDelta) else item.content if isinstance(item, ToolCalls) else ""
        self.reasoning.append(thought)
        self.text.append(text)
        if isinstance(item, ToolCalls):
            self.calls.extend(item.calls)
            self.call_ids.extend(f"fc_{uuid.uuid4().hex}" for _ in item.calls)
        self.reason = finish_reason(item) or self.reason
        if isinstance(item, Finished):
            self.finished = item
        return thought, text

    @property
    def cut(self) -> bool:
        return self.reason == "length"

    @property
    def has_reasoning(self) -> bool:
        return bool("".join(self.reasoning))

    @property
    def has_message(self) -> bool:
        """A message item: the answer's text, or an empty one when there is no call either."""
        return bool("".join(self.text)) or not self.calls

    @property
    def message_index(self) -> int:
        """The message's place in the output: after the reasoning (which always comes first)."""
        return int(self.has_reasoning)

    def part(self) -> dict[str, Any]:
        return {"type": "output_text", "text": "".join(self.text), "annotations": [], "logprobs": []}

    def reasoning_part(self) -> dict[str, Any]:
        return {"type": "reasoning_text", "text": "".join(self.reasoning)}

    def reasoning_item(self, status: str | None = None) -> dict[str, Any]:
        """The model's reasoning, whole as its ``reasoning_text`` content (no summary is made)."""
        status = status or ("incomplete" if self.cut and not "".join(self.text) and not self.calls else "completed")
        content = [self.reasoning_part()] if status != "in_progress" else []
        return {"id": self.reasoning_id, "type": "reasoning", "summary": [], "content": content, "status": status}

    def message(self, status: str | None = None) -> dict[str, Any]:
        status = status or ("incomplete" if self.cut else "completed")
        content = [self.part()] if status != "in_progress" else []
        return {"id": self.message_id, "type": "message", "role": "assistant", "status": status, "content": content}

    def call(self, number: int, status: str = "completed") -> dict[str, Any]:
        call = self.calls[number]
        return {"id": self.call_ids[number], "type": "function_call", "call_id": call.id, "name": call.name,
                "arguments": arguments_json(call) if status == "completed" else "", "status": status}

    def items(self, status: str | None = None) -> list[dict[str, Any]]:
        """The output items, each with its own status (or ``status``: a failed answer's are incomplete)."""
        return [*([self.reasoning_item(status)] if self.has_reasoning else []),
                *([self.message(status)] if self.has_message else []),
                *(self.call(n, status or "completed") for n in range(len(self.calls)))]

    def assistant(self) -> dict[str, Any]:
        """The answer as the service's assistant message, for the conversation kept with it (its
        reasoning left out, as the template leaves out earlier turns')."""
        return {"role": "assistant", "content": "".join(self.text),
                "tool_calls": [{"name": c.name, "arguments": c.arguments, "id": c.id} for c in self.calls]}


#: The Responses API's names for the options a prompt past the context names.
RESPONSES_SPELLING = Spelling({"max_tokens": "max_output_tokens", "messages": "input"},
                              'set "truncation": "auto"')


class ResponseAnswer(Answer):
    """One response, whole or streamed, read from the model's events, and kept once answered."""

    spelling = RESPONSES_SPELLING

    def __init__(self, model_id: str, body: ResponsesRequest, turn: Turn, store: ResponseStore) -> None:
        super().__init__(model_id)
        self.id = f"resp_{uuid.uuid4().hex}"
        self.body, self.turn, self.store = body, turn, store
        self._sequence = 0
        self._stores = body.store is not False and store.enabled
        """What the response object says of ``store``: false once the store did not keep it."""
        self._output: _Output | None = None
        """The streamed answer so far (what a failed stream's ``response.failed`` carries)."""

    def _response(self, status: str, output: _Output | None = None) -> dict[str, Any]:
        """The response object: ``in_progress`` with no output yet, or as it ended (``output`` given)."""
        body = self.body
        ended = output is not None and status != "failed"
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": self.model,
            "output": output.items("incomplete" if status == "failed" else None) if output is not None else [],
            "parallel_tool_calls": bool(body.parallel_tool_calls),
            "previous_response_id": body.previous_response_id, "store": self._stores,
            "temperature": body.temperature, "top_p": body.top_p, "text": {"format": body.format().echo()},
            "tool_choice": body.tool_choice or "auto", "tools": body.tool_dicts(),
            "truncation": "auto" if body.truncation == "auto" or body.truncate_prompt else "disabled",
            "usage": _usage(output.finished) if ended and output is not None else None, "user": body.user,
            "metadata": body.metadata or {},
            **({"reasoning": body.reasoning.echo()} if body.reasoning is not None else {}),
        }

    def _final(self, output: _Output) -> dict[str, Any]:
        """The finished response, kept (unless ``store: false``) with its conversation; one the
        store did not keep says ``store: false``."""
        response = self._response("incomplete" if output.cut else "completed", output)
        if self._stores and not self.store.put(StoredResponse(response, [*self.turn.history, output.assistant()])):
            self._stores = response["store"] = False
        return response

    async def complete(self, events: AsyncIterator[ChatEvent]) -> dict[str, Any]:
        """The whole response, gathered from the stream."""
        output = _Output()
        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                output.read(item)
        settled(output.reason)
        return self._final(output)

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return f"event: {kind}\n{event(payload)}"

    def _reasoning_events(self, output: _Output, opening: bool) -> list[str]:
        """The events that open the reasoning item (always the first, ``output_index`` 0) or close it."""
        where = {"item_id": output.reasoning_id, "output_index": 0, "content_index": 0}
        if opening:
            return [self._event("response.output_item.added", output_index=0,
                                item=output.reasoning_item("in_progress")),
                    self._event("response.content_part.added", **where, part={**output.reasoning_part(), "text": ""})]
        return [self._event("response.reasoning_text.done", **where, text="".join(output.reasoning)),
                self._event("response.content_part.done", **where, part=output.reasoning_part()),
                self._event("response.output_item.done", output_index=0, item=output.reasoning_item())]

    def _message_events(self, output: _Output, opening: bool) -> list[str]:
        """The events that open the message item (``opening``) or close it."""
        index = output.message_index
        where = {"item_id": output.message_id, "output_index": index}
        if opening:
            return [self._event("response.output_item.added", output_index=index, item=output.message("in_progress")),
                    self._event("response.content_part.added", **where, content_index=0,
                                part={**output.part(), "text": ""})]
        return [self._event("response.output_text.done", **where, content_index=0, text="".join(output.text),
                            logprobs=[]),
                self._event("response.content_part.done", **where, content_index=0, part=output.part()),
                self._event("response.output_item.done", output_index=index, item=output.message())]

    def _call_events(self, output: _Output, number: int, index: int) -> list[str]:
        """One function call's events (its arguments arrive whole: the answer is read at its end)."""
        item = output.call(number)
        where = {"item_id": item["id"], "output_index": index}
        return [self._event("response.output_item.added", output_index=index, item=output.call(number, "in_progress")),
                self._event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
                self._event("response.function_call_arguments.done", **where, name=item["name"],
                            arguments=item["arguments"]),
                self._event("response.output_item.done", output_index=index, item=item)]

    async def stream(self, events: AsyncIterator[ChatEvent], include_usage: bool = False) -> AsyncIterator[str]:
        """The Responses API's events: created, in_progress, the reasoning's deltas (a reasoning
        model's), the message's text deltas, each call, then completed (or incomplete, cut by
        ``max_output_tokens``) with the whole response."""
        output = self._output = _Output()
        started = False
        opened: list[str] = []  # the items opened so far: "reasoning", then "message"
        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                if not started:  # after the first event: a refused request never opens the stream
                    yield self._event("response.created", response=self._response("in_progress"))
                    yield self._event("response.in_progress", response=self._response("in_progress"))
                    started = True
                thought, text = output.read(item)
                lines: list[str] = []
                if thought:
                    if not opened:
                        lines += self._reasoning_events(output, opening=True)
                        opened.append("reasoning")
                    lines.append(self._event("response.reasoning_text.delta", item_id=output.reasoning_id,
                                             output_index=0, content_index=0, delta=thought))
                if text:
                    if "message" not in opened:
                        lines += [*self._close_reasoning(output, opened), *self._message_events(output, opening=True)]
                        opened.append("message")
                    lines.append(self._event("response.output_text.delta", item_id=output.message_id,
                                             output_index=output.message_index, content_index=0, delta=text,
                                             logprobs=[]))
                for line in lines:
                    yield line
        settled(output.reason)
        for line in self._close_reasoning(output, opened):
            yield line
        if output.has_message:
            for line in [*([] if "message" in opened else self._message_events(output, opening=True)),
                         *self._message_events(output, opening=False)]:
                yield line
        first_call = output.message_index + int(output.has_message)
        for number in range(len(output.calls)):
            for line in self._call_events(output, number, first_call + number):
                yield line
        response = self._final(output)
        yield self._event(f"response.{response['status']}", response=response)

    def _close_reasoning(self, output: _Output, opened: list[str]) -> list[str]:
        """The reasoning item's closing events, once, when it is open and nothing came after it."""
        if opened != ["reasoning"]:
            return []
        opened.append("reasoning closed")
        return self._reasoning_events(output, opening=False)

    def error_events(self, exc: BaseException) -> list[str]:
        """OpenAI's end of a stream that failed after it started: an ``error`` event (the error's
        code, message and param), then ``response.failed``, whose response carries the error and
        the output so far (its items incomplete). A failed response is not kept."""
        error = from_exception(exc, self.spelling)
        response = self._response("failed", self._output or _Output())
        # the response's error code is one of OpenAI's fixed list; the event before it has ours
        response["error"] = {"code": "server_error", "message": error.message}
        return [self._event("error", code=error.code or error.type, message=error.message, param=error.param),
                self._event("response.failed", response=response)]
