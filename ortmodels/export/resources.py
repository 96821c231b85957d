"""What an export costs: wall time and the peak resident memory of its process tree.

`measure` samples the RSS of this process and its children (optimum's exporter may run
in a child) every 50 ms on a daemon thread; the figures go into the manifest, so a user can
see what exporting a family costs before trying a larger checkpoint of it.

RSS counts the pages of mapped files (onnxruntime maps a graph's external weights), which
the kernel can drop and read again under pressure; ``peak_anon_bytes`` is the part it
cannot (RSS less file-backed and shared pages, Linux only): the memory an export must have.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil

_SAMPLE_S = 0.05


@dataclass
class ExportMeter:
    """Peak RSS (bytes) of the export's process tree, and when it started."""

    started: float = field(default_factory=time.perf_counter)
    peak_rss: int = 0
    peak_anon: int | None = None  # None where the platform does not say which pages are file-backed

    def sample(self) -> None:
        process = psutil.Process()
        total, anon = _resident(process.memory_info())
        for child in process.children(recursive=True):
            try:
                child_total, child_anon = _resident(child.memory_info())
            except psutil.Error:  # the child ended between listing and reading
                continue
            total += child_total
            anon = None if anon is None or child_anon is None else anon + child_anon
        self.peak_rss = max(self.peak_rss, total)
        if anon is not None:
            self.peak_anon = max(self.peak_anon or 0, anon)

    def figures(self, checkpoint_bytes: int) -> dict[str, float | int]:
        self.sample()
        return {
            "seconds": round(time.perf_counter() - self.started, 1),
            "peak_rss_bytes": self.peak_rss,
            "checkpoint_bytes": checkpoint_bytes,
            "peak_rss_ratio": round(self.peak_rss / checkpoint_bytes, 2) if checkpoint_bytes else None,
            "peak_anon_bytes": self.peak_anon,
        }


def _resident(info: Any) -> tuple[int, int | None]:
    """(RSS, RSS less file-backed and shared pages) of one process's memory_info."""
    shared = getattr(info, "shared", None)  # Linux: RssFile + RssShmem
    return info.rss, None if shared is None else info.rss - shared


_current: contextvars.ContextVar[ExportMeter | None] = contextvars.ContextVar("export_meter", default=None)


@contextmanager
def measure() -> Iterator[ExportMeter]:
    """Meter the export run inside the block; `current()` reads it from anywhere in it."""
    meter = ExportMeter()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            meter.sample()
            stop.wait(_SAMPLE_S)

    thread = threading.Thread(target=run, name="ortmodels-export-meter", daemon=True)
    token = _current.set(meter)
    thread.start()
    try:
        yield meter
    finally:
        stop.set()
        thread.join()
        _current.reset(token)


def current() -> ExportMeter | None:
    return _current.get()
