"""LangChain messages as the chat service and chat templates take them.

A user's own `BaseLLMModel` (the HuggingFace example) converts messages the same way as
`OnnxChatModel`, with `to_template_messages`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ..errors import ChatInputError
from .conversation import TEMPLATE_ROLES, template_messages

if TYPE_CHECKING:
    from ..engine.toolcalls import ToolFormat

#: Message classes and their chunk subclasses (a streamed reply fed back as history).
_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"), (HumanMessage, "user"), (AIMessage, "assistant"), (ToolMessage, "tool"),
)
#: Content blocks of an assistant turn that stand for its tool calls (given again in ``tool_calls``).
_TOOL_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "function_call"})
#: An assistant turn's reasoning (LangChain's standard block, Anthropic's): left out of the prompt,
#: as reasoning templates (Qwen3's) leave out earlier turns' reasoning and the server its ``reasoning_content``.
_REASONING_BLOCKS = frozenset({"reasoning", "thinking", "redacted_thinking"})


def to_template_messages(messages: list[BaseMessage], tool_format: ToolFormat | None = None) -> list[dict[str, Any]]:
    """LangChain messages as the ``{"role", "content"}`` dicts chat templates expect.

    An assistant turn that called tools and each ``ToolMessage`` (its ``status="error"``
    too) are written the way ``tool_format`` says (the generic format when none is given),
    so the model sees its earlier calls and their results.
    """
    return template_messages(to_service_messages(messages), tool_format)


def to_service_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as the chat service's message dicts (see `ortmodels.runtime.service`)."""
    converted: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.role if isinstance(message, ChatMessage) else next(
            (name for cls, name in _ROLES if isinstance(message, cls)), None
        )
        if role not in TEMPLATE_ROLES:
            raise ChatInputError(
                f"Message {index} has role {getattr(message, 'role', message.type)!r}; chat "
                f"templates know {', '.join(sorted(TEMPLATE_ROLES))}."
            )
        if isinstance(message.content, list):
            # calls come from .tool_calls; reasoning is not shown again
            readable = _TOOL_BLOCKS | _REASONING_BLOCKS if isinstance(message, AIMessage) else frozenset()
            kinds = {b.get("type") for b in message.content if isinstance(b, dict)} - {"text"} - readable
            if kinds:
                raise ChatInputError(
                    f"Message {index} has {', '.join(sorted(map(str, kinds)))} content; this model reads text only."
                )
        entry: dict[str, Any] = {"role": role, "content": message.text}
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [{"name": c["name"], "arguments": c.get("args") or {}, "id": c.get("id")}
                                   for c in message.tool_calls]
        elif isinstance(message, ToolMessage):
            entry.update(tool_call_id=message.tool_call_id, name=message.name, error=message.status == "error")
        converted.append(entry)
    return converted


__all__ = ["to_service_messages", "to_template_messages"]
