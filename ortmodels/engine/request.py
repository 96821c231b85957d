"""`Request`: one generation: its prompt, its options, its state, and the events it sends out.

The engine's scheduler thread writes a request's state and puts events on its queue; the
consumer (a sync iterator, an asyncio task, another thread) only reads that queue and may
call `cancel()` from anywhere. Nothing else is shared, so a request needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import count
from typing import Any, Literal

import numpy as np

from ..errors import ConfigurationError
from .detokenizer import TextAssembler
from .dry import DryPenalty
from .sampling import (
    LogitsProcessor,
    SamplingParams,
    TokenLogprob,
    choose_token,
    token_logprob,
)

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled", "error"]
_NONE = np.zeros(0, dtype=np.int64)
_ids = count(1)


@dataclass(frozen=True)
class TextDelta:
    """New output: the token ids generated this step and the text they made releasable.

    ``text`` may be empty (half a character, a possible stop string held back) and
    ``token_ids`` may be empty (the rest of the text released when generation ends).
    """

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    """With ``Request(logprobs=k)``: each new token's log-probability and k alternatives."""


@dataclass(frozen=True)
class Finished:
    """The last event of a request: why it ended and what it cost."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens taken from the prompt cache instead of computed
    time_to_first_token_s: float | None
    error: BaseException | None = None
    stop_sequence: str | None = None
    """The caller's stop string that ended the text (reason ``stop``), if one did."""


Event = TextDelta | Finished


class Request:
    """A prompt to continue, with its own sampling, stop strings, end tokens and limit.

    Greedy unless ``params`` says otherwise; a seed gives this request its own random
    generator, so its samples do not depend on which other requests share a batch.
    ``processor`` (a grammar mask, say) edits this request's logits before each choice.
    Stop strings end free text only: once a processor says it is ``active`` (a grammar holds
    the text, from the first token or from a trigger on), no stop string cuts the answer,
    which ends where its grammar ends, so a tool call or a structured answer is never cut
    into a fragment that does not parse.
    ``speculative`` turns prompt-lookup speculative decoding on or off for this request
    (None: the engine's setting); it changes speed only, never which tokens are chosen.
    """

    def __init__(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        *,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        eos_token_ids: Sequence[int] = (),
        processor: LogitsProcessor | None = None,
        logprobs: int | None = None,
        speculative: bool | None = None,
    ) -> None:
        if not prompt_ids:
            raise ConfigurationError("A request needs at least one prompt token.")
        if max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be at least 1, not {max_tokens}.")
        self.id = next(_ids)
        self.prompt_ids = [int(i) for i in prompt_ids]
        self.params = params or SamplingParams()
        self.max_tokens = max_tokens
        self.stop = tuple(s for s in stop if s)
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self.processor = processor
        if logprobs is not None and not (isinstance(logprobs, int) and 0 <= logprobs <= 20):
            raise ConfigurationError(f"logprobs must be a whole number from 0 to 20 (alternatives), not {logprobs!r}.")
        self.logprobs = logprobs
        if speculative is not None and not isinstance(speculative, bool):
            raise ConfigurationError(f"speculative must be True, False or None (the engine's setting), not {speculative!r}.")
        self.speculative = speculative
        self._chosen_logprob: TokenLogprob | None = None
        dry = self.params.dry
        self._dry = DryPenalty(dry) if dry is not None and dry.enabled else None
        self.generated: list[int] = []  # every chosen token, an end-of-sequence token included
        self.cached_tokens = 0
        self.passed_over = 0  # later requests the engine prefilled first (bounded: engine.PASSED_OVER)
        self.finish_reason: FinishReason | None = None
        self.error: BaseException | None = None
        self.added_at: float | None = None
        self.first_token_at: float | None = None
        self._assembler: TextAssembler | None = None
        self._cancelled = threading.Event()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_events: asyncio.Queue[Event] | None = None

    @cached_property
    def rng(self) -> np.random.Generator:
        """The request's random numbers (``seed``), made when a token is first sampled: greedy
        requests never import ``numpy.random`` (5-10 ms of a fresh process's first answer)."""
        return np.random.default_rng(self.params.seed)

    def __repr__(self) -> str:
        return (f"Request(id={self.id}, prompt={len(self.prompt_ids)} tokens, "
                f"generated={len(self.generated)}, finish_reason={self.finish_reason!r})")

    # -- consumer side ---------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop this request; the engine frees its slot at its next step (any thread)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """This request's events as they come, up to and including `Finished` (blocking)."""
        while True:
            event = self._events.get(timeout=timeout)
            yield event
            if isinstance(event, Finished):
                return

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[Event]:
        """Deliver events to an asyncio queue on ``loop`` instead (call before the engine has it)."""
        self._loop = loop
        self._async_events = asyncio.Queue()
        return self._async_events

    # -- engine side -----------------------------------------------------------------------

    @property
    def completion_tokens(self) -> int:
        return len(self.generated) - (1 if self.generated and self.generated[-1] in self.eos_token_ids else 0)

    @property
    def reserved_tokens(self) -> int:
        """The most cache positions this request can need: prompt + every new token but the last."""
        return len(self.prompt_ids) + self.max_tokens

    def start(self, tokenizer: Any) -> None:
        self.added_at = time.perf_counter()
        if tokenizer is not None:
            self._assembler = TextAssembler.for_tokenizer(tokenizer, self.stop)

    def choose(self, logits: np.ndarray) -> int:
        """The next token from this request's row of logits (mutated in place)."""
        if self.processor is not None:
            self.processor.mask(logits)
        seen = _NONE
        if self.params.repetition_penalty != 1.0:
            seen = np.asarray(self.prompt_ids + self.generated, dtype=np.int64)
        penalize = None
        if self._dry is not None:
            self._dry.sync(self.prompt_ids, self.generated)
            penalize = self._dry.apply
        token = choose_token(logits, self.params, seen, None if self.params.greedy else self.rng, penalize)
        if self.logprobs is not None:
            self._chosen_logprob = token_logprob(logits, token, self.logprobs)
        if self.processor is not None:
            self.processor.accept(token)
        return token

    def accept(self, token: int) -> FinishReason | None:
        """Record a chosen token and send its text; returns why the request ends, if it does."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.generated.append(token)
        if token in self.eos_token_ids:
            return "stop"
        if self._assembler is not None and self._assembler.stop and getattr(self.processor, "active", False):
            self._assembler.stop = ()  # a grammar holds the text from here: it ends where the grammar ends
        piece = self._assembler.add(token) if self._assembler else ""
        chosen, self._chosen_logprob = self._chosen_logprob, None
        self._deliver(TextDelta(piece, (token,), (chosen,) if chosen is not None else ()))
        if self._assembler is not None and self._assembler.stopped:
            return "stop"
        if len(self.generated) >= self.max_tokens:
            return "length"
        return None

    def finish(self, reason: FinishReason, error: BaseException | None = None) -> None:
        """Send the rest of the text and the `Finished` event (once)."""
        if self.finish_reason is not None:
            return
        if reason in ("stop", "length") and self._assembler is not None:
            tail = self._assembler.flush()
            if tail:
                self._deliver(TextDelta(tail))
        self.finish_reason, self.error = reason, error
        ttft = None if self.first_token_at is None or self.added_at is None else self.first_token_at - self.added_at
        stopped_by = self._assembler.stopped_by if self._assembler is not None and reason == "stop" else None
        self._deliver(Finished(reason, len(self.prompt_ids), self.completion_tokens, self.cached_tokens, ttft, error,
                               stopped_by))

    def _deliver(self, event: Event) -> None:
        if self._loop is None or self._async_events is None:
            self._events.put(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._async_events.put_nowait, event)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            self.cancel()
