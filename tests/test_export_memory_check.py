"""An export that cannot fit the machine's memory says so before it starts; sharded checkpoints export as one file.

The estimate (`export/memory_check.py`) is checked against the peaks that real exports
recorded, on checkpoints of the same shapes: sparse safetensors files whose headers name
the real tensors (the estimate reads headers and sizes, never the data).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.checkpoints import MODELS, tensors
from ortmodels.errors import ExportMemoryError
from ortmodels.export.memory_check import available_bytes, check_memory, estimate
from ortmodels.store import ModelStore
from tests.conftest import CHAT_SAMPLE

_BYTES = {"F32": 4, "BF16": 2}
#: SmolLM2-135M-Instruct (the chat sample) and Gemma 3 270M's sizes, in the Llama layout the estimate reads.
SMOLLM2 = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
           "tie_word_embeddings": True, "max_position_embeddings": 8192}
GEMMA3_270M = {**SMOLLM2, "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144}
#: Peaks recorded by real exports (manifest export_cost), with the precisions exported, the
#: reference in its child process (branch h27-export): the sample, every precision, its mapped
#: fp32 pages dropped as used (0.93 GB, 1.74x, at the reference), and the 1B shape in bf16, int8
#: and int4 with --skip-gates --int4-search (3.30 GB, 1.33x, at the reference).
RECORDED = [("smollm2", SMOLLM2, "F32", ["fp32", "fp16", "int8", "int4"], 934_858_752),
            ("llama-1b", MODELS["llama-3.2-1b"][0], "BF16", ["int8", "int4"], 3_298_267_136)]
#: That export's reference phase, its bf16 matrices kept as stored: 3.30 GB (the child's 3.18 GB and the export's).
LLAMA_1B_REFERENCE = 3_300_000_000


def sparse_checkpoint(folder: Path, config: dict, dtype: str = "BF16") -> Path:
    """A checkpoint folder whose model.safetensors has the real header and a hole for the data."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    header, offset = {}, 0
    for name, shape, _ in tensors(config):
        size = _BYTES[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    with (folder / "model.safetensors").open("wb") as out:
        out.write(len(text).to_bytes(8, "little") + text)
        out.truncate(8 + len(text) + offset)
    return folder


@pytest.mark.parametrize(("name", "config", "dtype", "dtypes", "peak"), RECORDED, ids=[r[0] for r in RECORDED])
def test_the_estimate_covers_each_recorded_peak_closely(tmp_path: Path, name: str, config: dict, dtype: str,
                                                        dtypes: list[str], peak: int) -> None:
    sparse_checkpoint(tmp_path / name, config, dtype)
    expected = estimate(ModelStore(tmp_path).info(name), dtypes)
    assert peak <= expected.peak_bytes <= 1.25 * peak, (expected, peak)
    assert "largest phase" in expected.basis


def test_the_estimate_is_the_largest_phase_of_the_precisions_asked_for(tmp_path: Path) -> None:
    """A bf16 1B: int4 is bounded by the reference (its weights as stored), fp32 by its mapped fp32 graph."""
    sparse_checkpoint(tmp_path / "llama-1b", MODELS["llama-3.2-1b"][0])
    info = ModelStore(tmp_path).info("llama-1b")
    int4, quantized, with_fp32, default = (estimate(info, d) for d in (["int4"], ["int8", "int4"], ["fp32", "int4"],
                                                                        None))
    assert "PyTorch reference" in int4.basis and "logits" in int4.basis
    assert LLAMA_1B_REFERENCE <= int4.peak_bytes <= 1.25 * LLAMA_1B_REFERENCE
    checkpoint = 2_471_645_608
    assert int4.peak_bytes <= quantized.peak_bytes < 2 * checkpoint < with_fp32.peak_bytes
    assert "fp32 variant's check" in with_fp32.basis and "parameters" in with_fp32.basis
    assert default.peak_bytes >= with_fp32.peak_bytes  # fp32 and fp16 are in the default precisions


def test_a_recorded_peak_of_the_same_checkpoint_is_the_estimate(samples_dir: Path) -> None:
    info = ModelStore(samples_dir).info(CHAT_SAMPLE)
    assert info.manifest is not None and info.manifest.export_cost
    expected = estimate(info)
    assert expected.peak_bytes == info.manifest.export_cost["peak_rss_bytes"]
    assert "the peak its previous export recorded" in expected.basis
    assert estimate(info, ["int4"]) == expected  # a subset of what it made costs no more


def test_an_export_too_large_for_the_machine_is_refused_before_it_starts(tmp_path: Path) -> None:
    """A 400B-parameter Llama (a sparse 800 GB file): refused at once, nothing written, the fix named."""
    from ortmodels.export import export_model

    huge = {**MODELS["llama-3.2-3b"][0], "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
            "num_attention_heads": 128, "head_dim": 128}
    folder = sparse_checkpoint(tmp_path / "models" / "huge", huge)
    assert estimate(ModelStore(tmp_path / "models").info("huge")).peak_bytes > available_bytes()
    with pytest.raises(ExportMemoryError, match=r"needs about .* GB of memory at its peak .* available.*--force-memory"):
        export_model(ModelStore(tmp_path / "models"), "huge")
    assert not (folder / "onnx").exists()  # no export, no staging folder: only the model's lock file
    assert not [p for p in (folder / ".exports").iterdir() if p.is_dir()]

    env = {**os.environ, "LOCAL_MODELS_DIR": str(tmp_path / "models"), "COLUMNS": "250"}
    cli = subprocess.run([sys.executable, "-m", "ortmodels", "export", "huge"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 1 and "error:" in cli.stderr and "--force-memory" in cli.stderr, cli.stderr


def test_a_checkpoint_without_tokenizer_files_is_refused_before_it_starts(tmp_path: Path) -> None:
    """Refused at once (it was refused only after optimum's export, minutes later at real sizes), with the fix."""
    from ortmodels.errors import ExportError
    from ortmodels.export import export_model

    folder = sparse_checkpoint(tmp_path / "models" / "untokenized", SMOLLM2)
    with pytest.raises(ExportError, match=r"no tokenizer file \(tokenizer.json, tokenizer.model.*save_pretrained"):
        export_model(ModelStore(tmp_path / "models"), "untokenized")
    assert not (folder / "onnx").exists() and not [p for p in (folder / ".exports").iterdir() if p.is_dir()]


def test_force_memory_warns_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    huge = {**MODELS["llama-3.2-1b"][0], "num_hidden_layers": 16 * 200}
    sparse_checkpoint(tmp_path / "huge", huge)
    info = ModelStore(tmp_path).info("huge")
    with caplog.at_level(logging.WARNING, logger="ortmodels.export.memory_check"):
        assert check_memory(info, force=True).peak_bytes > available_bytes()
    assert "--force-memory: trying anyway" in caplog.text


@pytest.mark.slow
def test_a_sharded_checkpoint_exports_like_one_file(tmp_path: Path) -> None:
    """The same tiny Llama in one file and in three shards with an index: the same graphs and figures."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from ortmodels.export import export_model
    from tests.tiny_decoders import build_tiny_decoder

    single = build_tiny_decoder(tmp_path / "one" / "tiny", "llama")
    sharded = tmp_path / "three" / "tiny"
    shutil.copytree(single, sharded)
    (sharded / "model.safetensors").unlink()
    weights = load_file(single / "model.safetensors")
    names = list(weights)
    weight_map = {}
    for n, part in enumerate((names[::3], names[1::3], names[2::3]), 1):
        file = f"model-{n:05d}-of-00003.safetensors"
        save_file({k: weights[k] for k in part}, sharded / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    manifests = [export_model(ModelStore(root), "tiny", ["fp32", "int8"]).manifest for root in (single.parent,
                                                                                               sharded.parent)]
    for dtype in ("fp32", "int8"):
        one, three = (m.variants[dtype] for m in manifests)
        assert one.files == three.files and one.files  # byte-identical graphs and weights
        assert one.parity == three.parity and three.quality is not None and three.quality.passed
    assert manifests[1].export_cost["checkpoint_bytes"] > 0.99 * manifests[0].export_cost["checkpoint_bytes"]
