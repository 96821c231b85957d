"""The chat service's message dicts as chat templates take them: the one conversion, shared by
the service and the LangChain adapters (a user's own class too), importing nothing of the
service, its engine or LangChain.

Messages are dicts: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``;
an assistant turn may add ``"tool_calls": [{"name", "arguments": dict, "id"}]``, a tool
result ``"tool_call_id"``, ``"name"`` and ``"error": True``.
"""

from __future__ import annotations

from typing import Any

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
    for index, message in enumerate(messages):
        role, text = message.get("role"), message.get("content") or ""
        if role not in TEMPLATE_ROLES:
            raise ChatInputError(f"Message {index} has role {role!r}; chat templates know {', '.join(sorted(TEMPLATE_ROLES))}.")
        try:
            check_unicode(text, f"Message {index}")
        except ValueError as exc:
            raise ChatInputError(str(exc)) from None
        if role == "assistant" and message.get("tool_calls"):
            calls = [ToolCall(c["name"], c.get("arguments") or {}, c.get("id") or f"call_{index}_{n}")
                     for n, c in enumerate(message["tool_calls"])]
            names.update({c.id: c.name for c in calls})
            converted.append(fmt.history_call(text, calls))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = message.get("name") or (names.get(call_id) if call_id else None)
            converted.append(fmt.history_result(text, call_id, name, bool(message.get("error"))))
        else:
            converted.append({"role": role, "content": text})
    return converted
