"""The export's safetensors reader: same tensors as safetensors' own, read without mapping the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ortmodels.errors import ExportError
from ortmodels.export.checkpoint.weights import open_weights


def test_reads_every_dtype_and_shards_as_safetensors_does(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    first = {"w.bf16": torch.randn(3, 5).to(torch.bfloat16), "w.f16": torch.randn(4).to(torch.float16)}
    second = {"w.f32": torch.randn(2, 3, 4), "w.i64": torch.arange(6).reshape(2, 3)}
    save_file(first, tmp_path / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    save_file(second, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {**dict.fromkeys(first, "model-00001-of-00002.safetensors"),
                  **dict.fromkeys(second, "model-00002-of-00002.safetensors")}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    with open_weights(tmp_path) as weights:
        assert sorted(weights.names()) == sorted(weight_map)
        for name, tensor in {**first, **second}.items():
            got = weights.get(name)
            assert got.dtype == np.float32 and np.array_equal(got, tensor.float().numpy()), name
        assert "w.f32" in weights and "missing" not in weights
        with pytest.raises(ExportError, match="no tensor 'missing'"):
            weights.get("missing")


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"w": torch.ones(64, 64)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with open_weights(tmp_path) as weights, pytest.raises(ExportError, match="truncated"):
        weights.get("w")
