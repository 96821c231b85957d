"""Parent ↔ worker protocol of the chat benchmarks: one contender per worker process.

Standard library only: the peers' workers import it from a virtual environment that has
neither ortmodels nor the dev dependencies. A worker prints protocol lines (``TAG`` +
JSON) on stdout and reads one-line commands on stdin; anything else a library prints is
passed on to the parent's stderr with the contender's name in front.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Worker → parent protocol lines start with this; anything else a library prints is passed on.
TAG = "@@bench "
ROOT = Path(__file__).resolve().parent.parent


def emit(event: str, **payload: Any) -> None:
    """Send one event to the parent (flushed at once: the parent may be timing it)."""
    print(TAG + json.dumps({"event": event, **payload}), flush=True)


def answer_runs(engine: Any, prompts: dict[str, Any]) -> None:
    """A serving worker's loop: ``run <prompt> <new_tokens>`` answered with a ``result`` event
    (``engine.run``'s), until ``quit`` or the end of stdin."""
    while True:
        command = sys.stdin.readline().split()
        if not command or command[0] == "quit":
            break
        if command[0] == "run":
            emit("result", **engine.run(prompts[command[1]], int(command[2])))


class Worker:
    """The parent's handle on one worker process, started with the contender's own interpreter."""

    def __init__(self, name: str, python: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            [python, *args], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})},
        )

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, event: str) -> dict[str, Any]:
        """Read until ``event`` arrives (its payload, with ``received_at``); an ``error`` event raises."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(TAG):
                message = json.loads(line[len(TAG):])
                got = message.pop("event")
                if got == event:
                    message["received_at"] = time.perf_counter()
                    return message
                if got == "error":
                    raise RuntimeError(f"worker {self.name!r}: {message.get('message')}")
            else:
                sys.stderr.write(f"[{self.name}] {line}")
        raise RuntimeError(f"worker {self.name!r} ended (exit code {self.process.wait()}) before {event!r}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
