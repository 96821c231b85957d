"""Small measuring aids for the benchmarks: process memory and per-token timing of `generate`.

Standard library only, so importing this costs a worker process nothing it would then
have to subtract from its memory figures.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), e.g. VmRSS or VmHWM."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mib() -> float:
    """Resident set size of this process now, in MiB."""
    kib = _status_kib("VmRSS")
    if kib is None:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 2**20
    return kib / 1024


def peak_rss_mib() -> float:
    """Highest resident set size this process has reached, in MiB.

    VmHWM belongs to the process's own address space, so it starts afresh at exec and
    cannot inherit the parent's peak; ``ru_maxrss`` (KiB on Linux, bytes on macOS) is
    the fallback elsewhere.
    """
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class TokenTimer:
    """A `generate(streamer=...)` streamer that only notes when tokens arrive.

    transformers calls ``put`` once with the prompt, then once per new token, then ``end``.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.first_token_at: float | None = None
        self.ended_at: float | None = None

    def put(self, value: object) -> None:
        self.calls += 1
        if self.calls == 2:  # call 1 is the prompt
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        self.ended_at = time.perf_counter()
