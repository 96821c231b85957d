"""The generic format, for templates that know no tools (SmolLM2's, say), as llama.cpp's:
the tools are described in a system message and every answer is one JSON object, either
``{"tool_call": {"name", "arguments"}}`` (``"tool_calls": [...]`` when parallel calls are
allowed) or ``{"response": "..."}``; the grammar holds it to that from the first token."""

from __future__ import annotations

import json
import re
from typing import Any

from ..constraints import Grammar
from .base import (
    CallPlan,
    Choice,
    ToolCall,
    ToolFormat,
    call_schema,
    function,
    parse_json,
)

_RESPONSE = re.compile(r'\s*\{\s*"response"\s*:\s*"')


def cut_response(text: str) -> str:
    """The answer's text so far from an answer cut before its end: the ``response`` string
    when the cut came inside one, else nothing (a cut call is no answer). The JSON around it
    is the format's wrapper and never the content."""
    start = _RESPONSE.match(text)
    if start is None:
        return ""
    body = text[start.end():]
    decoder = json.JSONDecoder()
    candidates = [f'"{body}', *(f'"{body[:end]}"' for end in range(len(body), max(-1, len(body) - 6), -1))]
    for candidate in candidates:  # the whole string if it closed, else cut: a cut escape (\u12) is dropped
        try:
            return str(decoder.raw_decode(candidate)[0])
        except json.JSONDecodeError:
            continue
    return ""


_CALLS = re.compile(r'\s*\{\s*"tool_calls"\s*:\s*\[')


def cut_calls(text: str) -> list[ToolCall]:
    """The whole calls of a ``tool_calls`` list cut before its end (``max_tokens`` reached while
    the model wrote a later call): those it finished are answers a client can run, as
    Anthropic's and OpenAI's APIs return them with the cut."""
    start = _CALLS.match(text)
    if start is None:
        return []
    decoder, at, calls = json.JSONDecoder(), start.end(), []
    while True:
        at = len(text) - len(text[at:].lstrip())
        try:
            value, at = decoder.raw_decode(text, at)
        except (json.JSONDecodeError, RecursionError):
            return calls  # the cut one, or nothing more
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            arguments = value.get("arguments")
            calls.append(ToolCall(value["name"], arguments if isinstance(arguments, dict) else {}))
        rest = text[at:].lstrip()
        if not rest.startswith(","):
            return calls
        at = len(text) - len(rest) + 1


_INSTRUCTIONS = (
    "You can call these tools:\n{tools}\n\n"
    "Answer with one JSON object and nothing else: {shape}"
)


class GenericFormat(ToolFormat):
    name = "generic"

    def detect(self, template: str) -> bool:
        return True  # the fallback for every template

    def _shape(self, choice: Choice, parallel: bool) -> str:
        call = '{"name": <tool name>, "arguments": {<arguments>}}'
        calls = f'{{"tool_calls": [{call}, ...]}}' if parallel else f'{{"tool_call": {call}}}'
        if choice == "auto":
            return f'{calls} to call a tool, or {{"response": "<your answer>"}} to answer directly.'
        return f"{calls}."

    def prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
               choice: Choice, parallel: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        listing = "\n".join(json.dumps(function(t), ensure_ascii=False) for t in tools)
        text = _INSTRUCTIONS.format(tools=listing, shape=self._shape(choice, parallel))
        if messages and messages[0]["role"] == "system":
            first = {**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}
            return [first, *messages[1:]], {}
        return [{"role": "system", "content": text}, *messages], {}

    def plan(self, tools: list[dict[str, Any]], choice: Choice, parallel: bool,
             special: frozenset[str] = frozenset()) -> CallPlan:
        one = call_schema(tools, choice)
        defs = one.pop("$defs", None)  # the parameters' definitions: at the root of what `one` is nested in
        if parallel:
            calls: dict[str, Any] = {"type": "object", "properties": {"tool_calls": {
                "type": "array", "items": one, "minItems": 1}}, "required": ["tool_calls"],
                "additionalProperties": False}
        else:
            calls = {"type": "object", "properties": {"tool_call": one}, "required": ["tool_call"],
                     "additionalProperties": False}
        if choice == "auto":
            response = {"type": "object", "properties": {"response": {"type": "string"}},
                        "required": ["response"], "additionalProperties": False}
            calls = {"anyOf": [calls, response]}
        return CallPlan(Grammar("json_schema", {**calls, "$defs": defs} if defs else calls))

    def parse(self, text: str, tools: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
        value = parse_json(text)
        if not isinstance(value, dict):  # the grammar held it, so it was cut (max_tokens): never the wrapper
            calls = cut_calls(text)
            return ("", calls) if calls else (cut_response(text), [])
        if isinstance(value.get("response"), str):
            return value["response"], []
        raw = value.get("tool_calls") if isinstance(value.get("tool_calls"), list) else [value.get("tool_call")]
        calls = [ToolCall(c["name"], c.get("arguments") or {}) for c in raw
                 if isinstance(c, dict) and isinstance(c.get("name"), str)]
        return ("", calls) if calls else (text, [])

    def history_call(self, content: str, calls: list[ToolCall]) -> dict[str, Any]:
        if len(calls) == 1:
            body: dict[str, Any] = {"tool_call": {"name": calls[0].name, "arguments": calls[0].arguments}}
        else:
            body = {"tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls]}
        return {"role": "assistant", "content": json.dumps(body, ensure_ascii=False)}

    def history_result(self, content: str, call_id: str | None, name: str | None, error: bool) -> dict[str, Any]:
        key = "tool_error" if error else "tool_response"
        body = {key: {"name": name, "content": content}}
        return {"role": "user", "content": json.dumps(body, ensure_ascii=False)}
