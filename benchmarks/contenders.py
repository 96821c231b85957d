"""Which chat contenders exist, which interpreter runs each, and where its code lives.

Standard library only, read by the parent (dev venv) and by every worker (dev or peers
venv). A contender's code is imported by module name inside its worker only, so the
peers' workers never import ortmodels (not installed there) and the dev workers never
import onnxruntime-genai or llama.cpp.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from benchmarks.peers.env import peers_python
from benchmarks.protocol import Worker
from benchmarks.targets import GENAI, LLAMA_CPP, ORT

OPTIMUM = "optimum ORTModelForCausalLM fp32"
PYTORCH = "transformers PyTorch fp32"


@dataclass(frozen=True)
class Spec:
    name: str
    venv: Literal["dev", "peers"]
    module: str
    loader: str
    options: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        *(Spec(f"{ORT} {p}", "dev", "benchmarks.chat_ortmodels", "load_ortmodels", {"dtype": p})
          for p in ("fp32", "int8", "int4")),
        *(Spec(f"{GENAI} {p}", "peers", "benchmarks.peers.chat_peers", "load_genai", {"precision": p})
          for p in ("fp32", "int8", "int4")),
        Spec(LLAMA_CPP, "peers", "benchmarks.peers.chat_peers", "load_llama_cpp", {"threads": 2}),
        Spec(OPTIMUM, "dev", "benchmarks.chat_hf", "load_optimum"),
        Spec(PYTORCH, "dev", "benchmarks.chat_hf", "load_pytorch"),
    ]
}
#: Shorter names for the charts, whose width is fixed.
CHART_LABELS = {OPTIMUM: "optimum fp32", PYTORCH: "PyTorch fp32"}


def interpreter(name: str) -> str:
    """The python that runs a contender: the peers venv's, or this process's own (dev venv)."""
    return str(peers_python()) if SPECS[name].venv == "peers" else sys.executable


def start_worker(name: str, models_dir: Path, mode: str, input_file: Path) -> Worker:
    """A `benchmarks.chat_worker` process for one contender (see its modes there)."""
    return Worker(name, interpreter(name), ["-m", "benchmarks.chat_worker", name, "--mode", mode,
                                            "--models-dir", str(models_dir.resolve()), "--input", str(input_file)])


class Engine(Protocol):
    """What a worker needs from a loaded contender."""

    def prompt_tokens(self, prompt: dict[str, Any]) -> int:
        """Token count of the prompt as this contender feeds it to its model."""

    def run(self, prompt: dict[str, Any], new_tokens: int) -> dict[str, Any]:
        """Generate greedily up to ``new_tokens``; the `timings` of the run."""


def timings(start: float, first: float | None, end: float, tokens: int, text: str, **extra: Any) -> dict[str, Any]:
    """Time to first token and decode tokens/s (tokens after the first ÷ time after the first)."""
    first = end if first is None else first
    decode_s = end - first
    return {
        "tokens": tokens,
        "ttft_s": first - start,
        "decode_tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0,
        "end_to_end_tokens_per_s": tokens / (end - start),
        "text": text,
        **extra,
    }


def now() -> float:
    return time.perf_counter()
