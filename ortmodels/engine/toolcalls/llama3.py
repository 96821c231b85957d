"""Llama 3.1+ JSON tool calls: the template takes ``tools`` (its "Environment: ipython"
prompt) and the model answers a call with ``{"name": ..., "parameters": {...}}``.

A forced choice constrains the answer to that JSON from the first token; ``auto`` lets the
model answer freely, and a reply that is such a JSON object is read as a call.
"""

from __future__ import annotations

from typing import Any

from ..constraints import Grammar
from .base import CallPlan, Choice, ToolCall, ToolFormat, call_schema, parse_json

_TAG = "<|python_tag|>"


class Llama3Format(ToolFormat):
    name = "llama3"

    def detect(self, template: str) -> bool:
        return ("ipython" in template or _TAG in template) and "tools" in template

    def prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
               choice: Choice, parallel: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return messages, {"tools": tools}

    def plan(self, tools: list[dict[str, Any]], choice: Choice, parallel: bool,
             special: frozenset[str] = frozenset()) -> CallPlan:
        if choice == "auto":
            return CallPlan(None)
        return CallPlan(Grammar("json_schema", call_schema(tools, choice, args_key="parameters")))

    def parse(self, text: str, tools: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
        value = parse_json(text.replace(_TAG, "", 1))
        names = {t.get("function", t)["name"] for t in tools}
        if isinstance(value, dict) and value.get("name") in names:
            arguments = value.get("parameters", value.get("arguments")) or {}
            if isinstance(arguments, dict):
                return "", [ToolCall(value["name"], arguments)]
        return text, []
