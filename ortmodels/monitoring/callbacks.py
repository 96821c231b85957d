"""A LangChain callback handler that times each chat-model call: for those who trace chains.

Attach it to any chat model or chain (``config={"callbacks": [handler]}``): it records,
per LLM run, the model, latency, time to first streamed token, token counts and tokens/s,
and logs one line per run. It works for any LangChain chat model, not only ortmodels'.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

logger = logging.getLogger(__name__)


@dataclass
class RunTrace:
    """One chat-model run as the handler saw it."""

    run_id: UUID
    model: str | None
    started: float
    latency_s: float | None = None
    time_to_first_token_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None

    @property
    def tokens_per_second(self) -> float | None:
        if not self.output_tokens or not self.latency_s:
            return None
        return self.output_tokens / self.latency_s


class PerformanceCallbackHandler(BaseCallbackHandler):
    """Collects a `RunTrace` per chat-model run in ``traces`` (thread-safe)."""

    run_inline = True  # timings are taken in the calling thread, not an executor

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[UUID, RunTrace] = {}
        self.traces: list[RunTrace] = []

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list, *, run_id: UUID,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        model = (metadata or {}).get("ls_model_name") or (serialized or {}).get("name")
        with self._lock:
            self._open[run_id] = RunTrace(run_id, model, time.perf_counter())

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            trace = self._open.get(run_id)
            if trace is not None and trace.time_to_first_token_s is None and token:
                trace.time_to_first_token_s = time.perf_counter() - trace.started

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            trace = self._open.pop(run_id, None)
        if trace is None:
            return
        trace.latency_s = time.perf_counter() - trace.started
        for generations in response.generations:
            for generation in generations[:1]:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None) or {}
                trace.input_tokens += int(usage.get("input_tokens", 0) or 0)
                trace.output_tokens += int(usage.get("output_tokens", 0) or 0)
                meta = getattr(message, "response_metadata", None) or {}
                if trace.time_to_first_token_s is None and meta.get("time_to_first_token_s") is not None:
                    trace.time_to_first_token_s = float(meta["time_to_first_token_s"])
        self._finish(trace)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            trace = self._open.pop(run_id, None)
        if trace is None:
            return
        trace.latency_s = time.perf_counter() - trace.started
        trace.error = f"{type(error).__name__}: {error}"
        self._finish(trace)

    def _finish(self, trace: RunTrace) -> None:
        with self._lock:
            self.traces.append(trace)
        logger.info(
            "%s: %.3f s, first token %s, %d → %d tokens%s", trace.model, trace.latency_s or 0.0,
            f"{trace.time_to_first_token_s:.3f} s" if trace.time_to_first_token_s is not None else "-",
            trace.input_tokens, trace.output_tokens, f", error {trace.error}" if trace.error else "",
        )
