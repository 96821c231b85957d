"""What the chat service streams: typed events every front end maps to its own shapes.

Frozen dataclasses of plain values, so they cross a thread, a process (Ray) or a test as
they are. A stream is zero or more `TextDelta` (a reasoning model's `ReasoningDelta` among
them, before its answer), at most one `ToolCalls` (with tools offered, the answer is read
whole at its end), then one `Finished`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..engine.toolcalls import ToolCall

#: A banned token's log-probability (-inf) as JSON can carry it (OpenAI's floor).
LOGPROB_FLOOR = -9999.0


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's text and log-probability, with the likeliest alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    raw: tuple[tuple[int, ...] | None, ...] = ()
    """The bytes of the token, then of each of ``top``, where they are not their text's UTF-8 (a
    token holding part of a character, whose text is U+FFFD); ``None`` or left out where they are."""

    def openai(self) -> dict[str, Any]:
        """OpenAI's ``logprobs.content`` entry (LangChain's ``response_metadata`` uses it too):
        ``bytes`` are the token's own, so a client joining them gets the answer's characters."""
        raw = [*self.raw, *[None] * (1 + len(self.top) - len(self.raw))]

        def entry(text: str, value: float, own: tuple[int, ...] | None) -> dict[str, Any]:
            return {"token": text, "bytes": list(own if own is not None else text.encode("utf-8")),
                    "logprob": max(value, LOGPROB_FLOOR)}

        return {**entry(self.token, self.logprob, raw[0]),
                "top_logprobs": [entry(t, v, b) for (t, v), b in zip(self.top, raw[1:])]}


@dataclass(frozen=True)
class TextDelta:
    """New answer text (whole characters), with its tokens' log-probabilities when asked for."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text: what a reasoning model wrote inside its ``<think>`` block, apart from
    the answer (OpenAI-compatible servers' ``reasoning_content``). Its tokens' log-probabilities
    are not reported."""

    text: str


@dataclass(frozen=True)
class ToolCalls:
    """The answer read as a whole when tools were offered: its free text and its calls."""

    content: str
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    """Prompt tokens taken from the prompt cache instead of computed."""
    reasoning_tokens: int = 0
    """Of ``completion_tokens``, those written while a reasoning block was open (its tags included),
    by the token: the output's tokens through the closing tag's last one (all of them unclosed)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Finished:
    """The last event: why the answer ended (``stop``, ``length``, ``tool_calls``, or ``cancelled`` /
    ``error`` when the engine closed or failed under it), what it cost, and where it ran."""

    reason: str
    usage: Usage
    time_to_first_token_s: float | None
    variant: str | None = None
    device: str | None = None
    stop_sequence: str | None = None
    """The caller's stop string that ended the answer (reason ``stop``), when one did rather than the
    model's end token (Anthropic's ``stop_sequence``)."""


ChatEvent = TextDelta | ReasoningDelta | ToolCalls | Finished


def arguments_json(call: ToolCall) -> str:
    """A call's arguments as the JSON string OpenAI and LangChain carry (non-ASCII kept as it is)."""
    return json.dumps(call.arguments, ensure_ascii=False)
