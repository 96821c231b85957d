"""``/v1/completions``: a plain prompt continued by a chat model's engine, no chat template.

The model's chat service (`ChatService.prepare_text`) tokenizes the prompt as it is (with the
tokenizer's own special tokens, a BOS where the model wants one), builds an engine `Request`
with the same options as chat, and streams the engine's text: the prompt shares decode steps
with chat requests on the same model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from ..runtime.events import ChatEvent, Finished, TextDelta
from ..runtime.options import ChatOptions
from .errors import bad_request
from .generation import NO_USAGE, Answer, finish_reason, service_options, settled, usage_of
from .grammar import constraint
from .protocol import Completion, CompletionChoice, CompletionRequest
from .sse import DONE, event


def prompt_of(request: CompletionRequest) -> str:
    """The one prompt string of the request (a list of one string is accepted too)."""
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise bad_request("Give one prompt as a string; token ids and several prompts per request are not "
                              "supported.", "prompt", "unsupported_parameter")
        prompt = prompt[0]
    if not prompt:
        raise bad_request("The prompt is empty.", "prompt")
    return prompt


#: ``max_tokens`` when the body leaves it out: OpenAI's default for this endpoint.
DEFAULT_MAX_TOKENS = 16


def text_options(request: CompletionRequest) -> ChatOptions:
    """The chat service's options for a completion body (``max_tokens`` left out is OpenAI's 16)."""
    if request.logprobs is not None:  # 0 asks for the sampled tokens' own: given by chat completions only
        raise bad_request("logprobs are given by /v1/chat/completions only; leave logprobs out here.",
                          "logprobs", "unsupported_parameter")
    given = "max_tokens" in request.model_fields_set
    held = constraint(request)  # structured_outputs, grammar or json_schema, as on chat
    output = {"response_format": held[1]} if held is not None else {}
    return service_options(request, request.max_tokens if given else DEFAULT_MAX_TOKENS, **output)


def _text(event: ChatEvent) -> str:
    return event.text if isinstance(event, TextDelta) else ""


class TextAnswer(Answer):
    """One text completion, whole or streamed, read from the model's events."""

    prefix = "cmpl"

    async def complete(self, events: AsyncIterator[ChatEvent]) -> dict[str, Any]:
        text: list[str] = []
        reason, usage = None, None
        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                text.append(_text(item))
                reason = finish_reason(item) or reason
                usage = usage_of(item) if isinstance(item, Finished) else usage
        reason = settled(reason)
        answer = Completion(id=self.id, created=self.created, model=self.model,
                            choices=[CompletionChoice(text="".join(text), finish_reason=reason)],
                            usage=usage or NO_USAGE)
        return _with_nulls(answer.model_dump(exclude_none=True), reason)

    async def stream(self, events: AsyncIterator[ChatEvent], include_usage: bool) -> AsyncIterator[str]:
        reason, usage = None, None
        async with aclosing(events):  # a cancelled answer cancels the model's stream now
            async for item in events:
                if text := _text(item):
                    yield self._chunk(text, None)
                reason = finish_reason(item) or reason
                usage = usage_of(item) if isinstance(item, Finished) else usage
        yield self._chunk("", settled(reason) or "stop")
        if include_usage:
            final = Completion(id=self.id, created=self.created, model=self.model, choices=[],
                               usage=usage or NO_USAGE)
            yield event(final.model_dump(exclude_none=True) | {"choices": []})
        yield DONE

    def _chunk(self, text: str, reason: str | None) -> str:
        body = Completion(id=self.id, created=self.created, model=self.model,
                          choices=[CompletionChoice(text=text)]).model_dump(exclude_none=True)
        return event(_with_nulls(body, reason))


def _with_nulls(body: dict[str, Any], reason: str | None) -> dict[str, Any]:
    for choice in body["choices"]:
        choice["finish_reason"], choice["logprobs"] = reason, None
    return body
