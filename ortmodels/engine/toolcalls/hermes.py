"""Hermes-style calls (Qwen2.5, Hermes, and templates written like them): the template takes
``tools`` itself, and the model writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

``auto`` leaves the model free until it writes ``<tool_call>``; from there the call is
constrained (a lazy grammar). A forced choice constrains the answer to calls from the
first token. Several calls in a row are parallel calls.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..constraints import JSON_OPTIONS, Grammar
from ..json_text import loads
from .base import CallPlan, Choice, ToolCall, ToolFormat, call_schema

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"\s*(\{.*?\})\s*(?:" + re.escape(CLOSE) + r"|$)", re.S)


class HermesFormat(ToolFormat):
    name = "hermes"

    def detect(self, template: str) -> bool:
        return OPEN in template and "tools" in template

    def prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
               choice: Choice, parallel: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return messages, {"tools": tools}

    def plan(self, tools: list[dict[str, Any]], choice: Choice, parallel: bool,
             special: frozenset[str] = frozenset()) -> CallPlan:
        def tag(text: str) -> str:  # a special token is matched as that token, else as text
            return text if text in special else json.dumps(text)

        schema = json.dumps({**call_schema(tools, choice), "x-guidance": JSON_OPTIONS})
        block = f"{tag(OPEN)} WS? call WS? {tag(CLOSE)} WS?"
        # whitespace bounded, as JSON_OPTIONS bounds it inside the call: unbounded, a small model can
        # fill the answer with tabs after the call until max_tokens instead of closing it
        rules = f"call: %json {schema}\nWS: /[ \\t\\n]{{1,8}}/\n"
        if choice == "auto":  # after the trigger: the rest of the first call, then more calls or the end
            more = f" ({block})*" if parallel else ""
            return CallPlan(Grammar("lark", f"start: WS? call WS? {tag(CLOSE)} WS?{more}\n{rules}"), trigger=OPEN)
        return CallPlan(Grammar("lark", f"start: ({block}){'+' if parallel else ''}\n{rules}"))

    def parse(self, text: str, tools: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
        calls = []
        for match in _CALL.finditer(text):
            try:
                value = loads(match.group(1))
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                arguments = value.get("arguments") or {}
                if isinstance(arguments, str):  # some models write the arguments as a JSON string
                    try:
                        arguments = loads(arguments)
                    except (ValueError, RecursionError):
                        continue
                calls.append(ToolCall(value["name"], arguments))
        if OPEN not in text:
            return text, calls
        content = text[: text.find(OPEN)]  # what follows is calls (a cut one too): never content
        return content.strip(), calls
