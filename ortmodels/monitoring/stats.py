"""Per-model performance figures, recorded through the life cycle's listener (`StatsRecorder`).

Every call of an ortmodels model (ours or a user's subclass) is timed by its call guard
and lands here (once `base` or the manager has installed `RECORDER`), keyed by model name and variant, whether or not the `ModelManager`
loaded it. Latency percentiles come from the last `WINDOW` calls of each key.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

#: Calls per model and variant kept for the latency percentiles.
WINDOW = 2048


@dataclass
class CallRecord:
    """One call as the guard saw it; the guard fills in what the result tells."""

    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    first_token_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    items: int = 0
    """Texts embedded (embedding calls)."""
    failed: bool = False
    cancelled: bool = False
    """Ended by its caller (a cancelled task, a stream closed early): counted apart from errors."""
    key: tuple[str, str | None, str] | None = None
    """(model, variant, kind), taken when the call began, while the model was surely loaded."""

    def finish(self) -> None:
        self.ended = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def _count_usage(self, usage: Any) -> None:
        if usage:
            self.input_tokens += int(usage.get("input_tokens", 0) or 0)
            self.output_tokens += int(usage.get("output_tokens", 0) or 0)

    def saw_chunk(self, chunk: Any) -> None:
        """A streamed chunk (LangChain's, or a chat service event): the first one with text marks
        the time to first token; the last one carries the usage."""
        if self.first_token_s is None and (getattr(chunk, "content", None) or getattr(chunk, "text", None)):
            self.first_token_s = time.perf_counter() - self.started
        usage = getattr(chunk, "usage_metadata", None)
        if usage is None and (counts := getattr(chunk, "usage", None)) is not None:
            usage = {"input_tokens": counts.prompt_tokens, "output_tokens": counts.completion_tokens}
        self._count_usage(usage)

    def saw_result(self, result: Any) -> None:
        """A whole ``LLMResult``: token counts, and the model's own time to first token if it says."""
        for generations in getattr(result, "generations", []):
            for generation in generations[:1]:
                message = getattr(generation, "message", None)
                self._count_usage(getattr(message, "usage_metadata", None))
                meta = getattr(message, "response_metadata", None) or {}
                ttft = meta.get("time_to_first_token_s")
                if ttft is not None and self.first_token_s is None:
                    self.first_token_s = float(ttft)


@dataclass
class ModelStats:
    """Figures for one model and variant since the process started (or `reset`)."""

    model: str
    variant: str | None
    kind: str
    calls: int = 0
    errors: int = 0
    cancelled: int = 0
    """Calls their callers gave up on: a cancelled task, a stream closed before its end."""
    input_tokens: int = 0
    output_tokens: int = 0
    embedded: int = 0
    busy_s: float = 0.0
    """Seconds spent in calls, summed."""
    embed_s: float = 0.0
    generate_s: float = 0.0
    loads: int = 0
    last_load_s: float | None = None
    memory_bytes: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=WINDOW), repr=False)
    ttfts: deque = field(default_factory=lambda: deque(maxlen=WINDOW), repr=False)

    def snapshot(self) -> dict[str, Any]:
        """Plain figures (JSON-ready): counts, rates and p50/p95/p99 latencies."""
        data = {k: v for k, v in asdict(self).items() if k not in ("latencies", "ttfts")}
        data["tokens_per_second"] = self.output_tokens / self.generate_s if self.generate_s else None
        data["embeddings_per_second"] = self.embedded / self.embed_s if self.embed_s else None
        data["latency_s"] = _percentiles(self.latencies)
        data["time_to_first_token_s"] = _percentiles(self.ttfts)
        return data


def _percentiles(values: deque) -> dict[str, float] | None:
    if not values:
        return None
    import numpy as np  # only when figures are asked for

    p50, p95, p99 = np.percentile(np.fromiter(values, dtype=float), [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(np.mean(values))}


def key_of(model: Any) -> tuple[str, str | None, str]:
    """(model name, variant, kind) of a model: read it while the model is loaded."""
    name = getattr(model, "model_name", None) or type(model).__name__
    variant = getattr(model, "loaded_variant", None) or getattr(model, "dtype", None)
    return name, variant, model.kind


class StatsRegistry:
    """Thread-safe table of `ModelStats`, one per (model name, variant)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str | None], ModelStats] = {}

    def _entry(self, key: tuple[str, str | None, str]) -> ModelStats:
        name, variant, kind = key
        entry = self._stats.get((name, variant))
        if entry is None:
            entry = self._stats[(name, variant)] = ModelStats(name, variant, kind)
        return entry

    def record_load(self, key: tuple[str, str | None, str], model: Any, seconds: float, memory: int) -> None:
        with self._lock:
            entry = self._entry(key)
            entry.loads += 1
            entry.last_load_s = seconds
            entry.memory_bytes = memory

    def record_call(self, key: tuple[str, str | None, str] | None, model: Any, record: CallRecord) -> None:
        with self._lock:
            entry = self._entry(key or key_of(model))
            entry.calls += 1
            entry.errors += int(record.failed and not record.cancelled)
            entry.cancelled += int(record.cancelled)
            entry.busy_s += record.seconds
            entry.latencies.append(record.seconds)
            if record.items:
                entry.embedded += record.items
                entry.embed_s += record.seconds
            entry.input_tokens += record.input_tokens
            if record.output_tokens:
                entry.output_tokens += record.output_tokens
                entry.generate_s += record.seconds
            if record.first_token_s is not None:
                entry.ttfts.append(record.first_token_s)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._stats[k].snapshot() for k in sorted(self._stats, key=lambda k: (k[0], k[1] or ""))]

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()


_registry = StatsRegistry()


def registry() -> StatsRegistry:
    """The process-wide registry every ortmodels model records into."""
    return _registry


class StatsRecorder:
    """The life cycle's `CallRecorder` (`ortmodels.lifecycle.listener`): every model's loads
    and calls into the process-wide registry."""

    key_of = staticmethod(key_of)

    def start_call(self, model: Any) -> CallRecord:
        return CallRecord(key=key_of(model))

    def record_call(self, key: tuple[str, str | None, str] | None, model: Any, record: CallRecord) -> None:
        _registry.record_call(key, model, record)

    def record_load(self, key: tuple[str, str | None, str], model: Any, seconds: float, memory: int) -> None:
        _registry.record_load(key, model, seconds, memory)


RECORDER = StatsRecorder()
