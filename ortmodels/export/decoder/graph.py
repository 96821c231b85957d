"""Our own decoder graph for Llama-like checkpoints, built from safetensors + config.json.

Why not optimum's graph: its ~3000 nodes are mostly dynamic shape and mask arithmetic that
runs on every decode step. This builder writes onnxruntime's fused contrib operators
directly, the way onnxruntime-genai's model builder does: (Skip)SimplifiedLayerNormalization,
one packed QKV MatMul, GroupQueryAttention with the rotary embedding inside (cos/sin caches
as initializers; ``seqlens_k`` and ``total_sequence_length`` derived from
``attention_mask`` in the graph), one packed gate/up MatMul, and ``MatMulNBits`` weights
written directly for int8/int4. About 10 nodes per layer.

Families (`families.FAMILIES`): Llama, Mistral, Qwen2, Qwen3 (per-head q/k norms),
Phi-3 (packed weights, partial rotary), Gemma, Gemma 2 (norms around attention and MLP,
attention and final logit soft-capping, sliding-window layers) and Gemma 3 text (q/k norms,
a second rotary base for its sliding layers).

Interface (what `engine/decoder.py` binds): inputs ``input_ids``, ``attention_mask``,
``past_key_values.N.key/value`` [batch, kv_heads, past, head_dim] and ``logits_to_keep``
(int64 [1]: how many last positions get logits, 0 = all, as in transformers; the runtime
passes 1 so a long prompt's prefill computes one row of logits); outputs ``logits`` and
``present.N.key/value``. (An initializer default would hide the input from IO binding.)

Sliding-window layers hold only their window: a graph with any adds the input
``sliding_attention_mask`` (int64 [batch, sliding total]), the mask of what the sliding
layers' caches hold (their own, shorter past: the runtime drops the tokens that fell out of
the window), from which their GroupQueryAttention reads ``seqlens_k`` and the total length;
their rotary positions stay absolute through GroupQueryAttention's ``position_ids`` input,
computed from ``attention_mask`` (row b's new tokens sit at its valid length minus the new
ones). Keys are cached after the rotation, so a dropped prefix changes no score; the window
mask works on the distances within the cache, which dropping a prefix keeps. The model's
metadata ``ortmodels.layer_windows`` (JSON, one entry per layer: its window or null) says
which ``past_key_values`` are sliding.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ExportError
from ..checkpoint.weights import CheckpointWeights, open_weights
from .families import (
    ACTIVATIONS,
    FAMILIES,
    Family,
    activation_name,
    layer_windows,
    supports,
)
from .nbits import quantize_matrix

if TYPE_CHECKING:
    from .calibration import Hessians

__all__ = ["EMBEDDING_BLOCK", "LAYER_WINDOWS_KEY", "SLIDING_MASK", "GraphPrecision", "build_decoder_graph",
           "supports"]

logger = logging.getLogger(__name__)

_OPSET = 17
_INLINE_BYTES = 1024  # smaller initializers stay in the graph file
_DATA_ALIGNMENT = 4096  # a page: onnxruntime maps aligned external data instead of copying it
_MS = "com.microsoft"
#: The sliding layers' own attention mask (see the module docstring); the engine binds it by this name.
SLIDING_MASK = "sliding_attention_mask"
#: Model metadata: each layer's window (or null), JSON.
LAYER_WINDOWS_KEY = "ortmodels.layer_windows"
EMBEDDING_BLOCK = 32  # a tied, quantized variant's GatherBlockQuantized table (see _Builder.embedding)


@dataclass(frozen=True)
class GraphPrecision:
    """How the weights are stored: float type, and block-wise bits for the linear layers."""

    dtype: str = "fp32"  # fp32 | fp16: weights, activations and KV cache
    #: fp16 only: the residual stream, its adds and the norms stay fp32 (casts around each
    #: block), for models whose hidden states outgrow fp16's 65504 (Gemma's do).
    fp32_residual: bool = False
    bits: int | None = None  # 4 | 8: MatMulNBits for every linear layer; None: float MatMul
    block_size: int = 32
    symmetric: bool = False  # 4-bit matrices: symmetric blocks (no zero points) or min/max ones
    symmetric8: bool = True  # 8-bit matrices: symmetric is as accurate there, and skips zero points
    search: bool = True  # per-block range search (nbits.quantize_matrix)
    lm_head_bits: int | None = None  # None: same as ``bits``
    accuracy_level: int = 4  # int8 activations on the CPU
    #: Matrices stored at 8 bits when ``bits`` is 4: "mlp.down_proj" (every layer) or "0.mlp.down_proj".
    #: Names are our packed matrices' (self_attn.qkv_proj, mlp.gate_up_proj), whatever the checkpoint stores.
    eight_bit: tuple[str, ...] = field(default_factory=tuple)
    #: How the 4-bit matrices' blocks are rounded (`nbits.METHODS`); 8-bit ones always round to nearest.
    #: ``gptq`` needs the Hessians of the fp32 graph's linear inputs (`calibration.collect_hessians`).
    rounding: str = "rtn"
    #: A tied, quantized model's embedding table (`_Builder.embedding`), blocks of 32: 8 bits symmetric, or
    #: 4 bits asymmetric (zero points) with the range search.
    embedding_bits: int = 8

    @property
    def head_bits(self) -> int | None:
        """The bits of ``lm_head``: ``lm_head_bits``, else ``bits``."""
        return self.lm_head_bits if self.lm_head_bits is not None else self.bits

    def bits_for(self, layer: int, matrix: str) -> int | None:
        """The bits of one layer's matrix (our packed names): ``bits``, or 8 where ``eight_bit`` names it."""
        if self.bits == 4 and (matrix in self.eight_bit or f"{layer}.{matrix}" in self.eight_bit):
            return 8
        return self.bits

    def recipe(self) -> dict[str, Any]:
        """The manifest's record of how the variant was made (``graph`` names the graph builder)."""
        return {"method": "ortmodels decoder_graph (MatMulNBits)" if self.bits else "ortmodels decoder_graph",
                "graph": "ortmodels", **asdict(self)}


def _rotary_caches(config: Any, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [positions, rotary_dim/2], from transformers' own rotary parameters."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = getattr(config, "rope_scaling", None) or {}
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[scaling.get("rope_type", scaling.get("type", "default"))](
        config, "cpu"
    )
    freqs = torch.outer(torch.arange(length, dtype=torch.int64).float(), inv_freq.float())
    return (freqs.cos() * attention_factor).numpy(), (freqs.sin() * attention_factor).numpy()


def _local_rope_config(config: Any) -> Any:
    """Gemma 3's sliding layers: rope_local_base_freq, no scaling (as Gemma3TextModel does)."""
    import copy

    local = copy.deepcopy(config)
    local.rope_theta = config.rope_local_base_freq
    local.rope_scaling = {"rope_type": "default"}
    return local


@dataclass
class TransformersFacts:
    """What the graph takes from transformers' reading of a config: its defaults and rotary parameters.

    Each layer's sliding window, whether the head is tied (a family's default where the
    config is silent), and the rotary cos/sin caches. Worked out once, by the export's
    reference child (`reference_process`), and handed to every build, so the export's own
    process never imports transformers or torch; `save`/`load` carry them as JSON and npz.
    """

    windows: list[int | None]
    tie_word_embeddings: bool
    rotary: dict[str, tuple[np.ndarray, np.ndarray]]  # "global", and "local" for Gemma 3's sliding layers

    @classmethod
    def of(cls, checkpoint: Path) -> TransformersFacts:
        """Read with transformers (imports it and torch)."""
        from transformers import AutoConfig

        config = json.loads((checkpoint / "config.json").read_text())
        hf_config = AutoConfig.from_pretrained(checkpoint)
        family = FAMILIES[config["model_type"]]
        windows = layer_windows(hf_config, family)
        positions = int(config.get("max_position_embeddings", 4096))
        rotary = {"global": _rotary_caches(hf_config, positions)}
        if family.local_rope and any(windows):
            rotary["local"] = _rotary_caches(_local_rope_config(hf_config), positions)
        return cls(windows, bool(getattr(hf_config, "tie_word_embeddings", True)), rotary)

    def save(self, folder: Path) -> None:
        np.savez(folder / "graph_facts.npz", **{f"{k}.{part}": v for k, pair in self.rotary.items()
                                                 for part, v in zip(("cos", "sin"), pair)})
        (folder / "graph_facts.json").write_text(json.dumps(
            {"windows": self.windows, "tie_word_embeddings": self.tie_word_embeddings, "rotary": sorted(self.rotary)}))

    @classmethod
    def load(cls, folder: Path) -> TransformersFacts:
        facts = json.loads((folder / "graph_facts.json").read_text())
        with np.load(folder / "graph_facts.npz", allow_pickle=False) as arrays:
            rotary = {k: (arrays[f"{k}.cos"], arrays[f"{k}.sin"]) for k in facts["rotary"]}
        return cls(facts["windows"], bool(facts["tie_word_embeddings"]), rotary)


class _Graph:
    """Nodes, initializers and unique names for one ONNX graph.

    With ``data_file``, every initializer of 1 KiB or more is written there as it is made
    (page-aligned, so onnxruntime can map it) and the graph keeps only its location: the
    export never holds the whole model's weights in memory, only the tensor at hand.
    """

    def __init__(self, float_type: int, data_file: Path | None = None) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.float_type = float_type
        self._count = 0
        self.data_file = data_file
        self._data = data_file.open("wb") if data_file is not None else None
        self._offset = 0

    def close(self) -> None:
        if self._data is not None:
            self._data.close()

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, name: str = "",
             domain: str = "", **attrs: Any) -> list[str]:
        from onnx import helper

        self._count += 1
        base = f"/{name or op}_{self._count}"
        names = outputs if isinstance(outputs, list) else [f"{base}/out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=base, domain=domain or None, **attrs))
        return names

    def tensor(self, name: str, array: np.ndarray) -> str:
        from onnx import TensorProto, helper, numpy_helper

        array = np.ascontiguousarray(array)
        if self._data is None or self.data_file is None or array.nbytes < _INLINE_BYTES:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        padding = -self._offset % _DATA_ALIGNMENT
        self._data.write(b"\0" * padding)
        self._offset += padding
        self._data.write(memoryview(array).cast("B"))
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
                             dims=array.shape, data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.data_file.name), ("offset", self._offset), ("length", array.nbytes)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        self._offset += array.nbytes
        self.initializers.append(tensor)
        return name

    def ints(self, name: str, values: list[int]) -> str:
        return self.tensor(name, np.array(values, dtype=np.int64))


class _Builder:
    def __init__(self, config: dict[str, Any], facts: TransformersFacts, weights: CheckpointWeights,
                 precision: GraphPrecision, data_file: Path | None = None, hessians: Hessians | None = None) -> None:
        from onnx import TensorProto

        if precision.rounding == "gptq" and hessians is None:
            raise ExportError("The gptq rounding needs the calibration Hessians of the fp32 graph.")
        self.config, self.facts, self.weights, self.precision = config, facts, weights, precision
        self.hessians = hessians
        self.family: Family = FAMILIES[config["model_type"]]
        self.np_float = np.float16 if precision.dtype == "fp16" else np.float32
        self.mixed = precision.dtype == "fp16" and precision.fp32_residual
        self.np_stream = np.float32 if self.mixed else self.np_float
        self.g = _Graph(TensorProto.FLOAT16 if precision.dtype == "fp16" else TensorProto.FLOAT, data_file)
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.kv_heads = int(config.get("num_key_value_heads") or self.heads)
        self.head_dim = int(config.get("head_dim") or self.hidden // self.heads)
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.activation = ACTIVATIONS[activation_name(config)]
        self.windows = facts.windows

    def floats(self, name: str, array: np.ndarray, stream: bool = False) -> str:
        """An initializer in the activations' float type, or the residual stream's."""
        # One copy at most (none for a contiguous fp32 array): astype then the graph's
        # contiguous copy held a transposed matrix three times.
        return self.g.tensor(name, np.ascontiguousarray(array, dtype=self.np_stream if stream else self.np_float))

    def to_stream(self, x: str) -> str:
        """A block's output into the residual stream's type (a Cast to fp32 when mixed)."""
        from onnx import TensorProto

        return self.g.node("Cast", [x], to=TensorProto.FLOAT)[0] if self.mixed else x

    def to_activations(self, x: str) -> str:
        """A normed stream value into the blocks' type (a Cast to fp16 when mixed)."""
        from onnx import TensorProto

        return self.g.node("Cast", [x], to=TensorProto.FLOAT16)[0] if self.mixed else x

    def linear(self, x: str, weight: np.ndarray, name: str, bits: int | None) -> str:
        """x @ weight.T for a PyTorch [out, in] weight: float MatMul or MatMulNBits."""
        if bits is None:
            return self.g.node("MatMul", [x, self.floats(f"{name}.weight", weight.T)], name=name)[0]
        p = self.precision
        symmetric = p.symmetric8 if bits == 8 else p.symmetric
        method = p.rounding if bits == 4 else "rtn"
        hessian = self.hessians.get(name) if method == "gptq" and self.hessians is not None else None
        if method == "gptq" and (hessian is None or weight.shape[1] % p.block_size):
            logger.warning("%s: no calibration Hessian or partial blocks; rounded to nearest instead.", name)
            method = "rtn"
        q = quantize_matrix(weight, bits, p.block_size, symmetric=symmetric, search=p.search, method=method,
                            hessian=hessian)
        inputs = [x, self.g.tensor(f"{name}.qweight", q.packed),
                  self.floats(f"{name}.scales", q.scales.reshape(-1))]
        if q.zero_points is not None:
            inputs.append(self.g.tensor(f"{name}.zero_points", q.zero_points))
        return self.g.node("MatMulNBits", inputs, name=name, domain=_MS, K=q.k, N=q.n, bits=bits,
                           block_size=p.block_size, accuracy_level=p.accuracy_level)[0]

    @property
    def tied(self) -> bool:
        """Whether ``lm_head`` is the embedding matrix (stated, or no head of its own stored)."""
        return self.facts.tie_word_embeddings or "lm_head.weight" not in self.weights

    @property
    def head_bits(self) -> int | None:
        return self.precision.head_bits

    def embedding(self, embed: np.ndarray) -> tuple[str | None, str]:
        """The input embedding: (its float initializer or None, the gathered rows).

        A quantized variant of a tied model gathers its embedding from an 8-bit copy
        (``GatherBlockQuantized``: symmetric blocks of 32, plain absmax scales, a quarter of
        fp32's bytes) instead of the fp32 table, as genai's builder does: the sample's int4
        file went from 236 to 159 MB with the same gate figures (its table is exactly 8-bit:
        its checkpoint comes from a GGUF whose embedding is Q8_0); resident memory over the
        benchmark's prompts measured the same either way (the table is mapped). No range
        search here: the int8 recipe's clipped blocks made the sample answer "la Femme, la
        Femme, ..." through its embedding, which the gates caught. ``embedding_bits=4`` (not
        used by default, see `int4_recipes.TABLE_BITS`) takes asymmetric blocks with the search
        instead (the sample's last-resort mix: perplexity 1.081x fp32's, against 1.092x with absmax blocks).
        Tied only: an untied checkpoint keeps its table as it is (nothing else reads it).
        """
        g = self.g
        if not self.tied or self.head_bits is None:
            name = self.floats("embed_tokens.weight", embed)
            return name, g.node("Gather", [name, "input_ids"], axis=0)[0]
        bits = self.precision.embedding_bits
        # 4 bits: asymmetric blocks with the range search (zero points packed two to a byte, as MatMulNBits')
        q = quantize_matrix(embed, bits, EMBEDDING_BLOCK, symmetric=bits == 8, search=bits == 4)
        inputs = ["embed_tokens.qweight", "input_ids", "embed_tokens.scales"]
        g.tensor("embed_tokens.qweight", q.packed.reshape(q.n, -1))
        self.floats("embed_tokens.scales", q.scales)
        if q.zero_points is not None:
            inputs.append(g.tensor("embed_tokens.zero_points", q.zero_points.reshape(q.n, -1)))
        return None, g.node("GatherBlockQuantized", inputs, domain=_MS, bits=bits, block_size=EMBEDDING_BLOCK,
                            gather_axis=0, quantize_axis=1)[0]

    def bits_for(self, layer: int, matrix: str) -> int | None:
        return self.precision.bits_for(layer, matrix)

    def gamma(self, name: str, weight: np.ndarray, stream: bool = False) -> str:
        """An RMS norm's scale; Gemma's (1 + w) is folded in here, in fp32 before the cast."""
        return self.floats(f"{name}.weight", weight + np.float32(self.family.norm_offset), stream)

    def build(self) -> Any:
        from onnx import TensorProto, helper

        g, w, cfg = self.g, self.weights.get, self.config
        batch, seq, past, total = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, total]),
        ]
        outputs = [helper.make_tensor_value_info("logits", g.float_type, [batch, "kept_positions", cfg["vocab_size"]])]
        for i in range(self.layers):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kind}", g.float_type, [batch, self.kv_heads, past, self.head_dim]))
                outputs.append(helper.make_tensor_value_info(
                    f"present.{i}.{kind}", g.float_type, [batch, self.kv_heads, total, self.head_dim]))
        inputs.append(helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, [1]))

        # seqlens_k = valid tokens - 1 per row; total_sequence_length = the mask's width.
        one = g.ints("const.one_i64", [1])
        one_scalar = g.tensor("const.one_scalar", np.array(1, dtype=np.int64))
        valid = g.node("ReduceSum", ["attention_mask", one], keepdims=0)[0]
        self.seqlens, self.total_len = self.lengths("attention_mask", valid)
        if any(self.windows):
            inputs.append(helper.make_tensor_value_info(SLIDING_MASK, TensorProto.INT64, [batch, "sliding_total"]))
            self.sliding_lengths = self.lengths(SLIDING_MASK)
            # Absolute positions of the new tokens: row b's valid length - sequence_length + [0, sequence_length).
            steps = g.node("Gather", [g.node("Shape", ["input_ids"])[0], one_scalar], axis=0)[0]
            first = g.node("Sub", [g.node("Unsqueeze", [valid, one])[0], steps])[0]
            zero = g.tensor("const.zero_scalar", np.array(0, dtype=np.int64))
            self.position_ids = g.node("Add", [first, g.node("Range", [zero, steps, one_scalar])[0]])[0]
        cos, sin = self.facts.rotary["global"]
        self.rotary = {"global": (self.floats("cos_cache", cos), self.floats("sin_cache", sin))}
        if "local" in self.facts.rotary:  # Gemma 3's sliding layers
            cos, sin = self.facts.rotary["local"]
            self.rotary["local"] = (self.floats("cos_cache_local", cos), self.floats("sin_cache_local", sin))

        # Not held through the layers (1 GB in fp32 at 1B): a quantized tied head reads it again.
        embed_name, x = self.embedding(w("model.embed_tokens.weight"))
        x = self.to_stream(x)
        if self.family.scaled_embedding:  # sqrt(hidden) rounded to the graph's float type, as transformers does
            scale = self.floats("embed_scale", np.array(self.hidden**0.5, dtype=np.float32), stream=True)
            x = g.node("Mul", [x, scale])[0]
        residual, skip = x, None
        for i in range(self.layers):
            residual, skip = self.layer(i, residual, skip)
        normed, _ = self.norm(residual, skip, w("model.norm.weight"), "final_norm", last=True)
        g.node("Identity", [self.lm_head(normed, embed_name)], ["logits"])

        graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, initializer=g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET), helper.make_opsetid(_MS, 1)],
                                  producer_name="ortmodels")
        model.ir_version = 9
        if any(self.windows):
            helper.set_model_props(model, {LAYER_WINDOWS_KEY: json.dumps(self.windows)})
        return model

    def lengths(self, mask: str, valid: str | None = None) -> tuple[str, str]:
        """(seqlens_k, total_sequence_length) of GroupQueryAttention from a [batch, total] mask."""
        from onnx import TensorProto

        g, one = self.g, "const.one_i64"
        if valid is None:
            valid = g.node("ReduceSum", [mask, one], keepdims=0)[0]
        seqlens = g.node("Cast", [g.node("Sub", [valid, one])[0]], to=TensorProto.INT32)[0]
        width = g.node("Gather", [g.node("Shape", [mask])[0], "const.one_scalar"], axis=0)[0]
        return seqlens, g.node("Cast", [width], to=TensorProto.INT32)[0]

    def layer(self, i: int, residual: str, skip: str | None) -> tuple[str, str]:
        """One decoder layer on the residual stream; returns (residual, the skip still to be added)."""
        w, fam, lp = self.weights.get, self.family, f"model.layers.{i}."
        normed, residual = self.norm(residual, skip, w(lp + "input_layernorm.weight"), f"layers.{i}.input_norm")
        skip = self.linear(self.attention(i, normed), w(lp + "self_attn.o_proj.weight"), f"layers.{i}.attn.o_proj",
                           self.bits_for(i, "self_attn.o_proj"))
        if not fam.sandwich_norms:
            skip = self.to_stream(skip)
        if fam.sandwich_norms:  # Gemma 2/3 normalize the attention output before the residual add
            skip = self.plain_norm(self.to_stream(skip), w(lp + "post_attention_layernorm.weight"),
                                   f"layers.{i}.post_attention_norm", stream=True)
            pre_mlp = w(lp + "pre_feedforward_layernorm.weight")
        else:
            pre_mlp = w(lp + "post_attention_layernorm.weight")
        normed, residual = self.norm(residual, skip, pre_mlp, f"layers.{i}.pre_mlp_norm")
        skip = self.mlp(i, normed)
        if fam.sandwich_norms:
            skip = self.plain_norm(self.to_stream(skip), w(lp + "post_feedforward_layernorm.weight"),
                                   f"layers.{i}.post_mlp_norm", stream=True)
        else:
            skip = self.to_stream(skip)
        return residual, skip

    def attention(self, i: int, normed: str) -> str:
        """Packed q/k/v projection (+ bias, + per-head q/k norms) into GroupQueryAttention."""
        g, w, fam, lp = self.g, self.weights.get, self.family, f"model.layers.{i}.self_attn."
        if fam.fused_weights:
            qkv_weight = w(lp + "qkv_proj.weight")
        else:
            qkv_weight = np.concatenate([w(lp + f"{m}_proj.weight") for m in "qkv"], axis=0)
        qkv = self.linear(normed, qkv_weight, f"layers.{i}.attn.qkv_proj", self.bits_for(i, "self_attn.qkv_proj"))
        if fam.qkv_bias:
            bias = np.concatenate([w(lp + f"{m}_proj.bias") for m in "qkv"])
            qkv = g.node("Add", [qkv, self.floats(f"layers.{i}.attn.qkv_proj.bias", bias)])[0]
        if fam.qk_norm:
            q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
            sizes = g.ints(f"layers.{i}.attn.qkv_split", [q_size, kv_size, kv_size])
            q, k, v = g.node("Split", [qkv, sizes], 3, axis=-1)
            q = self.head_norm(q, self.heads, w(lp + "q_norm.weight"), f"layers.{i}.attn.q_norm")
            k = self.head_norm(k, self.kv_heads, w(lp + "k_norm.weight"), f"layers.{i}.attn.k_norm")
            qkv_inputs = [q, k, v]
        else:
            qkv_inputs = [qkv, "", ""]
        window = self.windows[i]
        cos, sin = self.rotary["local" if window and "local" in self.rotary else "global"]
        scalar = float(self.config["query_pre_attn_scalar"]) if fam.query_scalar else float(self.head_dim)
        attrs: dict[str, Any] = {}
        lengths = [self.seqlens, self.total_len]
        positions: list[str] = []
        if window:
            attrs["local_window_size"] = window
            lengths, positions = list(self.sliding_lengths), [self.position_ids]
        if self.config.get("attn_logit_softcapping"):
            attrs["softcap"] = float(self.config["attn_logit_softcapping"])
        return g.node(
            "GroupQueryAttention",
            [*qkv_inputs, f"past_key_values.{i}.key", f"past_key_values.{i}.value", *lengths, cos, sin, *positions],
            [f"/layers.{i}/attn/out", f"present.{i}.key", f"present.{i}.value"],
            name=f"layers.{i}.attn", domain=_MS, num_heads=self.heads, kv_num_heads=self.kv_heads,
            scale=scalar**-0.5, do_rotary=1, rotary_interleaved=0, **attrs,
        )[0]

    def head_norm(self, x: str, heads: int, weight: np.ndarray, name: str) -> str:
        """RMS norm of each head's vector: [.., heads * head_dim] viewed as [.., heads, head_dim]."""
        g = self.g
        shaped = g.node("Reshape", [x, g.ints(f"{name}.heads_shape", [0, 0, heads, self.head_dim])])[0]
        normed = self.plain_norm(shaped, weight, name)
        return g.node("Reshape", [normed, g.ints(f"{name}.flat_shape", [0, 0, heads * self.head_dim])])[0]

    def mlp(self, i: int, normed: str) -> str:
        """Packed gate/up projection, activation(gate) * up, down projection."""
        g, w, lp = self.g, self.weights.get, f"model.layers.{i}.mlp."
        if self.family.fused_weights:
            gate_up = w(lp + "gate_up_proj.weight")
        else:
            gate_up = np.concatenate([w(lp + "gate_proj.weight"), w(lp + "up_proj.weight")], axis=0)
        gu = self.linear(normed, gate_up, f"layers.{i}.mlp.gate_up_proj", self.bits_for(i, "mlp.gate_up_proj"))
        half = gate_up.shape[0] // 2
        gate, up = g.node("Split", [gu, g.ints(f"layers.{i}.mlp.split", [half, half])], 2, axis=-1)
        if self.activation == "gelu_tanh":
            act = g.node("FastGelu", [gate], domain=_MS)[0]
        else:
            act = g.node("Mul", [gate, g.node("Sigmoid", [gate])[0]])[0]
        return self.linear(g.node("Mul", [act, up])[0], w(lp + "down_proj.weight"), f"layers.{i}.mlp.down_proj",
                           self.bits_for(i, "mlp.down_proj"))

    def lm_head(self, normed: str, embed_name: str | None) -> str:
        """Logits of the last ``logits_to_keep`` positions (0 keeps all), soft-capped where the family does.

        A tied float head shares the embedding initializer through Gemm(transB=1) on the
        positions flattened to 2-D, so the matrix is stored once; a quantized head is its own
        MatMulNBits matrix either way.
        """
        g, cfg = self.g, self.config
        one = "const.one_i64"
        start = g.node("Neg", ["logits_to_keep"])[0]
        end = g.tensor("const.int64_max", np.array([np.iinfo(np.int64).max], dtype=np.int64))
        kept = g.node("Slice", [normed, start, end, one])[0]
        tied, bits = self.tied, self.head_bits
        if tied and bits is None:
            flat = g.node("Reshape", [kept, g.ints("lm_head.flat_shape", [-1, self.hidden])])[0]
            rows = g.node("Gemm", [flat, embed_name], name="lm_head", transB=1)[0]
            shape = g.node("Concat", [g.node("Shape", [kept], start=0, end=2)[0],
                                      g.ints("lm_head.vocab", [int(cfg["vocab_size"])])], axis=0)[0]
            logits = g.node("Reshape", [rows, shape])[0]
        else:
            head = self.weights.get("model.embed_tokens.weight" if tied else "lm_head.weight")
            logits = self.linear(kept, head, "lm_head", bits)
            del head
        cap = cfg.get("final_logit_softcapping")
        if cap:
            c = self.floats("final_logit_softcap", np.array(float(cap), dtype=np.float32))
            logits = g.node("Mul", [g.node("Tanh", [g.node("Div", [logits, c])[0]])[0], c])[0]
        return logits

    def plain_norm(self, x: str, weight: np.ndarray, name: str, stream: bool = False) -> str:
        """RMS norm over the last axis, with no residual add (``stream``: on a stream-typed value)."""
        return self.g.node("SimplifiedLayerNormalization", [x, self.gamma(name, weight, stream)], name=name,
                           axis=-1, epsilon=self.eps, stash_type=1)[0]

    def norm(self, residual: str, skip: str | None, weight: np.ndarray, name: str,
             last: bool = False) -> tuple[str, str]:
        """RMS norm of residual (+ skip, both stream-typed); returns (normed for the next block, the new residual)."""
        if skip is None:
            return self.to_activations(self.plain_norm(residual, weight, name, stream=True)), residual
        outs = [f"/{name}/out0"] + ([] if last else ["", "", f"/{name}/sum"])
        self.g.node("SkipSimplifiedLayerNormalization", [residual, skip, self.gamma(name, weight, stream=True)], outs,
                    name=name, domain=_MS, epsilon=self.eps)
        return self.to_activations(outs[0]), outs[-1]


def build_decoder_graph(checkpoint: Path, target: Path, precision: GraphPrecision,
                        hessians: Hessians | None = None, facts: TransformersFacts | None = None) -> dict[str, Any]:
    """Write ``target`` (model.onnx, weights in ``model.onnx.data``) for ``checkpoint``; returns the recipe.

    ``hessians``: the calibration of the fp32 graph's linear inputs, which a ``gptq`` precision needs.
    ``facts``: transformers' reading of the config; without them they are read here (imports torch).

    Weights are written to the data file tensor by tensor as the graph is built (mapped at
    load: a faster cold start), so memory holds one tensor at a time, never the model.
    """
    import onnx

    config = json.loads((checkpoint / "config.json").read_text())
    reason = supports(config)
    if reason:
        raise ExportError(f"The decoder graph builder does not handle {checkpoint.name}: {reason}.")
    facts = facts or TransformersFacts.of(checkpoint)
    with open_weights(checkpoint) as weights:
        builder = _Builder(config, facts, weights, precision, target.with_name(f"{target.name}.data"), hessians)
        try:
            model = builder.build()
        finally:
            builder.g.close()
    onnx.save_model(model, str(target))
    logger.info("Built %s (%s, %d nodes)", target, precision.dtype, len(model.graph.node))
    return precision.recipe()
