"""benchmarks/checkpoints.py: published shapes, bf16 shards cut as published, weights transformers reads.

The real shapes are checked on their tensor lists (parameter counts and shard sizes as
published); building goes through the same `build` with a tiny config of each family.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import checkpoints
from benchmarks.checkpoints import MODELS, build, shards, tensors, to_bf16
from ortmodels.export.checkpoint.weights import open_weights
from tests.conftest import CHAT_SAMPLE, SAMPLES_DIR

#: Parameters of the published checkpoints (the model cards' 1.24B, 3.21B and 1.54B).
PUBLISHED_PARAMETERS = {"llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824, "qwen2.5-1.5b": 1_543_714_304}
TOKENIZER = SAMPLES_DIR / CHAT_SAMPLE


def _tiny(name: str) -> dict:
    """``name``'s config at a tiny size: every other published value (rope, ties, biases) kept."""
    return {**MODELS[name][0], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def test_the_shapes_have_the_published_parameter_counts_and_shards() -> None:
    for name, count in PUBLISHED_PARAMETERS.items():
        config, max_shard = MODELS[name]
        entries = tensors(config)
        assert sum(int(np.prod(shape)) for _, shape, _ in entries) == count, name
        assert "lm_head.weight" not in [n for n, _, _ in entries]  # all three tie their embeddings
        sizes = [round(sum(2 * int(np.prod(s)) for _, s, _ in f) / 1e9, 2) for f in shards(entries, max_shard)]
        assert sizes == {"llama-3.2-1b": [2.47], "llama-3.2-3b": [4.97, 1.46], "qwen2.5-1.5b": [3.09]}[name]


def test_bf16_rounds_as_torch_does() -> None:
    import torch

    values = torch.randn(10_000) * 0.02
    values[:3] = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.0 - 2**-8])  # ties: to even
    expected = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bf16(values.numpy()), expected)


@pytest.mark.parametrize("name", ["qwen2.5-1.5b", "llama-3.2-3b"])
def test_a_tiny_build_is_what_transformers_loads(tmp_path: Path, name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    config = _tiny(name)
    folder = build(config, tmp_path / name, tokenizer_from=TOKENIZER, max_shard_bytes=2_000_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2 and len(list(folder.glob("*.safetensors"))) >= 2
    model, loading = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, output_loading_info=True)
    assert not any(loading.values()), loading  # no missing, unexpected or mismatched tensor
    state = {k: v.float().numpy() for k, v in model.state_dict().items()}
    with open_weights(folder) as weights:
        assert sorted(weights.names()) == sorted(index["weight_map"])
        for tensor in weights.names():
            assert np.array_equal(weights.get(tensor), state[tensor]), tensor
        down = weights.get("model.layers.1.mlp.down_proj.weight")
        assert abs(down.std() - config["initializer_range"]) < 0.002 and abs(down.mean()) < 0.002
        assert (weights.get("model.norm.weight") == 1).all()
        if name.startswith("qwen"):
            assert (weights.get("model.layers.0.self_attn.k_proj.bias") == 0).all()
    written = json.loads((folder / "config.json").read_text())
    assert written["vocab_size"] == MODELS[name][0]["vocab_size"]  # the published vocabulary, not the tokenizer's
    assert (written["bos_token_id"], written["eos_token_id"]) == (1, 2)  # the sample tokenizer's <|im_start|>, <|im_end|>
    assert model.config.rope_scaling == MODELS[name][0]["rope_scaling"] and model.config.tie_word_embeddings
    for file in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (folder / file).read_bytes() == (TOKENIZER / file).read_bytes()


def test_a_rebuild_gives_the_same_bytes_whatever_the_block_size(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = _tiny("llama-3.2-1b")
    first = build(config, tmp_path / "a", tokenizer_from=TOKENIZER)
    monkeypatch.setattr(checkpoints, "_BLOCK_ELEMENTS", 1000)  # many blocks per tensor
    second = build(config, tmp_path / "b", tokenizer_from=TOKENIZER)
    other_seed = build(config, tmp_path / "c", tokenizer_from=TOKENIZER, seed=1)
    assert _sha(first) == _sha(second) != _sha(other_seed)


def test_the_cache_is_reused_and_an_interrupted_build_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "tiny", (_tiny("llama-3.2-1b"), None))
    (tmp_path / "tiny.partial").mkdir()  # what an interrupted build leaves
    folder = checkpoints.checkpoint("tiny", cache=tmp_path, tokenizer_from=TOKENIZER)
    assert folder == tmp_path / "tiny" and not (tmp_path / "tiny.partial").exists()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert checkpoints.checkpoint("tiny", cache=tmp_path, tokenizer_from=TOKENIZER) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    linked = checkpoints.link_into(folder, tmp_path / "models")
    assert (linked / "model.safetensors").samefile(folder / "model.safetensors")
    assert not (linked / ".complete").exists()
