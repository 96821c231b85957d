"""Warm copies: a quantized chat graph as ONNX Runtime leaves it once it has optimised the graph
and packed the weights for this machine's kernels, kept beside the variant so that later
sessions skip that work.

Packing MatMulNBits' weights is most of opening a quantized graph on the CPU (0.18 s of the
int4 sample's 0.21 s); a session opened from the saved copy (ONNX Runtime's
``session.save_external_prepacked_constant_initializers``) reads the packed weights from the
file instead (0.14 s) and gives the same logits to the bit. The packing depends on the
onnxruntime build and on the processor's instruction sets, so a copy is kept under a key of
both and of the graph's files' sizes and times (``<variant>/.prepacked/<key>/``); a copy of
another key is removed when a new one is written. A copy holds the original weights and the
packed ones: about twice the variant's size on disk, and a session opened from it peaked
higher while loading (1B int4: 2.0 GB against 1.7 GB), so copies are kept only where
``MODEL_PREPACKED_CACHE=true`` asks for them. A copy is written whole under a temporary
name and renamed, so a reader never sees half of one; one that fails to open is removed and
written again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger(__name__)

FOLDER = ".prepacked"
_GRAPH = "model.onnx"
_DATA = "model.onnx.data"
_READY = "ready"
#: Initializers at least this large go to the copy's data file (mapped), not into its graph.
_EXTERNAL_MIN_BYTES = 1024


@cache
def _machine() -> str:
    """What the packing depends on besides the graph: the onnxruntime build and the processor's
    instruction sets (Linux's cpuinfo flags; the processor's name elsewhere)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        flags = platform.processor()
    return json.dumps([ort.__version__, ort.get_device(), platform.machine(), flags])


def _stamps(model_file: Path) -> list[list[object]]:
    """The graph and the weight files beside it, by name, size and modification time."""
    files = [model_file, *sorted(p for p in model_file.parent.glob("*.data") if p.is_file())]
    return [[f.name, (s := f.stat()).st_size, s.st_mtime_ns] for f in files]


@dataclass(frozen=True)
class WarmCopy:
    """Where ``model_file``'s warm copy for this machine is, or would be written."""

    root: Path
    key: str

    @property
    def folder(self) -> Path:
        return self.root / self.key

    @property
    def graph(self) -> Path:
        return self.folder / _GRAPH

    def ready(self) -> bool:
        return (self.folder / _READY).is_file()

    def saving(self, options: ort.SessionOptions) -> Path | None:
        """Ask ``options`` to save the copy into a new temporary folder (returned), to be kept
        with `keep` once the session is open; ``None`` where the folder cannot be made."""
        try:
            self.root.mkdir(exist_ok=True)
            temporary = Path(tempfile.mkdtemp(prefix=".writing-", dir=self.root))
        except OSError as exc:  # a read-only store: sessions simply pack as they open
            logger.debug("No warm copy beside %s: %s", self.root.parent, exc)
            return None
        options.optimized_model_filepath = str(temporary / _GRAPH)
        options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", _DATA)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(_EXTERNAL_MIN_BYTES))
        return temporary

    def keep(self, temporary: Path) -> None:
        """Publish the copy written into ``temporary``; remove the same graph's copies of other
        keys (another onnxruntime, processor or file stamp)."""
        try:
            (temporary / _READY).write_text(self.key, encoding="utf-8")
            temporary.chmod(0o755)  # made private by mkdtemp; readable as the variant's own files are
            os.rename(temporary, self.folder)
        except OSError as exc:  # another process published the same copy first, or the disk is full
            logger.debug("Warm copy %s not kept: %s", self.folder, exc)
            shutil.rmtree(temporary, ignore_errors=True)
            return
        graph = self.key.rpartition("-")[0]
        for other in self.root.iterdir():  # the same graph's copies only: a variant's other graph keeps its own
            if other.name != self.key and other.name.rpartition("-")[0] == graph:
                shutil.rmtree(other, ignore_errors=True)
        logger.info("Kept a warm copy of %s's packed weights in %s", self.root.parent.name, self.folder)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def warm_copy(model_file: Path) -> WarmCopy:
    """``model_file``'s warm copy for this machine (`WarmCopy.ready` says whether it is written)."""
    key = hashlib.sha256(json.dumps([_machine(), _stamps(model_file)]).encode()).hexdigest()[:24]
    return WarmCopy(model_file.parent / FOLDER, f"{model_file.stem}-{key}")
