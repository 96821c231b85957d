"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` ..., then ``data: [DONE]``.

A stream's first item is awaited before the response starts, so a request refused by
the model (a bad option, a prompt past the context) is an HTTP error, not a 200 whose body
says so. An error after that is sent as one ``data: {"error": ...}`` event (an API with its own
stream shape, Anthropic's or the Responses API's, gives its own `respond` ``errors``), and so is the
end of a stream still running at the shutdown timeout (`Shutdown`). The admission slot is
released when the stream ends, is closed by a client that went away, or is never
started at all (the generator is collected).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from .admission import Slot
from .errors import CHAT_SPELLING, Spelling, from_exception
from .shutdown import Shutdown

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"
_END = object()


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def error_events(exc: BaseException, spelling: Spelling = CHAT_SPELLING) -> list[str]:
    """OpenAI's end of a stream that failed: one ``data: {"error": ...}`` event, then ``[DONE]``."""
    return [event(from_exception(exc, spelling).body()), DONE]


async def _events(first: str, rest: AsyncIterator[str], slot: Slot, shutdown: Shutdown,
                  errors: Callable[[BaseException], list[str]]) -> AsyncIterator[str]:
    try:
        yield first
        while (item := await shutdown.bounded(anext(rest, _END))) is not _END:
            yield item
    except Exception as exc:  # noqa: BLE001 - the client gets an error event, the log the details
        for item in errors(exc):
            yield item
    finally:
        slot.release()
        close = getattr(rest, "aclose", None)
        if close is not None:  # a client that went away: the model's stream cancels its request now
            await close()


async def respond(events: AsyncIterator[str], slot: Slot, shutdown: Shutdown,
                  errors: Callable[[BaseException], list[str]] = error_events) -> StreamingResponse:
    """A streaming response from ``events``; errors before its first event are raised here, later
    ones end the stream with ``errors(exc)`` (OpenAI's events unless the API has its own)."""
    try:
        first = await shutdown.bounded(anext(events))
    except BaseException:
        slot.release()
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
        raise
    body = _events(first, events, slot, shutdown, errors)
    weakref.finalize(body, slot.release)  # never started (the client left first): still released
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
