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

from ...errors import ExportError

#: safetensors dtype names → numpy types as stored (BF16 is widened by hand).
_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_MAX_HEADER = 100_000_000
_BF16_PIECE = 4 * 1024 * 1024  # bf16 values widened per read (8 MB)


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
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if count * np.dtype(dtype).itemsize != end - start:
            raise ExportError(f"{self.path}: tensor {name!r} has {end - start} bytes for shape {entry['shape']}.")
        self.handle.seek(self.data_start + start)
        if entry["dtype"] == "BF16":
            return self._read_bf16(name, count).reshape(entry["shape"])
        array = np.empty(entry["shape"], dtype=dtype)
        self._read_into(name, array)
        return array

    def _read_into(self, name: str, array: np.ndarray) -> None:
        if self.handle.readinto(memoryview(array).cast("B")) != array.nbytes:
            raise ExportError(f"{self.path} is truncated (tensor {name!r}).")

    def _read_bf16(self, name: str, count: int) -> np.ndarray:
        """bf16 widened to float32 piece by piece into the one result array.

        A bf16 value is the upper half of its float32, so each piece of raw halves goes into
        the upper halves (little-endian: the odd uint16s) of zeroed output. Widening the whole
        tensor at once held it three times over (uint16, uint32, shifted): 2.6 GB for a 1B
        model's 0.5 GB embedding.
        """
        out = np.zeros(count, dtype=np.float32)
        halves = out.view(np.uint16)
        piece = np.empty(min(count, _BF16_PIECE), dtype=np.uint16)
        for first in range(0, count, _BF16_PIECE):
            part = piece[: min(_BF16_PIECE, count - first)]
            self._read_into(name, part)
            halves[2 * first + 1 : 2 * (first + len(part)) : 2] = part
        return out


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

    def pieces(self, name: str) -> Iterator[tuple[int, np.ndarray, str]]:
        """The tensor as stored, flattened, in pieces of at most 8 MB: (first index, values, dtype name).

        bf16 comes as its raw uint16 bits. For filling another framework's tensor in place
        without holding a copy of the whole tensor.
        """
        file = self._files.get(name)
        if file is None:
            raise ExportError(f"The checkpoint has no tensor {name!r}.")
        entry = file.entries[name]
        dtype = np.uint16 if entry["dtype"] == "BF16" else _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ExportError(f"{file.path}: tensor {name!r} has dtype {entry['dtype']}, which ortmodels cannot read.")
        start, end = entry["data_offsets"]
        count, size = int(np.prod(entry["shape"], dtype=np.int64)), np.dtype(dtype).itemsize
        if count * size != end - start:
            raise ExportError(f"{file.path}: tensor {name!r} has {end - start} bytes for shape {entry['shape']}.")
        step = max(1, (8 << 20) // size)
        for first in range(0, count, step):
            file.handle.seek(file.data_start + start + first * size)
            piece = np.empty(min(step, count - first), dtype=dtype)
            file._read_into(name, piece)
            yield first, piece, entry["dtype"]

    def dtype(self, name: str) -> str:
        """The tensor's safetensors dtype name as stored ("BF16", "F32", ...)."""
        file = self._files.get(name)
        if file is None:
            raise ExportError(f"The checkpoint has no tensor {name!r}.")
        return str(file.entries[name]["dtype"])

    def float_dtypes(self) -> set[str]:
        """The safetensors dtype names of the floating-point tensors (``{"BF16"}`` for most checkpoints)."""
        return {f.entries[n]["dtype"] for n, f in self._files.items() if f.entries[n]["dtype"] in ("F64", "F32", "F16", "BF16")}

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
