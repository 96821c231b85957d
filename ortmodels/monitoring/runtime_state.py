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
from pathlib import Path
from typing import Any

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
            "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(),
            "loaded": loaded, "stats": stats,
        }
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
        os.replace(tmp, path)
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


def read_states(models_dir: Path) -> list[dict[str, Any]]:
    """The published state of every live process using ``models_dir``; stale files are removed."""
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
        if state.get("host") == socket.gethostname() and not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        states.append(state)
    for leftover in folder.glob("*.tmp"):  # a writer that died between write and rename
        pid_text = leftover.name.split(".", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            leftover.unlink(missing_ok=True)
    return states
