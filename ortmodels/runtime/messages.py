"""LangChain messages as chat templates take them, and the per-call inputs that come with them.

Only LangChain's message classes and ortmodels' errors: a user's own `BaseLLMModel` (the
HuggingFace example) converts messages the same way without loading ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ..engine.tokenizer import check_unicode
from ..engine.toolcalls import FORMATS, ToolCall, ToolFormat
from ..errors import ChatInputError

#: Message classes and their chunk subclasses (a streamed reply fed back as history).
_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"), (HumanMessage, "user"), (AIMessage, "assistant"), (ToolMessage, "tool"),
)
#: Content blocks of an assistant turn that stand for its tool calls (given again in ``tool_calls``).
_TOOL_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "function_call"})
_TEMPLATE_ROLES = frozenset({"system", "user", "assistant", "tool"})


def to_template_messages(messages: list[BaseMessage], tool_format: ToolFormat | None = None) -> list[dict[str, Any]]:
    """LangChain messages as the ``{"role", "content"}`` dicts chat templates expect.

    An assistant turn that called tools and each ``ToolMessage`` (its ``status="error"``
    too) are written the way ``tool_format`` says (the generic format when none is given),
    so the model sees its earlier calls and their results.
    """
    if not messages:
        raise ChatInputError("No messages: pass at least one message, e.g. [HumanMessage('Hi')].")
    converted = []
    names: dict[str, str] = {}  # tool call id → tool name, for results that do not repeat it
    for index, message in enumerate(messages):
        role = message.role if isinstance(message, ChatMessage) else next(
            (name for cls, name in _ROLES if isinstance(message, cls)), None
        )
        if role not in _TEMPLATE_ROLES:
            raise ChatInputError(
                f"Message {index} has role {getattr(message, 'role', message.type)!r}; chat "
                f"templates know {', '.join(sorted(_TEMPLATE_ROLES))}."
            )
        if isinstance(message.content, list):
            readable = _TOOL_BLOCKS if isinstance(message, AIMessage) else frozenset()  # calls come from .tool_calls
            kinds = {b.get("type") for b in message.content if isinstance(b, dict)} - {"text"} - readable
            if kinds:
                raise ChatInputError(
                    f"Message {index} has {', '.join(sorted(map(str, kinds)))} content; this model reads text only."
                )
        text = message.text
        try:
            check_unicode(text, f"Message {index}")
        except ValueError as exc:
            raise ChatInputError(str(exc)) from None
        fmt = tool_format or FORMATS["generic"]
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = [ToolCall(c["name"], c.get("args") or {}, c.get("id") or f"call_{index}_{n}")
                     for n, c in enumerate(message.tool_calls)]
            names.update({c.id: c.name for c in calls})
            converted.append(fmt.history_call(text, calls))
        elif isinstance(message, ToolMessage):
            name = message.name or names.get(message.tool_call_id)
            converted.append(fmt.history_result(text, message.tool_call_id, name, message.status == "error"))
        else:
            converted.append({"role": role, "content": text})
    return converted


def check_stop(stop: object, where: str = "stop") -> list[str]:
    """Stop strings as a list: one string is one stop string (as LangChain's other models take it)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise ChatInputError(f"{where} must be a string or a list of strings, not {type(stop).__name__}.")
    for index, item in enumerate(stop):
        if not isinstance(item, str):
            raise ChatInputError(
                f"{where}[{index}] is {type(item).__name__} {item!r:.40}; stop strings must be strings, "
                "e.g. stop=['\\n\\n']."
            )
        try:
            check_unicode(item, f"{where}[{index}]")
        except ValueError as exc:
            raise ChatInputError(str(exc)) from None
    return list(stop)


def keep_tail(messages: list[dict[str, str]], chars: int) -> list[dict[str, str]]:
    """The newest messages whose text fits in ``chars`` (the newest one cut to its end if alone
    it is too long): what ``truncate_prompt`` keeps of a conversation far beyond the context."""
    kept: list[dict[str, str]] = []
    for message in reversed(messages):
        if chars <= 0:
            break
        content = message["content"]
        if len(content) > chars:
            content = content[-chars:]
        kept.append({**message, "content": content})
        chars -= len(content)
    return kept[::-1]
