"""Where a fresh ``ortmodels chat`` process spends its time: a timeline of one run.

Run by `benchmarks.bench_startup` as ``python -m benchmarks.cold_profile OUT.json ARGS...``
with the CLI's own arguments. Each step of a first load is timed by wrapping its function
as its module is imported (an import hook, so nothing is imported earlier than the CLI
itself would import it); the first text written to stdout is the first token. Steps that
the code no longer has are simply absent. Wall-clock stamps (``time.time``), so the parent
can place them after the moment it started the process.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import sys
import threading
import time
from typing import Any

BEGAN = time.time()

#: module -> [attribute path, step label]: the steps of a first load, in about their order.
STEPS: dict[str, list[tuple[str, str]]] = {
    "ortmodels.config": [("load_settings", "settings")],
    "ortmodels.manager": [("ModelManager.get_chat_model", "get_chat_model (load included)")],
    "ortmodels.store.catalog": [("ModelStore.require", "store: manifest read"),
                                ("ModelStore.names", "store: folder scan")],
    "ortmodels.store.integrity": [("verify_variant", "integrity check (sha256, cached by stamp)"),
                                  ("refuse_outside_links", "link check"),
                                  ("remembered_figures", "vocabulary bounds (kept from the last load)")],
    "ortmodels.engine.session": [("resolve_device", "device"), ("create_session", "session create (or the early one taken)"),
                                ("_create_session", "session open (ONNX Runtime)")],
    "ortmodels.engine.tokenizer": [("load_tokenizer", "tokenizer open"), ("vocabulary_bounds", "vocabulary read"),
                                   ("check_vocabulary", "vocabulary check")],
    "ortmodels.engine.chat_template": [("ChatTemplate.from_folder", "template read + compile")],
    "ortmodels.engine.constraints": [("GrammarCompiler.__init__", "grammar compiler")],
    "ortmodels.engine.engine": [("Engine.__init__", "engine")],
    "ortmodels.runtime.service": [("ChatService.__init__", "chat service"), ("ChatService.prepare", "prepare")],
    "ortmodels.runtime.chat": [("OnnxChatModel._load", "model load")],
    "ortmodels.lifecycle.memory": [("trim_heap", "heap trimmed after the load")],
    "ortmodels.registry": [("ModelRegistry._read_entry_points", "plug-ins' entry points read")],
}

events: list[dict[str, Any]] = []
_lock = threading.Lock()


def _wrap(label: str, function: Any) -> Any:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            with _lock:
                events.append({"step": label, "start": start, "end": time.time(),
                               "thread": threading.current_thread().name})
    return timed


def _patch(module: Any) -> None:
    for path, label in STEPS.get(module.__name__, []):
        owner, _, name = path.rpartition(".")
        target = getattr(module, owner) if owner else module
        if hasattr(target, name):
            setattr(target, name, _wrap(label, getattr(target, name)))


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in STEPS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


class _Stdout:
    """stdout that stamps its first non-empty write (the first token)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        if text.strip():
            now = time.time()
            if not any(e["step"] == "first output" for e in events):
                events.append({"step": "first output", "start": now, "end": now, "thread": "main"})
            last = next((e for e in events if e["step"] == "last output"), None)
            if last is None:
                events.append({"step": "last output", "start": now, "end": now, "thread": "main"})
            else:
                last["start"] = last["end"] = now
        return self.inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["ortmodels", *sys.argv[2:]]
    sys.meta_path.insert(0, _Finder())
    sys.stdout = _Stdout(sys.stdout)

    def dump() -> None:
        sys.stdout.flush()
        record = {"began": BEGAN, "ended": time.time(), "events": events,
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                    ("langchain_core", "langsmith", "numpy", "onnxruntime", "jinja2", "typer",
                                     "rich", "pydantic_settings", "tokenizers", "llguidance", "pydantic"))}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(record, f)

    atexit.register(dump)
    events.append({"step": "runner start", "start": BEGAN, "end": BEGAN, "thread": "main"})
    start = time.time()
    import ortmodels.cli as cli

    events.append({"step": "import ortmodels.cli", "start": start, "end": time.time(), "thread": "main"})
    start = time.time()
    try:
        cli.main()
    finally:
        events.append({"step": "cli main (command)", "start": start, "end": time.time(), "thread": "main"})


if __name__ == "__main__":
    main()
