"""Prometheus text exposition of `ModelManager.stats()`, through ``prometheus-client``.

A custom collector reads the figures at scrape time, so nothing is counted twice and no
metric objects have to be kept in step with the stats registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from . import stats

Rows = Callable[[], list[dict[str, Any]]]

_COUNTERS = {
    "calls": "Calls made to the model",
    "errors": "Calls that raised an error",
    "cancelled": "Calls their callers gave up on (a cancelled task, a stream closed early)",
    "input_tokens": "Prompt tokens read",
    "output_tokens": "Tokens generated",
    "embedded": "Texts embedded",
    "loads": "Times the model was loaded",
}
_GAUGES = {
    "tokens_per_second": ("tokens_per_second", "Tokens generated per second of generation calls"),
    "embeddings_per_second": ("embeddings_per_second", "Texts embedded per second of embedding calls"),
    "last_load_seconds": ("last_load_s", "Seconds the last load took"),
    "memory_bytes": ("memory_bytes", "Bytes the loaded variant holds (its file size)"),
}
_QUANTILES = {"latency_seconds": "latency_s", "time_to_first_token_seconds": "time_to_first_token_s"}


class OrtModelsCollector(Collector):
    """One metric family per figure, labelled by model, variant and kind (and pid when the
    figures come from several processes)."""

    def __init__(self, rows: Rows | None = None, loaded: Any = None) -> None:
        self._rows = rows or stats.registry().snapshot
        self._loaded = loaded  # callable returning the manager's loaded() list, optional

    def collect(self) -> Iterator[Any]:
        rows = self._rows()
        labels = ["model", "variant", "kind"] + (["pid"] if any("pid" in r for r in rows) else [])

        def values(row: dict[str, Any]) -> list[str]:
            found = [row["model"], row.get("variant") or "", row["kind"], str(row.get("pid", ""))]
            return found[: len(labels)]

        for field, help_text in _COUNTERS.items():
            family = CounterMetricFamily(f"ortmodels_{field}", help_text, labels=labels)
            for row in rows:
                family.add_metric(values(row), row.get(field, 0))  # 0: an older process's state file
            yield family
        latency = SummaryMetricFamily("ortmodels_call_seconds", "Call latency in seconds", labels=labels)
        for row in rows:
            latency.add_metric(values(row), count_value=row["calls"], sum_value=row["busy_s"])
        yield latency
        for name, (key, help_text) in _GAUGES.items():
            family = GaugeMetricFamily(f"ortmodels_{name}", help_text, labels=labels)
            for row in rows:
                if row.get(key) is not None:
                    family.add_metric(values(row), row[key])
            yield family
        for name, key in _QUANTILES.items():
            family = GaugeMetricFamily(
                f"ortmodels_{name}", f"{name.replace('_', ' ')} over recent calls, by quantile",
                labels=[*labels, "quantile"],
            )
            for row in rows:
                for q, value in (row.get(key) or {}).items():
                    if q.startswith("p"):
                        family.add_metric([*values(row), str(int(q[1:]) / 100)], value)
            yield family
        if self._loaded is not None:
            family = GaugeMetricFamily("ortmodels_loaded", "1 for each model loaded now", labels=["model", "variant", "kind"])
            for entry in self._loaded():
                family.add_metric([entry.name, entry.variant or "", entry.kind], 1)
            yield family


#: Figures read at scrape time: (label values, a dataclass whose fields are the figures).
Figures = Callable[[], Iterable[tuple[dict[str, str], Any]]]


class FiguresCollector(Collector):
    """Dataclass figures as metric families: one per field, named ``<prefix>_<field>``, its help
    text the field's ``metadata["help"]``; a field whose metadata says ``"counter"`` is a
    counter. What the figures are (an engine's gauges, a server's queue) is their owner's."""

    def __init__(self, prefix: str, labels: list[str], figures: Figures, kind: type) -> None:
        self._prefix, self._labels, self._figures = prefix, labels, figures
        self._fields = [f for f in dataclasses.fields(kind) if "help" in f.metadata]

    def collect(self) -> Iterator[Any]:
        read = list(self._figures())
        for spec in self._fields:
            family_class = CounterMetricFamily if spec.metadata.get("counter") else GaugeMetricFamily
            family = family_class(f"{self._prefix}_{spec.name}", spec.metadata["help"], labels=self._labels)
            for labels, figures in read:
                family.add_metric([labels[name] for name in self._labels], getattr(figures, spec.name))
            yield family


def make_registry(loaded: Any = None, rows: Rows | None = None,
                  extra: Iterable[Collector] = ()) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrtModelsCollector(rows, loaded=loaded))
    for collector in extra:
        registry.register(collector)
    return registry


def exposition(loaded: Any = None, extra: Iterable[Collector] = ()) -> str:
    """The Prometheus text format of this process's figures (and ``extra`` collectors')."""
    return generate_latest(make_registry(loaded, extra=extra)).decode("utf-8")


def exposition_of_rows(rows: list[dict[str, Any]]) -> str:
    """The Prometheus text format of figures read back from other processes' state files."""
    return generate_latest(make_registry(rows=lambda: rows)).decode("utf-8")


def serve(port: int, addr: str = "127.0.0.1", loaded: Any = None) -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns what prometheus-client does."""
    return start_http_server(port, addr=addr, registry=make_registry(loaded))
