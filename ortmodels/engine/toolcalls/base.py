"""What every tool-call format provides: a prompt for the tools, a grammar, and a parser.

A format is one small file (`generic.py`, `hermes.py`, `llama3.py`): how the tools reach
the model (the checkpoint's own template when it takes ``tools``, a system message when it
does not), what the model must write to call one (a grammar, from the start or after a
trigger token), and how its text becomes calls. Tools are OpenAI-style function dicts.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from ..constraints import MAX_SCHEMA_DEPTH, Grammar
from ..json_text import loads

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
    hoisted: dict[str, Any] = {}
    options = [{
        "type": "object",
        "properties": {name_key: {"const": function(t)["name"]}, args_key: _rooted(parameters(t), f"tool{i}", hoisted)},
        "required": [name_key, args_key],
        "additionalProperties": False,
    } for i, t in enumerate(chosen)]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": hoisted} if hoisted else schema


def _rooted(schema: dict[str, Any], key: str, hoisted: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters as they can sit inside the call's schema: a ``$ref`` in them points
    from *their* root (``#/$defs/Address``, ``#`` for a recursive one), which is no longer the
    root once they are nested. Parameters with references move to the call's ``$defs`` under
    ``key``, their own definitions beside them as ``key.Name``, each reference rewritten to
    match; parameters without any stay where they are, unchanged."""
    if not _has_ref(schema, 0):
        return schema
    own = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
    for folder in ("$defs", "definitions"):
        for name, definition in (schema.get(folder) or {}).items():
            hoisted[f"{key}.{name}"] = _moved_refs(definition, key, 0)
    hoisted[key] = _moved_refs(own, key, 0)
    return {"$ref": f"#/$defs/{key}"}


def _has_ref(value: Any, depth: int) -> bool:
    if depth > MAX_SCHEMA_DEPTH:  # the grammar refuses deeper schemas itself
        return False
    if isinstance(value, dict):
        return "$ref" in value or any(_has_ref(v, depth + 1) for v in value.values())
    return isinstance(value, list) and any(_has_ref(v, depth + 1) for v in value)


def _moved_refs(value: Any, key: str, depth: int) -> Any:
    """``value`` with each local ``$ref`` pointing where `_rooted` moved its target."""
    if depth > MAX_SCHEMA_DEPTH or not isinstance(value, (dict, list)):
        return value
    if isinstance(value, list):
        return [_moved_refs(v, key, depth + 1) for v in value]
    moved = {k: _moved_refs(v, key, depth + 1) for k, v in value.items()}
    ref = value.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        parts = ref[1:].split("/")  # "" first for "#/..."
        if len(parts) >= 3 and parts[0] == "" and parts[1] in ("$defs", "definitions"):
            moved["$ref"] = "/".join(["#", "$defs", f"{key}.{parts[2]}", *parts[3:]])
        else:  # the parameters' root ("#") or a path inside it ("#/properties/x")
            moved["$ref"] = f"#/$defs/{key}{ref[1:]}"
    return moved


def parse_json(text: str) -> Any:
    """The JSON value ``text`` holds (surrounding whitespace allowed), or ``None``."""
    try:
        return loads(text.strip())
    except (ValueError, RecursionError):
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
