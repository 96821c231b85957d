"""What both generation endpoints (``/v1/chat/completions``, ``/v1/completions``) share: an
answer's identity, why it ended, what it cost, and the sampling options of a body."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from ..runtime.events import ChatEvent, Finished
from ..runtime.options import ChatOptions, PromptOptions, SamplingOptions, StopOptions
from .errors import CHAT_SPELLING, ApiError, Spelling, bad_request
from .protocol import Usage
from .sse import error_events


class Answer:
    """One request's identity: id, creation time and the model id it was asked of."""

    prefix: ClassVar[str] = "cmpl"
    spelling: ClassVar[Spelling] = CHAT_SPELLING
    """How this API's body names the options an error names."""

    def __init__(self, model_id: str) -> None:
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model_id

    def error_events(self, exc: BaseException) -> list[str]:
        """How this answer's stream ends on an error after it started (OpenAI's: an error event, [DONE])."""
        return error_events(exc, self.spelling)


def service_options(request: Any, max_tokens: int | None, **output: Any) -> ChatOptions:
    """The chat service's options for a body: its `SamplingOptions`, `StopOptions` and
    `PromptOptions` fields (the bodies carry them as they are), ``max_tokens`` as the endpoint
    spells it, and ``output`` (tools, a response format, log-probabilities) mapped by the endpoint."""
    given = {name: getattr(request, name, None)
             for name in (*SamplingOptions.model_fields, *StopOptions.model_fields, *PromptOptions.model_fields)}
    given.update(max_tokens=max_tokens, **output)
    return ChatOptions.checked(**{name: value for name, value in given.items() if value is not None})


def usage_of(finished: Finished) -> Usage:
    usage = finished.usage
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                 total_tokens=usage.total_tokens, prompt_tokens_details={"cached_tokens": usage.cached_tokens},
                 completion_tokens_details={"reasoning_tokens": usage.reasoning_tokens})


#: The usage of an answer that never finished (a stream closed before its `Finished`).
NO_USAGE = Usage(prompt_tokens=0, total_tokens=0)


def finish_reason(event: ChatEvent) -> str | None:
    """Why the answer ended, on its `Finished` event (``cancelled`` and ``error`` included: `settled`)."""
    return event.reason if isinstance(event, Finished) else None


def settled(reason: str | None) -> str | None:
    """``reason`` once the answer's events are all read: an engine that closed or failed under it
    is the 503 or 500 it is. Asked after the stream ends, not at its `Finished`: a request that
    failed raises its own error after that event (a grammar that fails while decoding: a 400
    naming the body's field, `grammar.named`), and that error is the one answered."""
    if reason == "cancelled":  # the engine closed under it: the model is being unloaded (shutdown)
        raise ApiError(503, "The request was cancelled: the model is being unloaded. Retry.", type="server_error",
                       code="unavailable", headers={"Retry-After": "1"})
    if reason == "error":
        raise ApiError(500, "The request failed inside the engine; the server log has the details.",
                       type="server_error")
    return reason


def answers_a_call(call_id: str, called: tuple[int, set[str] | None] | None, param: str, turns: str,
                   calls: str) -> None:
    """A tool result must answer a call of the assistant turn before it (``called``: that turn's
    index in ``turns`` and its calls' ids), as OpenAI's and Anthropic's APIs require: a 400
    naming ``param`` otherwise, rather than a result the model reads as answering nothing."""
    if called is not None and (called[1] is None or call_id in called[1]):
        return
    if called is None or not called[1]:
        why = "no assistant turn with " + calls + " comes before it"
    else:
        why = f"{turns}[{called[0]}] called {', '.join(sorted(repr(i) for i in called[1]))}"
    raise bad_request(f"{param} {call_id!r:.80} answers no tool call: {why}. Send the assistant turn with its "
                      f"{calls} before their results, each result with its call's id.", param)
