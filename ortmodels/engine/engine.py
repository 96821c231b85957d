"""`Engine`: continuous batching of `Request`s over one decoder session.

Each `step()` is one scheduler iteration: requests that were cancelled leave; waiting
requests are admitted by prefilling them (batch 1, at most ``prefill_chunk`` prompt tokens
per step, so a long prompt does not stall the others for long), each starting from the
longest prefix the prompt cache holds; then every admitted request gets one new token from a
single batched decode step. Each chunk goes to the prefill with the fewest prompt tokens left
to compute, its cached prefix taken off (``admission="shortest-first"``, the default): a
conversation's next turn, mostly cached, or a short question does not wait behind a long new
prompt, as with SGLang's longest-prefix-match order and vLLM's partial prefills. A waiting
request shorter than the prefill under way begins beside it (`STARTED_PREFILLS`, the one set
aside keeping its cache so far); waiting requests are compared within the first `LOOKAHEAD`,
and none is passed over by more than `PASSED_OVER` later ones. ``admission="arrival"``
prefills one request at a time in arrival order. A request that finishes
(end token, stop string, ``max_tokens``, cancel, error) leaves at once and frees its row.

Speculative decoding (``Engine(speculative=True)`` or ``Request(speculative=True)``): when a
request decodes alone in the batch, its next tokens are drafted by prompt lookup
(speculative.py) and checked in one pass of k + 1 tokens over its KV row; each row of
logits goes through the request's own token choice in turn (its logits processor, penalty,
sampling, logprobs, stop strings, ``max_tokens``), and the pass stops at the first chosen
token that differs from the draft. So greedy gives the tokens greedy gives without drafts
(up to the multi-row kernels' rounding, see `_speculate`), and sampling samples each token
from the model's own distribution (a draft token is kept with exactly its probability: the
standard acceptance rule for a draft that is a point mass). Rejected positions are taken
back from the KV row. With two or more requests in the batch nobody speculates: the
batched step already shares the weights' reads, and GroupQueryAttention runs several new
tokens on top of a cache for one row at a time only.

A background thread (`start()`, `close()`) runs steps while there is work, and
`generate` / `agenerate` stream one request's events to a sync or async consumer; stepping
by hand (no thread) is for tests and parity runs. An exception raised while choosing one
request's token (its logits processor, say) fails that request only.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigurationError, EngineClosedError, RequestTooLargeError
from .decoder import DecoderSession
from .kv_cache import KVCache, PaddedCache, SerialCache, SlotCache, layer_bytes, window_bytes
from .prompt_cache import PromptCache
from .request import Event, Finished, FinishReason, Request
from .speculative import MAX_DRAFT, PromptLookup

logger = logging.getLogger(__name__)

#: Engines whose scheduler thread may be inside a session run: closed at interpreter exit,
#: because a daemon thread still in onnxruntime when Python tears down aborts the process
#: ("terminate called without an active exception", exit code 134; 5 runs in 10 of a script
#: that broke out of a stream just before it ended).
_STARTED: weakref.WeakSet[Engine] = weakref.WeakSet()
#: At exit, how long a step still running may take before the process ends without it (a
#: logits processor that never returns must not keep the process from ending).
EXIT_WAIT_S = 10.0


@atexit.register
def _close_started_engines() -> None:
    for engine in list(_STARTED):
        engine.close(timeout=EXIT_WAIT_S)

DEFAULT_KV_CACHE_BYTES = 1 << 30
#: Seconds the scheduler thread waits for work before it ends (a new request starts it again).
IDLE_EXIT_S = 2.0
_LAYOUTS = ("slots", "padded")
#: How the next request to prefill is chosen (see the module's notes).
ADMISSIONS = ("shortest-first", "arrival")
#: Waiting requests compared for the shortest prefill left (a prompt-cache lookup each).
LOOKAHEAD = 16
#: Later requests that may go before a waiting one (or a begun prefill) before it goes first
#: whatever its length.
PASSED_OVER = 8
#: Prefills begun at once: one set aside (its cache so far kept) for a shorter one that came later.
STARTED_PREFILLS = 2


@dataclass
class _Prefill:
    """A request being prefilled, chunk by chunk, and its cache so far."""

    request: Request
    past: list[np.ndarray] | None
    done: int

    @property
    def left(self) -> int:
        return len(self.request.prompt_ids) - self.done


def _whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"Engine {name} must be a whole number >= {minimum}, not {value!r}.")
    return value


def chunk_size(remaining: int, budget: int) -> int:
    """Prompt tokens to prefill now: never a chunk of one token, and never one token left over.

    A one-token prefill takes the one-row kernels, whose keys, values and logits differ from a
    longer prefill's (0.57 in int4 logits on the sample, measured); every chunk of two or more
    reproduces a single full prefill exactly. So prompts are cut only into chunks of at least
    two (a prompt of one token is the exception it cannot avoid).
    """
    if remaining <= 1:
        return remaining
    size = min(remaining, budget)
    if remaining - size == 1:  # one token would be left for later: take it now (one past the budget)
        size += 1
    return size if size >= 2 else 0


def _gauge(help_text: str) -> Any:
    return field(metadata={"help": help_text})


@dataclass(frozen=True)
class EngineGauges:
    """What an engine holds at one moment, for ``/metrics``: each field is one gauge
    (``ortmodels_engine_<field>``), its help text in the field's metadata."""

    running_requests: int = _gauge("Requests in a chat engine's decode batch")
    waiting_requests: int = _gauge("Requests waiting for a chat engine's batch (or being prefilled)")
    kv_cache_bytes: int = _gauge("Bytes of KV cache rows allocated for running requests")
    kv_cache_limit_bytes: int = _gauge("The most KV cache bytes the engine's batch may take (MODEL_KV_CACHE)")
    prompt_cache_bytes: int = _gauge("Bytes the prompt cache holds")


class Engine:
    """Runs many requests on one decoder, batching their decode steps.

    ``max_batch`` requests decode together at most (8 by default); their KV cache may take
    ``kv_cache_bytes`` at most (each request reserves room for prompt + ``max_tokens``;
    a request that does not fit waits for others to finish). ``prompt_cache_bytes`` > 0
    keeps prompts' caches (prefill-made) for later prompts that start the same way.
    ``context_length`` (the model's) ends a request with "length" before it overflows.
    ``speculative`` drafts up to ``draft_tokens`` tokens by prompt lookup for a request that
    decodes alone (a request's own ``speculative`` overrides it; see the module docstring).
    The bound covers the batch's cache buffers; the prompt cache has its own, and a prompt
    being prefilled holds one more copy of its own cache until it joins the batch.
    """

    def __init__(
        self,
        decoder: DecoderSession,
        tokenizer: Any = None,
        *,
        max_batch: int = 8,
        kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES,
        prompt_cache_bytes: int = 0,
        prefill_chunk: int = 512,
        context_length: int | None = None,
        kv_layout: str = "slots",
        speculative: bool = False,
        draft_tokens: int = MAX_DRAFT,
        admission: str = "shortest-first",
    ) -> None:
        self.decoder, self.tokenizer = decoder, tokenizer
        if admission not in ADMISSIONS:
            raise ConfigurationError(f"Engine admission must be one of {', '.join(ADMISSIONS)}, not {admission!r}.")
        self.admission = admission
        self.max_batch = _whole("max_batch", max_batch, 1)
        self.kv_cache_bytes = _whole("kv_cache_bytes", kv_cache_bytes, 1)
        # At least 2: prompts are never cut into one-token chunks (`chunk_size`), so a budget of
        # one token would never prefill a prompt of three or more, and the thread would spin.
        self.prefill_chunk = _whole("prefill_chunk", prefill_chunk, 2)
        self.context_length = None if context_length is None else _whole("context_length", context_length, 2)
        if kv_layout not in _LAYOUTS:
            raise ConfigurationError(f"Engine kv_layout must be one of {', '.join(_LAYOUTS)}, not {kv_layout!r}.")
        self.prompt_cache = PromptCache(prompt_cache_bytes, decoder.sliding if decoder.windowed else (),
                                        decoder.keep)
        self.speculative = bool(speculative)
        self.draft_tokens = _whole("draft_tokens", draft_tokens, 1)
        self._lookups: dict[Request, PromptLookup] = {}
        self._cache: KVCache
        if decoder.batches and decoder.device_type == "cpu":  # the batched layouts keep numpy buffers
            self._cache = (SlotCache if kv_layout == "slots" else PaddedCache)(decoder, self.max_batch)
        else:
            self._cache = SerialCache(decoder)
            logger.info("Requests on this decoder run one at a time: %s.", "the batched KV layouts are "
                        "CPU-only for now" if decoder.batches else "its graph cannot batch rows of different "
                        "lengths (position_ids, no logits_to_keep)")
        self._token_bytes = layer_bytes(decoder)[0]
        self._waiting: deque[Request] = deque()
        self._started: list[_Prefill] = []  # prefills begun, at most STARTED_PREFILLS, oldest first
        self._limits: dict[Request, int] = {}
        self._cond = threading.Condition()
        self._step_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.steps = 0
        self.prefilled_tokens = 0  # prompt tokens computed (not taken from the prompt cache)
        self.decoded_tokens = 0
        self.verify_steps = 0  # speculative passes, draft tokens checked and accepted
        self.drafted_tokens = 0
        self.accepted_tokens = 0

    # -- requests ---------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue ``request``; it waits its turn (`_next_waiting`) until a row and cache memory are free."""
        if request.added_at is not None:
            raise ConfigurationError(f"{request!r} was already given to an engine; make a new Request.")
        limit = self._limit(request)
        need = self._cache.bytes_for(1, limit)
        if need > self.kv_cache_bytes:
            raise RequestTooLargeError(
                f"The request needs {need} bytes of KV cache (prompt + max_tokens = {limit} tokens), more than "
                f"the engine's bound of {self.kv_cache_bytes} (MODEL_KV_CACHE); lower max_tokens, shorten the "
                "prompt or raise MODEL_KV_CACHE."
            )
        with self._cond:
            if self._closed:
                raise EngineClosedError("This engine is closed; create a new one.")
            request.start(self.tokenizer)
            self._limits[request] = limit
            self._waiting.append(request)
            self._cond.notify_all()

    def remove_request(self, request: Request) -> None:
        """Cancel ``request`` and free its row now (blocks while a step is running)."""
        request.cancel()
        with self._step_lock:
            self._reap_cancelled()

    @property
    def active(self) -> list[Request]:
        """The requests in the decode batch, in row order."""
        return [r for r in self._cache.keys if isinstance(r, Request)]

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._started)

    def has_work(self) -> bool:
        with self._cond:
            return bool(self._waiting or self._started or self._cache.keys)

    @property
    def kv_bytes_per_token(self) -> int:
        """Cache bytes one token takes in the full-history layers (every layer of most models), in
        the graph's own KV precision: what each token of a long sequence costs. Sliding-window
        layers hold at most `kv_window_bytes` per sequence besides; `kv_bytes` counts both."""
        return self._token_bytes

    @property
    def kv_window_bytes(self) -> int:
        """Bytes one sequence's sliding-window layers hold at most, however long it is (0 without
        such layers): the manifest's ``window_bytes``."""
        return window_bytes(self.decoder)

    def kv_bytes(self, positions: int) -> int:
        """Bytes the cache of one request holding ``positions`` tokens may take: sliding-window
        layers count their window (plus the room kept between cuts), the others every token."""
        return self._cache.bytes_for(1, positions)

    def memory_bytes(self) -> int:
        """Bytes held now: the KV rows allocated for running requests plus the prompt cache."""
        gauges = self.gauges()
        return gauges.kv_cache_bytes + gauges.prompt_cache_bytes

    def gauges(self) -> EngineGauges:
        """The engine's figures now (read without stopping it: each is one consistent read)."""
        return EngineGauges(len(self.active), self.waiting, self._cache.allocated_bytes,
                            self.kv_cache_bytes, self.prompt_cache.nbytes)

    def all_logits(self, token_ids: list[int]) -> np.ndarray:
        """Logits at every position of one sequence (parity checks, perplexity)."""
        return self.decoder.all_logits(token_ids)

    # -- the scheduler ----------------------------------------------------------------------

    def step(self) -> bool:
        """One iteration: drop cancelled requests, admit (prefill), one batched decode step.

        Returns whether work remains.
        """
        with self._step_lock:
            self._reap_cancelled()
            self._admit()
            if self._cache.keys:
                self._decode()
            self.steps += 1
        return self.has_work()

    def _reap_cancelled(self) -> None:
        with self._cond:
            gone = [r for r in self._waiting if r.cancelled]
            for request in gone:
                self._waiting.remove(request)
            for job in [j for j in self._started if j.request.cancelled]:
                gone.append(job.request)
                self._started.remove(job)
        for request in gone:
            self._finish(request, "cancelled")
        for request in self.active:
            if request.cancelled:
                self._retire(request, "cancelled")

    def _admit(self) -> None:
        budget = self.prefill_chunk
        while budget > 0:
            with self._cond:
                job = self._next_prefill()
                if job is None:
                    return
            request = job.request
            size = chunk_size(job.left, budget)
            if size == 0:  # only one token of budget left: the rest of this prompt waits a step
                return
            chunk = request.prompt_ids[job.done : job.done + size]
            try:
                logits, job.past = self.decoder.prefill(chunk, job.past, job.done)
            except Exception as exc:  # noqa: BLE001 - a session failure on this prompt fails this request only
                logger.warning("Prefill failed for %r: %s", request, exc)
                with self._cond:
                    self._started.remove(job)
                self._finish(request, "error", exc)
                continue
            job.done += len(chunk)
            budget -= len(chunk)
            self.prefilled_tokens += len(chunk)
            if job.left:
                continue
            with self._cond:
                self._started.remove(job)
            try:
                self.prompt_cache.store(request.prompt_ids, job.past)  # prefill-made only: see prompt_cache.py
                reason, error = self._advance(request, logits)
                if reason is None:
                    self._cache.add(request, job.past, job.done)
                    continue
            except Exception as exc:  # noqa: BLE001 - no room for its row, say: this request fails, not silently
                logger.warning("Could not start %r: %s", request, exc)
                reason, error = "error", exc
            self._finish(request, reason, error)

    def _next_prefill(self) -> _Prefill | None:
        """The prefill to give the next chunk to (see the module's notes): a begun one, or a
        waiting request begun now (its cached prefix looked up) while fewer than
        `STARTED_PREFILLS` are begun. Called under the lock."""
        if self.admission == "arrival":
            if not self._started and self._waiting and self._fits(self._waiting[0]):
                self._start(self._waiting[0])
            return self._started[0] if self._started else None
        due = [j for j in self._started if j.request.passed_over >= PASSED_OVER]
        if due:  # set aside for shorter ones often enough: its turn, whatever its length
            return due[0]
        best = min(self._started, key=lambda j: j.left, default=None)
        if len(self._started) < STARTED_PREFILLS and self._waiting:
            request, left = self._next_waiting()
            if (best is None or left < best.left) and self._fits(request):
                for job in self._started:  # each begun prefill waits for this later one
                    job.request.passed_over += 1
                best = self._start(request)
        return best

    def _next_waiting(self) -> tuple[Request, int]:
        """The waiting request that would begin next, with the prompt tokens it would prefill:
        the oldest once `PASSED_OVER` later ones went first, else the one with the fewest left
        (the first of equals) within the first `LOOKAHEAD`. Called under the lock, ``_waiting``
        not empty."""
        head = self._waiting[0]  # the oldest: passed over at least as often as any after it
        if len(self._waiting) == 1 or head.passed_over >= PASSED_OVER:
            return head, self._left(head)
        window = list(itertools.islice(self._waiting, LOOKAHEAD))
        left = [self._left(r) for r in window]
        chosen = left.index(min(left))
        return window[chosen], left[chosen]

    def _left(self, request: Request) -> int:
        """Prompt tokens a waiting request would have to prefill now."""
        return len(request.prompt_ids) - self.prompt_cache.cached_length(request.prompt_ids)

    def _start(self, request: Request) -> _Prefill:
        """Begin prefilling a waiting request (the later ones it goes before counted). Under the lock."""
        for earlier in itertools.takewhile(lambda r: r is not request, self._waiting):
            earlier.passed_over += 1
        self._waiting.remove(request)
        cached, past = self.prompt_cache.lookup(request.prompt_ids)
        request.cached_tokens = cached
        job = _Prefill(request, past, cached)
        self._started.append(job)
        return job

    def _fits(self, request: Request) -> bool:
        """Whether ``request`` can begin now: a free row once the prefills begun before it have
        theirs, and the cache bound with every reservation."""
        joining = [*self._cache.keys, *(job.request for job in self._started)]
        if len(joining) >= self._cache.capacity:
            return False
        rows = len(joining) + 1
        positions = max(self._limits.get(r, 0) for r in [*joining, request])
        return self._cache.grown_bytes(rows, positions) <= self.kv_cache_bytes  # what is allocated stays

    def _decode(self) -> None:
        batch = self.active
        if len(batch) == 1 and self._speculates(batch[0]) and self._speculate(batch[0]):
            return
        tokens = [r.generated[-1] for r in batch]
        try:
            logits = self._cache.decode(tokens)
        except Exception as exc:  # the session failed: every request in this step fails with it
            logger.exception("Decode step failed for %d requests", len(batch))
            for request in batch:
                self._retire(request, "error", exc)
            return
        self.decoded_tokens += len(batch)
        for row, request in enumerate(batch):
            reason, error = self._advance(request, logits[row])
            if reason is not None:
                self._retire(request, reason, error)

    def _speculates(self, request: Request) -> bool:
        wanted = self.speculative if request.speculative is None else request.speculative
        return wanted and isinstance(self._cache, SlotCache)

    def _speculate(self, request: Request) -> bool:
        """Draft, verify in one pass and keep the agreed tokens; False when there is no draft.

        Row i of the pass's logits is the model's prediction after the draft's first i tokens;
        the request chooses from it exactly as from a decode step's logits. In fp32 these rows
        equal a one-row step's up to float rounding (~5e-5); int4/int8 graphs take other
        kernels for several rows (logits differ by ~0.8 on the sample), so a near tie there
        may go the other way than without speculation (measured in the benchmark and tests).
        """
        lookup = self._lookups.get(request)
        if lookup is None:
            lookup = self._lookups[request] = PromptLookup(request.prompt_ids, max_draft=self.draft_tokens)
        lookup.sync(request.generated)
        done = len(request.prompt_ids) + len(request.generated)
        room = min(request.max_tokens - len(request.generated), self._limits[request] - done,
                   self._cache.verify_room(request))  # type: ignore[attr-defined]  # sliding buffers: the window
        draft = lookup.propose(room - 1)  # the model's own token after the draft needs a place too
        if not draft:
            return False
        cached = done - 1  # the cache holds every token but the last chosen one
        try:
            logits = self._cache.extend(request, [request.generated[-1], *draft])  # type: ignore[attr-defined]
        except Exception as exc:  # the session failed: this request fails with it
            logger.exception("Verification pass failed for %r", request)
            self._retire(request, "error", exc)
            return True
        self.verify_steps += 1
        reason: FinishReason | None = None
        error: BaseException | None = None
        accepted = 0
        for index, row in enumerate(logits):
            reason, error = self._advance(request, row)
            self.decoded_tokens += 1
            if reason is not None or index == len(draft) or request.generated[-1] != draft[index]:
                break
            accepted += 1
        self.drafted_tokens += len(draft)
        self.accepted_tokens += accepted
        lookup.feedback(len(draft), accepted)
        if reason is not None:
            self._retire(request, reason, error)
        else:  # keep the last chosen token's predecessors: the draft tokens it agreed with
            self._cache.rewind(request, cached + 1 + accepted)  # type: ignore[attr-defined]
        return True

    def _advance(self, request: Request, logits: np.ndarray) -> tuple[FinishReason | None, BaseException | None]:
        """Choose and record ``request``'s next token; (why it ends, the error) or (None, None)."""
        try:
            reason = request.accept(request.choose(logits))
        except Exception as exc:  # noqa: BLE001 - its processor or sampling: this request only
            logger.warning("Request %d failed while choosing a token: %r", request.id, exc)
            return "error", exc
        if reason is None and len(request.prompt_ids) + len(request.generated) >= self._limits[request]:
            reason = "length"
        return reason, None

    def _retire(self, request: Request, reason: FinishReason, error: BaseException | None = None) -> None:
        """Take ``request`` out of the batch, freeing its row at once, and finish it."""
        if request in self._cache.keys:
            self._cache.remove(request)
        self._finish(request, reason, error)

    def _finish(self, request: Request, reason: FinishReason, error: BaseException | None = None) -> None:
        self._limits.pop(request, None)
        self._lookups.pop(request, None)
        try:
            request.finish(reason, error)
        except Exception as exc:  # noqa: BLE001 - the text flush failed: still end the request
            logger.warning("Request %d failed while finishing: %r", request.id, exc)
            request.finish("error", exc)

    def _limit(self, request: Request) -> int:
        """Most positions ``request`` may fill: prompt + max_tokens, within the context."""
        limit = request.reserved_tokens
        if self.context_length is not None:
            if len(request.prompt_ids) >= self.context_length:
                raise RequestTooLargeError(
                    f"{request!r}: the prompt ({len(request.prompt_ids)} tokens) fills the context of "
                    f"{self.context_length}; shorten it."
                )
            limit = min(limit, self.context_length)
        return limit

    # -- the background thread --------------------------------------------------------------

    def start(self) -> None:
        """Run steps on a background thread whenever there is work (idempotent)."""
        with self._cond:
            if self._closed:
                raise EngineClosedError("This engine is closed; create a new one.")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ortmodels-engine", daemon=True)
                self._thread.start()
                _STARTED.add(self)

    def _run(self) -> None:
        """Steps while there is work; after `IDLE_EXIT_S` without any, the thread ends (the next
        request starts another), so an engine nobody holds any more is freed with its session."""
        while True:
            with self._cond:
                while not self._closed and not self._has_work_locked():
                    if not self._cond.wait(timeout=IDLE_EXIT_S) and not self._has_work_locked():
                        self._thread = None
                        return
                if self._closed:
                    break
            try:
                self.step()
            except Exception:  # a bug in the scheduler itself: fail everyone rather than spin
                logger.exception("Engine step failed; cancelling its requests")
                self._cancel_all("error")
        self._cancel_all("cancelled")  # after a close that stopped waiting for this thread (a timeout)

    def _has_work_locked(self) -> bool:
        return bool(self._waiting or self._started or self._cache.keys)

    def close(self, timeout: float | None = None) -> None:
        """Cancel every request, stop the thread and wait for it (idempotent).

        With a ``timeout`` (seconds) and a step still running after it, this returns with a
        warning; the thread cancels what is left once that step ends.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("The engine's step did not end within %.0f s; leaving it running.", timeout)
                return
        self._cancel_all("cancelled")

    def _cancel_all(self, reason: FinishReason) -> None:
        with self._step_lock:
            with self._cond:
                pending = list(self._waiting)
                self._waiting.clear()
                pending.extend(job.request for job in self._started)
                self._started.clear()
            for request in pending:
                self._finish(request, reason)
            for request in self.active:
                self._cache.remove(request)
                self._finish(request, reason)

    def __enter__(self) -> Engine:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- streaming one request --------------------------------------------------------------

    def generate(self, request: Request) -> Iterator[Event]:
        """Add ``request`` and yield its events; raises its error after a failed `Finished`.

        Leaving the loop early (break, an exception, the generator closed) cancels it.
        """
        self.add_request(request)
        self.start()
        try:
            for event in request.events():
                yield event
                if isinstance(event, Finished) and event.error is not None:
                    raise event.error
        finally:
            if not request.finished:
                request.cancel()

    async def agenerate(self, request: Request) -> AsyncIterator[Event]:
        """`generate` for asyncio: events arrive on the loop; the loop never blocks on a step.

        Cancelling the consuming task (or closing this iterator) cancels the request.
        """
        events = request.attach_loop(asyncio.get_running_loop())
        self.add_request(request)
        self.start()
        try:
            while True:
                event = await events.get()
                yield event
                if isinstance(event, Finished):
                    if event.error is not None:
                        raise event.error
                    return
        finally:
            if not request.finished:
                request.cancel()
