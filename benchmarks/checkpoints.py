"""Seeded random-weight checkpoints in the exact shapes of published models, for the size benchmarks.

Random weights serve speed, memory, file size and export cost; quality stays with the real
samples and the gates (random weights cannot pass them: export with ``--skip-gates``).
Each checkpoint is what its publisher ships, but for the weights and the tokenizer:

- ``config.json`` carries the published values (below), transcribed from the config.json
  files of meta-llama/Llama-3.2-1B-Instruct, meta-llama/Llama-3.2-3B-Instruct and
  Qwen/Qwen2.5-1.5B-Instruct on the Hugging Face Hub: hidden size, layers, heads, KV heads,
  head size, intermediate size, vocabulary, rope theta and scaling, tied embeddings, context
  length, norm epsilon, initializer range. Only the bos/eos/pad ids are the sample
  tokenizer's (the published ids do not exist in it);
- the weights are bf16 safetensors as published, sharded like the published files (the 3B
  in two shards of at most 5 GB, with ``model.safetensors.index.json``), tensor names and
  order as transformers saves them; every matrix drawn from N(0, initializer_range²) as
  transformers initializes it (norms 1, biases 0), seeded per tensor, so a rebuild gives
  the same bytes;
- the tokenizer, its config, generation config and chat template are the sample's
  (SmolLM2-135M-Instruct): its 49,152 ids are a subset of every vocabulary here, and the
  embedding keeps the published row count.

Tensors are drawn, rounded to bf16 and written one at a time (large ones in row blocks)
straight into the safetensors layout, so building holds one block, never the model.
Checkpoints are cached in ``benchmarks/.cache/checkpoints/<name>/`` (git-ignored) and reused.

    python -m benchmarks.checkpoints NAME [--out DIR] [--seed N]

``--out DIR`` also makes ``DIR/NAME`` a model folder of hard links to the cached files, ready
for ``LOCAL_MODELS_DIR=DIR ortmodels export NAME --skip-gates``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache" / "checkpoints"
SAMPLE = "smollm2-135m-instruct"
#: What the sample contributes: tokenizer, its settings, generation defaults, chat template.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json")
#: The sample tokenizer's ids (``<|im_start|>`` = 1, ``<|im_end|>`` = 2), in place of the published ones.
SAMPLE_TOKEN_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
#: transformers' default ``max_shard_size`` ("5GB"), with which the published shards were cut.
HF_SHARD_BYTES = 5_000_000_000
#: Elements drawn at once (64 MB in fp32): the builder holds a few such blocks, whatever the tensor.
_BLOCK_ELEMENTS = 1 << 24
_COMPLETE = ".complete"

_LLAMA_3_2 = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False, "attention_dropout": 0.0,
    "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 131072, "mlp_bias": False,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 128256,
}

#: name → (published config.json values, maximum bytes per shard or None for one file).
MODELS: dict[str, tuple[dict[str, Any], int | None]] = {
    "llama-3.2-1b": ({**_LLAMA_3_2, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                      "num_attention_heads": 32, "head_dim": 64}, None),  # one 2.47 GB model.safetensors
    "llama-3.2-3b": ({**_LLAMA_3_2, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
                      "num_attention_heads": 24, "head_dim": 128}, HF_SHARD_BYTES),  # 4.97 GB + 1.46 GB
    "qwen2.5-1.5b": ({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0, "hidden_act": "silu",
        "hidden_size": 1536, "initializer_range": 0.02, "intermediate_size": 8960, "max_position_embeddings": 32768,
        "max_window_layers": 21, "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 32768,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
        "vocab_size": 151936,
    }, None),  # one 3.09 GB model.safetensors
}

Tensor = tuple[str, tuple[int, ...], str]  # name, shape, init ("normal", "ones", "zeros")


def tensors(config: dict[str, Any]) -> list[Tensor]:
    """Every tensor of a Llama/Qwen2 checkpoint, in the order transformers saves them."""
    hidden, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    heads, kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    bias = config["model_type"] == "qwen2" or bool(config.get("attention_bias"))
    out: list[Tensor] = [("model.embed_tokens.weight", (int(config["vocab_size"]), hidden), "normal")]
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        for proj, rows in (("q", heads * head_dim), ("k", kv * head_dim), ("v", kv * head_dim)):
            out.append((f"{p}self_attn.{proj}_proj.weight", (rows, hidden), "normal"))
            if bias:
                out.append((f"{p}self_attn.{proj}_proj.bias", (rows,), "zeros"))
        out += [(f"{p}self_attn.o_proj.weight", (hidden, heads * head_dim), "normal"),
                (f"{p}mlp.gate_proj.weight", (inter, hidden), "normal"),
                (f"{p}mlp.up_proj.weight", (inter, hidden), "normal"),
                (f"{p}mlp.down_proj.weight", (hidden, inter), "normal"),
                (f"{p}input_layernorm.weight", (hidden,), "ones"),
                (f"{p}post_attention_layernorm.weight", (hidden,), "ones")]
    out.append(("model.norm.weight", (hidden,), "ones"))
    if not config.get("tie_word_embeddings"):
        out.append(("lm_head.weight", (int(config["vocab_size"]), hidden), "normal"))
    return out


def _nbytes(shape: tuple[int, ...]) -> int:
    return 2 * int(np.prod(shape))  # bf16


def shards(entries: list[Tensor], max_bytes: int | None) -> list[list[Tensor]]:
    """Tensors cut into files in order, a new file when the next tensor would pass ``max_bytes``."""
    if max_bytes is None:
        return [entries]
    files: list[list[Tensor]] = [[]]
    size = 0
    for entry in entries:
        if files[-1] and size + _nbytes(entry[1]) > max_bytes:
            files.append([])
            size = 0
        files[-1].append(entry)
        size += _nbytes(entry[1])
    return files


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits (uint16), rounded to nearest even as torch rounds."""
    bits = np.array(values, dtype=np.float32).view(np.uint32)  # a copy, worked on in place
    rounding = bits >> 16
    rounding &= 1
    rounding += 0x7FFF
    bits += rounding
    bits >>= 16
    return bits.astype(np.uint16)


def _blocks(entry: Tensor, index: int, seed: int, std: float) -> Iterator[np.ndarray]:
    """The tensor's bf16 bits in row blocks; its draws depend only on (seed, index)."""
    _, shape, init = entry
    if init != "normal":
        yield np.full(shape, 0x3F80 if init == "ones" else 0, dtype=np.uint16)
        return
    rng = np.random.default_rng([seed, index])
    row = int(np.prod(shape[1:]))
    step = max(1, _BLOCK_ELEMENTS // row)
    for start in range(0, shape[0], step):
        rows = min(step, shape[0] - start)
        block = rng.standard_normal((rows, *shape[1:]), dtype=np.float32)
        block *= std
        yield to_bf16(block)


def write_safetensors(path: Path, entries: list[tuple[int, Tensor]], seed: int, std: float) -> None:
    """Write one safetensors file, header first, then each tensor as it is drawn."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for _, (name, shape, _init) in entries:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + _nbytes(shape)]}
        offset += _nbytes(shape)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
    with path.open("wb") as out:
        out.write(len(text).to_bytes(8, "little"))
        out.write(text)
        for index, entry in entries:
            for block in _blocks(entry, index, seed, std):
                out.write(memoryview(block))


def build(config: dict[str, Any], folder: Path, *, tokenizer_from: Path, seed: int = 0,
          max_shard_bytes: int | None = None) -> Path:
    """Write a complete checkpoint into ``folder`` (which must not exist): config, weights, tokenizer.

    Written under a temporary name and renamed at the end, so an interrupted build leaves
    no folder that looks complete.
    """
    config = {**config, **SAMPLE_TOKEN_IDS}
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, partial / name)
    if not (partial / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tokenizer_from} has no tokenizer.json to copy (run 'ortmodels samples').")
    (partial / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    numbered = list(enumerate(tensors(config)))
    files = shards([e for _, e in numbered], max_shard_bytes)
    std = float(config["initializer_range"])
    if len(files) == 1:
        write_safetensors(partial / "model.safetensors", numbered, seed, std)
    else:
        weight_map, start = {}, 0
        for n, file in enumerate(files, 1):
            file_name = f"model-{n:05d}-of-{len(files):05d}.safetensors"
            write_safetensors(partial / file_name, numbered[start : start + len(file)], seed, std)
            weight_map.update(dict.fromkeys((name for name, _, _ in file), file_name))
            start += len(file)
        total = sum(_nbytes(shape) for _, (_, shape, _) in numbered)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (partial / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (partial / _COMPLETE).write_text(json.dumps({"seed": seed}) + "\n")
    partial.rename(folder)
    return folder


def checkpoint(name: str, *, seed: int = 0, cache: Path = CACHE, tokenizer_from: Path | None = None) -> Path:
    """The cached checkpoint ``name``, built first when absent (or built with another seed)."""
    config, max_shard_bytes = MODELS[name]
    folder = cache / (name if seed == 0 else f"{name}-seed{seed}")
    if (folder / _COMPLETE).is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    if tokenizer_from is None:
        from ortmodels.config import load_settings

        tokenizer_from = load_settings().local_models_dir / SAMPLE
    return build(config, folder, tokenizer_from=tokenizer_from, seed=seed, max_shard_bytes=max_shard_bytes)


def link_into(folder: Path, models_dir: Path) -> Path:
    """``models_dir/<folder's name>``: hard links to the checkpoint's files (copies across file systems)."""
    target = models_dir / folder.name
    target.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file() and path.name != _COMPLETE and not (target / path.name).exists():
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copy2(path, target / path.name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(MODELS))
    parser.add_argument("--out", type=Path, help="also link the checkpoint into DIR/NAME (a models folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-from", type=Path, help=f"folder of the tokenizer files (default: the {SAMPLE} sample)")
    args = parser.parse_args()
    folder = checkpoint(args.name, seed=args.seed, tokenizer_from=args.tokenizer_from)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    print(f"{folder} ({size / 1e9:.2f} GB of weights)")
    if args.out:
        print(link_into(folder, args.out))


if __name__ == "__main__":
    main()
