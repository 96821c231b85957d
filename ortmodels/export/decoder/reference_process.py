"""The PyTorch reference run in a child process, so that the export's own process never imports torch.

torch and transformers cost ~400 MB of resident memory once imported, and glibc keeps most
of the reference's heap after it is freed: in one process the export held ~650 MB through
every variant's check that only onnxruntime needed. The child (``python -m`` this module)
computes `parity.DecoderReference` (PyTorch's greedy tokens, prompt logits, the text's
argmax and perplexity, its answers to the questions), and for our graph transformers'
reading of the config (`graph.TransformersFacts`: windows, tied head, rotary caches), writes them as JSON and npz (no
pickle) into the export's scratch folder, and exits; its memory goes with it. The export's
meter (`resources`) sums the child's RSS with its own while it runs.

A child that fails, or runs past `timeout_s`, is an `ExportError` naming the cause and the
last lines it wrote to stderr; a child whose parent dies stops itself.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ...errors import ExportError
from ...lifecycle.memory import EXPORT_MALLOC_ENV
from .parity import DecoderReference

logger = logging.getLogger(__name__)

#: The wait for the child: a base, and seconds per GB of checkpoint (the 135M sample's
#: reference takes ~1 minute on 2 cores; a 1B bf16 checkpoint's several).
TIMEOUT_BASE_S = 1800.0
TIMEOUT_S_PER_GB = 1800.0
_STDERR_TAIL = 3000
_LOG = "child.log"


def timeout_s(checkpoint_bytes: int) -> float:
    """How long the child may run for a checkpoint of that many bytes before it is called hung."""
    return TIMEOUT_BASE_S + TIMEOUT_S_PER_GB * checkpoint_bytes / 1e9


def compute_reference(checkpoint: Path, base: Path, context_length: int, eos_token_ids: Sequence[int], *,
                      scratch: Path, graph_facts: bool = False, timeout: float | None = None) -> DecoderReference:
    """`DecoderReference.compute` in a child process, read back here with ``base``'s tokenizer.

    The tokenizer is read after the child has ended, so this process holds no parsed copy
    (~30 MB for the sample's) while the child is at its peak.

    ``scratch`` is created (it must not exist) and holds the figures and the child's log;
    the caller removes it. ``graph_facts``: the child also writes `graph.TransformersFacts`
    there, for our graph's builds. ``timeout``: default `timeout_s` of the checkpoint's size.
    """
    if timeout is None:
        from ..checkpoint.source import checkpoint_bytes  # the store's models: not the child's business

        timeout = timeout_s(checkpoint_bytes(checkpoint))
    run_reference(checkpoint, base, context_length, eos_token_ids, scratch, timeout, graph_facts)
    return DecoderReference.load(scratch, Tokenizer.from_file(str(base / "tokenizer.json")))


def run_reference(checkpoint: Path, base: Path, context_length: int, eos_token_ids: Sequence[int],
                  scratch: Path, timeout: float, graph_facts: bool = False) -> None:
    """Run the child and wait for it, at most ``timeout`` seconds; its figures are in ``scratch`` after."""
    scratch.mkdir(parents=True)
    request = {"checkpoint": str(checkpoint), "base": str(base), "context_length": context_length,
               "eos_token_ids": [int(i) for i in eos_token_ids], "out": str(scratch), "graph_facts": graph_facts}
    package_root = str(Path(__file__).resolve().parents[3])  # this very ortmodels, whatever the cwd
    env = {**os.environ, **EXPORT_MALLOC_ENV,  # freed logits and activations go back, not kept in its heap
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    log = scratch / _LOG
    with log.open("wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(request)], stdin=subprocess.DEVNULL,
                                 stdout=stderr, stderr=stderr, env=env)
    try:
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ExportError(
                f"The PyTorch reference of {checkpoint} did not finish within {timeout:.0f} s in its child "
                f"process (pid {child.pid}); it was stopped. Last output: {_tail(log)}") from None
    finally:
        if child.poll() is None:  # timed out, or this process is being interrupted
            child.kill()
            child.wait(timeout=30)
    if code != 0:
        raise ExportError(f"The PyTorch reference of {checkpoint} failed in its child process (exit code {code}): "
                          f"{_cause(log)}\nIts last output:\n{_tail(log)}")
    if not (scratch / "reference.json").is_file():
        raise ExportError(f"The PyTorch reference's child process wrote no figures into {scratch}: {_tail(log)}")
    for line in log.read_text(errors="replace").splitlines():
        logger.debug("reference child: %s", line)


def _cause(log: Path) -> str:
    """The child's last line: the exception Python printed, if it raised one."""
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return lines[-1] if lines else "it wrote nothing on its stderr"


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace").strip() if log.is_file() else ""
    return text[-_STDERR_TAIL:] if text else "(nothing on its stderr)"


def _stop_with_parent(parent: int) -> None:
    """End this child when the export that started it is gone (a killed export leaves no reference running)."""
    def watch() -> None:
        while not threading.Event().wait(1.0):
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="ortmodels-reference-parent", daemon=True).start()


#: Packages transformers imports when installed (behind an availability check or a try) that the
#: reference never uses: scikit-learn (assisted generation's ``roc_curve``; 41 MB of the child's
#: resident memory), scipy (``scipy.optimize`` for object-detection losses: 32 MB), accelerate
#: (``device_map`` loading, which the reference does not ask for) and opentelemetry (metrics):
#: 17 MB together, measured on the sample's reference.
_UNUSED_IMPORTS = ("sklearn", "scipy", "accelerate", "opentelemetry")


def _without_unused_imports() -> None:
    """Make `_UNUSED_IMPORTS` look absent to transformers (its availability checks find no spec)."""
    for name in _UNUSED_IMPORTS:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]  # None: "not importable" to importlib


def main(argv: list[str]) -> int:
    """The child's entry: compute the reference described by ``argv[0]`` (JSON) and write its figures."""
    _stop_with_parent(os.getppid())
    _without_unused_imports()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    request: dict[str, Any] = json.loads(argv[0])
    base = Path(request["base"])
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    reference = DecoderReference.compute(Path(request["checkpoint"]), base, tokenizer,
                                         int(request["context_length"]), request["eos_token_ids"])
    reference.save(Path(request["out"]))
    if request.get("graph_facts"):
        from .graph import TransformersFacts

        TransformersFacts.of(Path(request["checkpoint"])).save(Path(request["out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
