"""Tensors of a Hugging Face checkpoint's safetensors files, as float32 numpy arrays.

The files are read with plain reads, one tensor at a time, instead of being memory-mapped:
mapped pages count in the export's resident memory until the file is closed, and the
export's peak is bounded by what it holds, not by the checkpoint's size on disk. The
safetensors layout (an 8-byte header length, a JSON header, raw little-endian data) is
read directly, so neither torch nor a framework is needed for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ExportError

#: safetensors dtype names → numpy types as stored (BF16 is widened by hand).
_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_MAX_HEADER = 100_000_000


class _SafetensorsFile:
    """One safetensors file: its header, and tensors read on demand."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path, self.handle = path, handle
        size = int.from_bytes(handle.read(8), "little")
        if not 0 < size <= _MAX_HEADER:
            raise ExportError(f"{path} is not a safetensors file (header length {size}).")
        header = json.loads(handle.read(size))
        header.pop("__metadata__", None)
        self.data_start = 8 + size
        self.entries: dict[str, dict[str, Any]] = header

    def read(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ExportError(f"{self.path}: tensor {name!r} has dtype {entry['dtype']}, which ortmodels cannot read.")
        start, end = entry["data_offsets"]
        array = np.empty(entry["shape"], dtype=dtype)
        if array.nbytes != end - start:
            raise ExportError(f"{self.path}: tensor {name!r} has {end - start} bytes for shape {entry['shape']}.")
        self.handle.seek(self.data_start + start)
        if self.handle.readinto(memoryview(array).cast("B")) != array.nbytes:
            raise ExportError(f"{self.path} is truncated (tensor {name!r}).")
        if entry["dtype"] == "BF16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array


class CheckpointWeights:
    """Name → tensor lookup over one or several (sharded) safetensors files."""

    def __init__(self, files: dict[str, _SafetensorsFile]) -> None:
        self._files = files

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (bf16 and fp16 checkpoints are widened first)."""
        file = self._files.get(name)
        if file is None:
            raise ExportError(f"The checkpoint has no tensor {name!r}.")
        array = file.read(name)
        return array if array.dtype == np.float32 else array.astype(np.float32)

    def names(self) -> list[str]:
        return list(self._files)

    def parameters(self) -> int:
        """How many numbers the tensors hold, from the headers alone."""
        return sum(int(np.prod(f.entries[name]["shape"], dtype=np.int64)) for name, f in self._files.items())


@contextmanager
def open_weights(checkpoint: Path) -> Iterator[CheckpointWeights]:
    """Open ``model.safetensors`` or the shards named by ``model.safetensors.index.json``."""
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (checkpoint / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ExportError(f"{checkpoint} has no safetensors weights (model.safetensors).")
    with ExitStack() as stack:
        by_name: dict[str, _SafetensorsFile] = {}
        for file in files:
            path = checkpoint / file
            opened = _SafetensorsFile(path, stack.enter_context(path.open("rb")))
            by_name.update(dict.fromkeys(opened.entries, opened))
        yield CheckpointWeights(by_name)


def parameter_count(checkpoint: Path, default: int) -> int:
    """The checkpoint's parameter count from its safetensors headers; ``default`` without safetensors."""
    try:
        with open_weights(checkpoint) as weights:
            return weights.parameters()
    except (ExportError, OSError, ValueError, KeyError):  # .bin weights, or headers we cannot read
        return default
