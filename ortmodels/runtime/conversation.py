"""The chat service's message dicts as chat templates take them: the one conversion, shared by
the service and the LangChain adapters (a user's own class too), importing nothing of the
service, its engine or LangChain.

Messages are dicts: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``;
an assistant turn may add ``"tool_calls": [{"name", "arguments": dict, "id"}]``, a tool
result ``"tool_call_id"``, ``"name"`` and ``"error": True``.
"""

from __future__ import annotations

from typing import Any

from ..engine.json_text import non_json_reason
from ..engine.tokenizer import check_unicode
from ..engine.toolcalls import FORMATS, ToolCall, ToolFormat
from ..errors import ChatInputError

#: The roles chat templates know (a message dict of another role is refused by name).
TEMPLATE_ROLES = frozenset({"system", "user", "assistant", "tool"})


def template_messages(messages: list[dict[str, Any]], tool_format: ToolFormat | None = None) -> list[dict[str, Any]]:
    """The service's message dicts as the ``{"role", "content"}`` dicts chat templates expect.

    An assistant turn that called tools and each tool result (an error too) are written the
    way ``tool_format`` says (the generic format when none is given), so the model sees its
    earlier calls and their results.
    """
    if not messages:
        raise ChatInputError("No messages: pass at least one message, e.g. [HumanMessage('Hi')].")
    fmt = tool_format or FORMATS["generic"]
    converted = []
    names: dict[str, str] = {}  # tool call id → tool name, for results that do not repeat it
    anonymous = False  # an earlier call had no id: a result may answer it whatever its id
    for index, message in enumerate(messages):
        role, text = message.get("role"), message.get("content") or ""
        if role not in TEMPLATE_ROLES:
            raise ChatInputError(f"Message {index} has role {role!r}; chat templates know {', '.join(sorted(TEMPLATE_ROLES))}.")
        try:
            check_unicode(text, f"Message {index}")
        except ValueError as exc:
            raise ChatInputError(str(exc)) from None
        if role == "assistant" and message.get("tool_calls"):
            calls = [ToolCall(c["name"], _arguments(c, index), c.get("id") or f"call_{index}_{n}")
                     for n, c in enumerate(message["tool_calls"])]
            anonymous = anonymous or not all(c.get("id") for c in message["tool_calls"])
            names.update({c.id: c.name for c in calls})
            converted.append(fmt.history_call(text, calls))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            _answers_a_call(call_id, names, anonymous, index)
            name = message.get("name") or (names.get(call_id) if call_id else None)
            converted.append(fmt.history_result(text, call_id, name, bool(message.get("error"))))
        else:
            converted.append({"role": role, "content": text})
    return converted


def _arguments(call: dict[str, Any], index: int) -> dict[str, Any]:
    """An earlier call's arguments, refused when they cannot be written back as JSON (a NaN would
    reach the prompt as ``NaN``, which is not JSON, and teach the model to write it)."""
    arguments = call.get("arguments") or {}
    why = non_json_reason(arguments)
    if why is not None:
        raise ChatInputError(f"Message {index}'s call of tool {call.get('name')!r} has arguments that cannot be "
                             f"written as JSON: {why}. Give strings, finite numbers, booleans, null, lists and "
                             "objects only.")
    return arguments


def _answers_a_call(call_id: str | None, made: dict[str, str], anonymous: bool, index: int) -> None:
    """A tool result must answer a call an earlier assistant turn made (the server's APIs say which
    turn exactly, with their own errors first); else the model would read a result of nothing."""
    if not made:
        raise ChatInputError(f"Message {index} is a tool result, but no assistant turn with tool calls comes "
                             "before it. Give the assistant turn with its tool calls (an AIMessage with tool_calls) "
                             "before their results.")
    if call_id and not anonymous and call_id not in made:
        listed = ", ".join(repr(i) for i in list(made)[-8:])
        raise ChatInputError(f"Message {index} is the result of tool call {call_id!r:.80}, which no earlier "
                             f"assistant turn made (their calls: {listed}). Give each result its call's id.")
