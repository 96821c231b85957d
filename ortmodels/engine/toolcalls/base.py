"""What every tool-call format provides: a prompt for the tools, a grammar, and a parser.

A format is one small file (`generic.py`, `hermes.py`, `llama3.py`): how the tools reach
the model (the checkpoint's own template when it takes ``tools``, a system message when it
does not), what the model must write to call one (a grammar, from the start or after a
trigger token), and how its text becomes calls. Tools are OpenAI-style function dicts.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from ..constraints import Grammar

Choice = Literal["auto", "required", "none"] | str
"""``auto``, ``required`` (any tool), ``none``, or one tool's name."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class CallPlan:
    """How one request is constrained: the grammar, and the trigger token text it waits for
    (``None``: constrained from the first token)."""

    grammar: Grammar | None
    trigger: str | None = None


def function(tool: dict[str, Any]) -> dict[str, Any]:
    """The ``function`` part of an OpenAI tool dict (name, description, parameters)."""
    return tool.get("function", tool)


def parameters(tool: dict[str, Any]) -> dict[str, Any]:
    schema = dict(function(tool).get("parameters") or {"type": "object", "properties": {}})
    schema.setdefault("type", "object")
    return schema


def call_schema(tools: list[dict[str, Any]], choice: Choice, *, name_key: str = "name",
                args_key: str = "arguments") -> dict[str, Any]:
    """JSON schema of one call: the name of a bound tool (or the forced one) with its arguments."""
    chosen = [t for t in tools if choice in ("auto", "required") or function(t)["name"] == choice]
    options = [{
        "type": "object",
        "properties": {name_key: {"const": function(t)["name"]}, args_key: parameters(t)},
        "required": [name_key, args_key],
        "additionalProperties": False,
    } for t in chosen]
    return options[0] if len(options) == 1 else {"anyOf": options}


def parse_json(text: str) -> Any:
    """The JSON value ``text`` holds (surrounding whitespace allowed), or ``None``."""
    try:
        return json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return None


class ToolFormat(ABC):
    """One family's way of calling tools."""

    name: str

    @abstractmethod
    def detect(self, template: str) -> bool:
        """Does a chat template (its source) speak this format?"""

    @abstractmethod
    def prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
               choice: Choice, parallel: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Messages for the template, and extra template variables (``tools``)."""

    @abstractmethod
    def plan(self, tools: list[dict[str, Any]], choice: Choice, parallel: bool,
             special: frozenset[str] = frozenset()) -> CallPlan:
        """What the answer is constrained to; ``special``: the tokenizer's special tokens (a
        tag that is one must be written as that token, not spelled out)."""

    @abstractmethod
    def parse(self, text: str, tools: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
        """The answer's text content and the calls it makes."""

    def history_call(self, content: str, calls: list[ToolCall]) -> dict[str, Any]:
        """An earlier assistant turn that called tools, for the template."""
        return {"role": "assistant", "content": content, "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]}

    def history_result(self, content: str, call_id: str | None, name: str | None, error: bool) -> dict[str, Any]:
        """A tool's result (or error), for the template."""
        text = f"Error: {content}" if error else content
        return {"role": "tool", "content": text, "tool_call_id": call_id, "name": name}
