"""Tensors of a Hugging Face checkpoint's safetensors files, as float32 numpy arrays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError


class CheckpointWeights:
    """Name → tensor lookup over one or several (sharded) safetensors files."""

    def __init__(self, handles: dict[str, Any]) -> None:
        self._handles = handles

    def __contains__(self, name: str) -> bool:
        return name in self._handles

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (bf16 and fp16 checkpoints are widened first)."""
        handle = self._handles.get(name)
        if handle is None:
            raise ExportError(f"The checkpoint has no tensor {name!r}.")
        return handle.get_tensor(name).float().numpy()


@contextmanager
def open_weights(checkpoint: Path) -> Iterator[CheckpointWeights]:
    """Open ``model.safetensors`` or the shards named by ``model.safetensors.index.json``."""
    from safetensors import safe_open

    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (checkpoint / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ExportError(f"{checkpoint} has no safetensors weights (model.safetensors).")
    with ExitStack() as stack:
        handles: dict[str, Any] = {}
        for file in files:
            handle = stack.enter_context(safe_open(str(checkpoint / file), framework="pt"))
            handles.update(dict.fromkeys(handle.keys(), handle))
        yield CheckpointWeights(handles)
