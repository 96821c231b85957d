"""Our own decoder graph for Llama-family checkpoints, built from safetensors + config.json.

Why not optimum's graph: its ~3000 nodes are mostly dynamic shape and mask arithmetic that
runs on every decode step. This builder writes onnxruntime's fused contrib operators
directly, the way onnxruntime-genai's model builder does: (Skip)SimplifiedLayerNormalization,
one packed QKV MatMul, GroupQueryAttention with the rotary embedding inside (cos/sin caches
as initializers; ``seqlens_k`` and ``total_sequence_length`` derived from
``attention_mask`` in the graph), one packed gate/up MatMul, and ``MatMulNBits`` weights
written directly for int8/int4. About 10 nodes per layer.

Interface (what `engine/decoder.py` binds): inputs ``input_ids``, ``attention_mask``,
``past_key_values.N.key/value`` [batch, kv_heads, past, head_dim] and ``logits_to_keep``
(int64 [1]: how many last positions get logits, 0 = all, as in transformers; the runtime
passes 1 so a long prompt's prefill computes one row of logits); outputs ``logits`` and
``present.N.key/value``. (An initializer default would hide the input from IO binding.)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from .checkpoint_weights import CheckpointWeights, open_weights
from .nbits import quantize_matrix

logger = logging.getLogger(__name__)

#: model_type → whether q/k/v projections carry a bias.
SUPPORTED_MODEL_TYPES = {"llama": False, "mistral": False, "qwen2": True}
_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
_OPSET = 17
_MS = "com.microsoft"


@dataclass(frozen=True)
class GraphPrecision:
    """How the weights are stored: float type, and block-wise bits for the linear layers."""

    dtype: str = "fp32"  # fp32 | fp16: weights, activations and KV cache
    bits: int | None = None  # 4 | 8: MatMulNBits for every linear layer; None: float MatMul
    block_size: int = 32
    symmetric: bool = False  # 4-bit matrices: symmetric blocks (no zero points) or min/max ones
    symmetric8: bool = True  # 8-bit matrices: symmetric is as accurate there, and skips zero points
    search: bool = True  # per-block range search (nbits.quantize_matrix)
    lm_head_bits: int | None = None  # None: same as ``bits``
    accuracy_level: int = 4  # int8 activations on the CPU
    #: Matrices stored at 8 bits when ``bits`` is 4: "mlp.down_proj" (every layer) or "0.mlp.down_proj".
    eight_bit: tuple[str, ...] = field(default_factory=tuple)

    def recipe(self) -> dict[str, Any]:
        return {"method": "ortmodels decoder_graph (MatMulNBits)" if self.bits else "ortmodels decoder_graph",
                **asdict(self)}


def supports(config: dict[str, Any]) -> str | None:
    """``None`` when the builder handles this checkpoint, else the reason it does not."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    if config.get("hidden_act", "silu") != "silu":
        return f"hidden_act {config.get('hidden_act')!r} is not silu"
    if config.get("mlp_bias"):
        return "MLP biases"
    if model_type == "llama" and config.get("attention_bias"):
        return "attention biases on a Llama checkpoint"
    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in _ROPE_TYPES:
        return f"rope_scaling type {rope_type!r}"
    window = config.get("sliding_window")
    uses_window = config.get("use_sliding_window", model_type == "mistral")
    if window and uses_window and int(window) < int(config.get("max_position_embeddings", 0)):
        return f"a sliding window of {window} tokens"
    return None


def _rotary_caches(checkpoint: Path, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [positions, rotary_dim/2], from transformers' own rotary parameters."""
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(checkpoint)
    scaling = getattr(config, "rope_scaling", None) or {}
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[scaling.get("rope_type", scaling.get("type", "default"))](
        config, "cpu"
    )
    freqs = torch.outer(torch.arange(length, dtype=torch.int64).float(), inv_freq.float())
    return (freqs.cos() * attention_factor).numpy(), (freqs.sin() * attention_factor).numpy()


class _Graph:
    """Nodes, initializers and unique names for one ONNX graph."""

    def __init__(self, float_type: int) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.float_type = float_type
        self._count = 0

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, name: str = "",
             domain: str = "", **attrs: Any) -> list[str]:
        from onnx import helper

        self._count += 1
        base = f"/{name or op}_{self._count}"
        names = outputs if isinstance(outputs, list) else [f"{base}/out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=base, domain=domain or None, **attrs))
        return names

    def tensor(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name


class _Builder:
    def __init__(self, config: dict[str, Any], weights: CheckpointWeights, precision: GraphPrecision) -> None:
        from onnx import TensorProto

        self.config, self.weights, self.precision = config, weights, precision
        self.np_float = np.float16 if precision.dtype == "fp16" else np.float32
        self.g = _Graph(TensorProto.FLOAT16 if precision.dtype == "fp16" else TensorProto.FLOAT)
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.kv_heads = int(config.get("num_key_value_heads") or self.heads)
        self.head_dim = int(config.get("head_dim") or self.hidden // self.heads)
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.qkv_bias = SUPPORTED_MODEL_TYPES[config["model_type"]]

    def floats(self, name: str, array: np.ndarray) -> str:
        return self.g.tensor(name, array.astype(self.np_float))

    def linear(self, x: str, weight: np.ndarray, name: str, bits: int | None) -> str:
        """x @ weight.T for a PyTorch [out, in] weight: float MatMul or MatMulNBits."""
        if bits is None:
            return self.g.node("MatMul", [x, self.floats(f"{name}.weight", weight.T)], name=name)[0]
        p = self.precision
        symmetric = p.symmetric8 if bits == 8 else p.symmetric
        q = quantize_matrix(weight, bits, p.block_size, symmetric=symmetric, search=p.search)
        inputs = [x, self.g.tensor(f"{name}.qweight", q.packed),
                  self.floats(f"{name}.scales", q.scales.reshape(-1))]
        if q.zero_points is not None:
            inputs.append(self.g.tensor(f"{name}.zero_points", q.zero_points))
        return self.g.node("MatMulNBits", inputs, name=name, domain=_MS, K=q.k, N=q.n, bits=bits,
                           block_size=p.block_size, accuracy_level=p.accuracy_level)[0]

    def bits_for(self, layer: int, matrix: str) -> int | None:
        p = self.precision
        if p.bits == 4 and (matrix in p.eight_bit or f"{layer}.{matrix}" in p.eight_bit):
            return 8
        return p.bits

    def build(self, checkpoint: Path) -> Any:
        from onnx import TensorProto, helper

        g, w, cfg = self.g, self.weights.get, self.config
        prefix = "model."
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
        one = g.tensor("const.one_i64", np.array([1], dtype=np.int64))
        valid = g.node("ReduceSum", ["attention_mask", one], keepdims=0)[0]
        seqlens = g.node("Cast", [g.node("Sub", [valid, one])[0]], to=TensorProto.INT32)[0]
        width = g.node("Gather", [g.node("Shape", ["attention_mask"])[0],
                                  g.tensor("const.one_scalar", np.array(1, dtype=np.int64))], axis=0)[0]
        total_len = g.node("Cast", [width], to=TensorProto.INT32)[0]
        cos, sin = _rotary_caches(checkpoint, int(cfg.get("max_position_embeddings", 4096)))
        cos_name, sin_name = self.floats("cos_cache", cos), self.floats("sin_cache", sin)

        embed = w(prefix + "embed_tokens.weight")
        x = g.node("Gather", [self.floats("embed_tokens.weight", embed), "input_ids"], axis=0)[0]
        residual, skip = x, None
        intermediate = int(cfg["intermediate_size"])
        for i in range(self.layers):
            lp = f"{prefix}layers.{i}."
            normed, residual = self.norm(residual, skip, w(lp + "input_layernorm.weight"), f"layers.{i}.input_norm")
            qkv_weight = np.concatenate([w(lp + f"self_attn.{m}_proj.weight") for m in "qkv"], axis=0)
            qkv = self.linear(normed, qkv_weight, f"layers.{i}.attn.qkv_proj", self.bits_for(i, "self_attn.qkv_proj"))
            if self.qkv_bias:
                bias = np.concatenate([w(lp + f"self_attn.{m}_proj.bias") for m in "qkv"])
                qkv = g.node("Add", [qkv, self.floats(f"layers.{i}.attn.qkv_proj.bias", bias)])[0]
            attn = g.node(
                "GroupQueryAttention",
                [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total_len,
                 cos_name, sin_name],
                [f"/layers.{i}/attn/out", f"present.{i}.key", f"present.{i}.value"],
                name=f"layers.{i}.attn", domain=_MS, num_heads=self.heads, kv_num_heads=self.kv_heads,
                scale=float(self.head_dim**-0.5), do_rotary=1, rotary_interleaved=0,
            )[0]
            skip = self.linear(attn, w(lp + "self_attn.o_proj.weight"), f"layers.{i}.attn.o_proj",
                               self.bits_for(i, "self_attn.o_proj"))
            normed, residual = self.norm(residual, skip, w(lp + "post_attention_layernorm.weight"),
                                         f"layers.{i}.post_attention_norm")
            gate_up = np.concatenate([w(lp + "mlp.gate_proj.weight"), w(lp + "mlp.up_proj.weight")], axis=0)
            gu = self.linear(normed, gate_up, f"layers.{i}.mlp.gate_up_proj", self.bits_for(i, "mlp.gate_up_proj"))
            sizes = g.tensor(f"layers.{i}.mlp.split", np.array([intermediate, intermediate], dtype=np.int64))
            gate, up = g.node("Split", [gu, sizes], 2, axis=-1)
            act = g.node("Mul", [gate, g.node("Sigmoid", [gate])[0]])[0]
            skip = self.linear(g.node("Mul", [act, up])[0], w(lp + "mlp.down_proj.weight"),
                               f"layers.{i}.mlp.down_proj", self.bits_for(i, "mlp.down_proj"))
        normed, _ = self.norm(residual, skip, w(prefix + "norm.weight"), "final_norm", last=True)

        # Only the last ``logits_to_keep`` positions reach lm_head (0 keeps all).
        start = g.node("Neg", ["logits_to_keep"])[0]
        end = g.tensor("const.int64_max", np.array([np.iinfo(np.int64).max], dtype=np.int64))
        kept = g.node("Slice", [normed, start, end, one])[0]
        head = w("lm_head.weight") if "lm_head.weight" in self.weights and not cfg.get("tie_word_embeddings") else embed
        p = self.precision
        head_bits = p.lm_head_bits if p.lm_head_bits is not None else p.bits
        logits = self.linear(kept, head, "lm_head", head_bits)
        g.node("Identity", [logits], ["logits"])

        graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, initializer=g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET), helper.make_opsetid(_MS, 1)],
                                  producer_name="ortmodels")
        model.ir_version = 9
        return model

    def norm(self, residual: str, skip: str | None, weight: np.ndarray, name: str,
             last: bool = False) -> tuple[str, str]:
        """RMS norm of residual (+ skip); returns (normed, the new residual stream)."""
        gamma = self.floats(f"{name}.weight", weight)
        if skip is None:
            normed = self.g.node("SimplifiedLayerNormalization", [residual, gamma], name=name, axis=-1,
                                 epsilon=self.eps, stash_type=1)[0]
            return normed, residual
        outs = [f"/{name}/out0"] + ([] if last else ["", "", f"/{name}/sum"])
        self.g.node("SkipSimplifiedLayerNormalization", [residual, skip, gamma], outs, name=name, domain=_MS,
                    epsilon=self.eps)
        return outs[0], outs[-1]


def build_decoder_graph(checkpoint: Path, target: Path, precision: GraphPrecision) -> dict[str, Any]:
    """Write ``target`` (model.onnx) for ``checkpoint``; returns the recipe for the manifest."""
    import json

    from .quantize import save_model

    config = json.loads((checkpoint / "config.json").read_text())
    reason = supports(config)
    if reason:
        raise ExportError(f"The decoder graph builder does not handle {checkpoint.name}: {reason}.")
    with open_weights(checkpoint) as weights:
        model = _Builder(config, weights, precision).build(checkpoint)
    save_model(model, target, external_data=True)  # mapped at load: a faster cold start
    logger.info("Built %s (%s, %d nodes)", target, precision.dtype, len(model.graph.node))
    return precision.recipe()
