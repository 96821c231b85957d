"""``/v1/chat/completions``: OpenAI's messages and options → the chat service's → OpenAI chunks.

The route only maps: the model's chat service renders the template, fits the context,
resolves the options, builds the grammar for tools or a ``response_format`` and runs the
request on the engine, whose decode steps every concurrent request shares. Streamed or not,
the answer is read from the same events (`ortmodels.runtime.events`), so both say the same
thing; no LangChain object is made on the way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from ..engine.json_text import NotJsonNumber, loads
from ..errors import ChatInputError
from ..runtime.events import (
    ChatEvent,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolCalls,
    arguments_json,
)
from ..runtime.options import (
    TEMPLATE_OPTIONS,
    ChatOptions,
    ReasoningOptions,
    effort_options,
)
from .errors import bad_request
from .generation import NO_USAGE, Answer, answers_a_call, finish_reason, service_options, settled, usage_of
from .grammar import constraint
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
    if not content:  # as OpenAI's API: an empty list is not an absent content
        raise bad_request(f"messages[{index}].content is an empty list; give a string or at least one "
                          "{'type': 'text', 'text': ...} part.", f"messages[{index}].content")
    parts = []
    for number, part in enumerate(content):
        kind = part.get("type")
        if kind in ("text", "refusal"):
            if not isinstance(part.get(kind), str):
                raise bad_request(f"messages[{index}].content[{number}].{kind} must be a string.",
                                  f"messages[{index}].content[{number}].{kind}")
            parts.append(part[kind])
        else:
            raise bad_request(f"messages[{index}].content[{number}] is of type {kind!r}; this server's models "
                              "read text only ({'type': 'text', 'text': ...}).", f"messages[{index}].content")
    return "".join(parts)


def parse_arguments(arguments: str | None, where: str, param: str) -> dict[str, Any]:
    """A tool call's arguments sent back by a client (a JSON object in a string) as a dict; else a
    400 naming ``where``."""
    try:
        args = loads(arguments or "{}")
    except NotJsonNumber as exc:
        raise bad_request(f"{where} must be a JSON object in a string: {exc}.", param) from None
    except (ValueError, RecursionError):
        args = None
    if not isinstance(args, dict):
        raise bad_request(f"{where} must be a JSON object in a string.", param)
    return args


def _calls(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    calls = []
    for number, call in enumerate(message.tool_calls or []):
        args = parse_arguments(call.function.arguments, f"messages[{index}].tool_calls[{number}].function.arguments",
                               f"messages[{index}].tool_calls")
        calls.append({"name": call.function.name, "arguments": args, "id": call.id})  # none: the template names it
    return calls


def to_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages as the chat service's message dicts (``developer`` is a system message)."""
    converted: list[dict[str, Any]] = []
    called: tuple[int, set[str] | None] | None = None  # the last assistant turn: its index, its calls' ids
    for index, message in enumerate(messages):
        text = _text(message, index)
        if message.role in ("system", "developer"):
            converted.append({"role": "system", "content": text})
        elif message.role == "user":
            converted.append({"role": "user", "content": text})
        elif message.role == "assistant":
            converted.append({"role": "assistant", "content": text, "tool_calls": _calls(message, index)})
            given = [call.id for call in message.tool_calls or []]
            called = (index, None if not all(given) else set(given))  # None: a call without an id matches any
        else:
            if not message.tool_call_id:
                raise bad_request(f"messages[{index}] is a tool message without tool_call_id.",
                                  f"messages[{index}].tool_call_id")
            answers_a_call(message.tool_call_id, called, f"messages[{index}].tool_call_id", "messages", "tool_calls")
            converted.append({"role": "tool", "content": text, "tool_call_id": message.tool_call_id,
                              "name": message.name})
    return converted


def chat_options(request: ChatCompletionRequest) -> ChatOptions:
    """The chat service's options for a chat body (OpenAI's spellings and shapes mapped to its own)."""
    if request.top_logprobs is not None and not request.logprobs:
        raise bad_request("top_logprobs needs logprobs: true.", "top_logprobs")
    choice = request.tool_choice
    if choice not in (None, "none", "auto") and not request.tools:
        raise bad_request("tool_choice needs tools: give tools, or leave tool_choice out.", "tool_choice")
    options: dict[str, Any] = {}
    if request.logprobs:
        options["logprobs"] = True
        options["top_logprobs"] = request.top_logprobs or 0
    if request.tools:
        options["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
        options["tool_choice"] = choice.model_dump() if hasattr(choice, "model_dump") else choice
        if request.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = request.parallel_tool_calls
    if (given := constraint(request)) is not None:  # response_format, structured_outputs, grammar, json_schema
        options["response_format"] = given[1]
    options.update(_reasoning_options(request))
    return service_options(request, request.max_completion_tokens or request.max_tokens, **options)


def _reasoning_options(request: ChatCompletionRequest) -> dict[str, Any]:
    """The body's `ReasoningOptions`, at its top level or (the template's variables among them)
    in ``chat_template_kwargs``, as vLLM and llama-server take ``enable_thinking``, and OpenAI's
    ``reasoning_effort`` (`with_effort`)."""
    given = {name: value for name in ReasoningOptions.model_fields if (value := getattr(request, name)) is not None}
    for key, value in (request.chat_template_kwargs or {}).items():
        if key not in TEMPLATE_OPTIONS:
            raise bad_request(f"chat_template_kwargs has {key!r}; this server takes {', '.join(TEMPLATE_OPTIONS)} "
                              "there.", "chat_template_kwargs")
        if given.get(key, value) != value:
            raise bad_request(f"{key} and chat_template_kwargs.{key} disagree; give one.", "chat_template_kwargs")
        given[key] = value
    return with_effort(given, request.reasoning_effort, "reasoning_effort")


def with_effort(given: dict[str, Any], effort: str | None, where: str) -> dict[str, Any]:
    """``given`` `ReasoningOptions` with a ``reasoning_effort`` level's (`effort_options`) under
    them: a budget given beside a level refines it; thinking switched the other way is a 400."""
    if effort is None:
        return given
    try:
        level = effort_options(effort, where)
    except ChatInputError as exc:
        raise bad_request(str(exc), where) from None
    said = ReasoningOptions.model_validate(given).thinking()
    if said is not None and said != level["enable_thinking"]:
        names = [name for name in given if name in ReasoningOptions.model_fields]
        on, off = ("on", "off") if level["enable_thinking"] else ("off", "on")
        verb = "turns" if len(names) == 1 else "turn"
        raise bad_request(f"{where}={effort!r} turns thinking {on} but {' and '.join(names)} {verb} it {off}: give "
                          "one of them.", where)
    return {**level, **given}


def _tool_calls(event: ToolCalls, start: int) -> list[ResponseToolCall]:
    return [ResponseToolCall(index=start + n, id=c.id or f"call_{uuid.uuid4().hex[:24]}",
                             function=FunctionCall(name=c.name, arguments=arguments_json(c)))
            for n, c in enumerate(event.calls)]


def _logprobs(event: ChatEvent) -> dict[str, Any] | None:
    """The event's tokens' log-probabilities (``{"content": [...]}``), when they were asked for."""
    if isinstance(event, TextDelta) and event.logprobs:
        return {"content": [entry.openai() for entry in event.logprobs]}
    return None


def _content(event: ChatEvent) -> str:
    return event.text if isinstance(event, TextDelta) else event.content if isinstance(event, ToolCalls) else ""


def _reasoning(event: ChatEvent) -> str:
    return event.text if isinstance(event, ReasoningDelta) else ""


class ChatAnswer(Answer):
    """One chat answer, whole or streamed, read from the model's events."""

    prefix = "chatcmpl"

    async def complete(self, events: AsyncIterator[ChatEvent]) -> dict[str, Any]:
        """The whole answer, gathered from the stream."""
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ResponseToolCall] = []
        logprobs: list[dict[str, Any]] | None = None
        reason, usage = None, None
        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                text.append(_content(item))
                reasoning.append(_reasoning(item))
                if (entries := _logprobs(item)) is not None:
                    logprobs = [*(logprobs or []), *entries["content"]]
                if isinstance(item, ToolCalls):
                    calls.extend(_tool_calls(item, len(calls)))
                reason = finish_reason(item) or reason
                usage = usage_of(item) if isinstance(item, Finished) else usage
        reason = settled(reason)
        for call in calls:
            call.index = None
        content = "".join(text)
        message = ResponseMessage(content=content if content or not calls else None, tool_calls=calls or None,
                                  reasoning_content="".join(reasoning) or None)
        answer = ChatCompletion(id=self.id, created=self.created, model=self.model,
                                choices=[ChatChoice(message=message, finish_reason=reason)],
                                usage=usage or NO_USAGE)
        choice_logprobs = {"content": logprobs} if logprobs is not None else None
        choice = answer.choices[0].model_dump(exclude_none=True)
        # OpenAI's message always has content and refusal (null when there is none): raw-JSON clients index them
        choice["message"] = {"role": "assistant", "content": message.content, "refusal": None, **choice["message"]}
        return answer.model_dump(exclude_none=True) | {"choices": [{**choice, "logprobs": choice_logprobs}]}

    def _chunk(self, delta: Delta, reason: str | None = None, logprobs: dict[str, Any] | None = None) -> str:
        payload = ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                      choices=[ChunkChoice(delta=delta, finish_reason=reason, logprobs=logprobs)])
        body = payload.model_dump(exclude_none=True)
        body["choices"][0]["finish_reason"] = reason
        return event(body)

    async def stream(self, events: AsyncIterator[ChatEvent], include_usage: bool) -> AsyncIterator[str]:
        """SSE events: the role, content and tool-call deltas, the finish reason, usage, [DONE]."""
        started = False
        calls = 0
        reason, usage = None, None
        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                if not started:  # after the first event: a refused request never opens the stream
                    yield self._chunk(Delta(role="assistant", content=""))
                    started = True
                if thought := _reasoning(item):
                    yield self._chunk(Delta(reasoning_content=thought))
                entries = _logprobs(item)
                if (content := _content(item)) or entries:
                    yield self._chunk(Delta(content=content), logprobs=entries)
                if isinstance(item, ToolCalls) and item.calls:
                    deltas = _tool_calls(item, calls)
                    calls += len(deltas)
                    yield self._chunk(Delta(tool_calls=deltas))
                reason = finish_reason(item) or reason
                usage = usage_of(item) if isinstance(item, Finished) else usage
        yield self._chunk(Delta(), settled(reason) or "stop")
        if include_usage:
            final = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[],
                                        usage=usage or NO_USAGE)
            yield event(final.model_dump(exclude_none=True) | {"choices": []})
        yield DONE
