"""What each process has loaded, published beside the models so ``ortmodels ps`` can show it.

ortmodels runs inside the user's process, not a server, so ``ortmodels ps`` and
``ortmodels stats`` read the small JSON files that each process's `ModelManager` writes
to ``LOCAL_MODELS_DIR/.runtime/<pid>.json`` when it loads, unloads or (at most once a
second) finishes a call. Files of processes that are gone are ignored and removed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store.files import atomic_write_text

logger = logging.getLogger(__name__)

RUNTIME_DIR = ".runtime"


def state_file(models_dir: Path, pid: int | None = None) -> Path:
    return models_dir / RUNTIME_DIR / f"{pid or os.getpid()}.json"


def write_state(models_dir: Path, loaded: list[dict[str, Any]], stats: list[dict[str, Any]]) -> None:
    """Publish this process's loaded models and figures (nothing loaded and no figures: remove)."""
    path = state_file(models_dir)
    try:
        if not loaded and not stats:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid()),
            "updated": time.time(),
            "loaded": loaded, "stats": stats,
        }
        atomic_write_text(path, json.dumps(payload, default=str))
    except OSError as exc:  # a read-only store: ps simply cannot see this process
        logger.debug("Could not publish runtime state to %s: %s", path, exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``); ``None`` where unknown.

    A pid is reused once its process is gone, so a state file is trusted only while the pid
    still names the process that wrote it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: count from the last ')'
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _written_by_live_process(state: dict[str, Any], pid: int) -> bool:
    if not _alive(pid):
        return False
    recorded = state.get("started")
    return recorded is None or process_start(pid) in (None, recorded)


def read_states(models_dir: Path) -> list[dict[str, Any]]:
    """The published state of every live process on this host using ``models_dir``.

    Files of processes that are gone, or whose pid now belongs to another process, are
    removed; files written on another host (a shared store) are left alone but not shown,
    since nothing here can tell whether their process still runs.
    """
    folder = models_dir / RUNTIME_DIR
    if not folder.is_dir():
        return []
    states = []
    for path in sorted(folder.glob("*.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if state.get("host") != socket.gethostname():
            logger.debug("Not showing %s: written on host %r", path, state.get("host"))
            continue
        if not _written_by_live_process(state, pid):
            path.unlink(missing_ok=True)
            continue
        states.append(state)
    for leftover in folder.glob("*.tmp"):  # a writer that died between write and rename
        pid_text = leftover.name.split(".", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            leftover.unlink(missing_ok=True)
    return states


class StatePublisher:
    """Writes this process's state file: at once after loads and unloads, at most once a
    second after calls (a call within the second is written when it ends, so the file never
    stays behind), one writer at a time so an older snapshot never lands last."""

    def __init__(self, models_dir: Callable[[], Path], loaded: Callable[[], list[dict[str, Any]]],
                 every_s: float = 1.0) -> None:
        self._models_dir, self._loaded, self._every_s = models_dir, loaded, every_s
        self._lock = threading.Lock()
        self._last = 0.0
        self._pending: threading.Timer | None = None
        """The write a call within the second left for its end."""

    def publish(self, *, soon: bool = False) -> None:
        """Write the state now (``soon``: now if the last write is a second old, else at the
        second's end)."""
        wait = self._every_s - (time.monotonic() - self._last)
        if soon and wait > 0:
            with self._lock:
                if self._pending is None:
                    self._pending = threading.Timer(wait, self._write_pending)
                    self._pending.daemon = True  # the exit's own write (`clear`) comes after it
                    self._pending.start()
            return
        self._write()

    def _write_pending(self) -> None:
        with self._lock:
            if self._pending is None:  # cancelled by `clear`: the process is ending
                return
            self._pending = None
        self._write()

    def _write(self) -> None:
        from . import stats

        with self._lock:
            self._last = time.monotonic()
            write_state(self._models_dir(), self._loaded(), stats.registry().snapshot())

    def clear(self) -> None:
        """At exit: nothing loaded any more (and no write left for later to undo it)."""
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
        write_state(self._models_dir(), [], [])
