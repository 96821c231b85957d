"""What our decoder graph needs to know about each model family, and which checkpoints it refuses.

One `Family` row per ``model_type`` says how a family differs from Llama; the graph builder
(`graph.py`) reads the row instead of testing family names. `supports` works on the
raw config.json dict (no transformers import) and returns the reason a checkpoint is refused,
so the export can fall back to optimum and say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: rope_scaling types whose cos/sin caches transformers' own rotary code computes for us.
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
#: Activations by their transformers name → our graph's op ("silu": x*sigmoid(x); "gelu_tanh": FastGelu).
ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}


@dataclass(frozen=True)
class Family:
    """How one family's decoder layer differs from Llama's."""

    qkv_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    qk_norm: bool = False  # per-head RMS norm of q and k before the rotary embedding (Qwen3, Gemma 3)
    norm_offset: float = 0.0  # Gemma's RMS norms scale by (1 + w): folded into the gamma at export
    activation_key: str = "hidden_act"  # the config key naming the MLP activation
    scaled_embedding: bool = False  # Gemma: embeddings times sqrt(hidden_size)
    sandwich_norms: bool = False  # Gemma 2/3: norms on the attention and MLP outputs before the residual add
    fused_weights: bool = False  # Phi-3: qkv_proj and gate_up_proj are stored packed
    window_on_every_layer: bool = False  # Mistral, Phi-3: ``sliding_window`` applies to all layers (no layer_types)
    query_scalar: bool = False  # Gemma 2/3: attention scale is query_pre_attn_scalar ** -0.5
    local_rope: bool = False  # Gemma 3: sliding layers use rope_local_base_freq without rope_scaling


FAMILIES: dict[str, Family] = {
    "llama": Family(),
    "mistral": Family(window_on_every_layer=True),
    "qwen2": Family(qkv_bias=True),
    "qwen3": Family(qk_norm=True),
    "phi3": Family(fused_weights=True, window_on_every_layer=True),
    "gemma": Family(norm_offset=1.0, scaled_embedding=True),
    "gemma2": Family(norm_offset=1.0, scaled_embedding=True, sandwich_norms=True, activation_key="hidden_activation",
                     query_scalar=True),
    "gemma3_text": Family(qk_norm=True, norm_offset=1.0, scaled_embedding=True, sandwich_norms=True,
                          activation_key="hidden_activation", query_scalar=True, local_rope=True),
}


def activation_name(config: dict[str, Any]) -> str:
    """The transformers activation name the family's MLP uses."""
    family = FAMILIES[config["model_type"]]
    return str(config.get(family.activation_key) or config.get("hidden_act") or "silu")


def _rope_type(scaling: dict[str, Any] | None) -> str:
    scaling = scaling or {}
    return str(scaling.get("rope_type", scaling.get("type", "default")))


def supports(config: dict[str, Any]) -> str | None:
    """``None`` when the builder handles this checkpoint, else the reason it does not."""
    model_type = config.get("model_type")
    if model_type == "gemma3" and "text_config" in config:
        return "a Gemma 3 vision-language checkpoint (its text model sits under text_config and model.language_model)"
    if model_type not in FAMILIES:
        return f"model_type {model_type!r} is not one of {', '.join(FAMILIES)}"
    family = FAMILIES[model_type]
    if activation_name(config) not in ACTIVATIONS:
        return f"activation {activation_name(config)!r} is not one of {', '.join(ACTIVATIONS)}"
    if config.get("mlp_bias"):
        return "MLP biases"
    if config.get("attention_bias") and not family.qkv_bias:
        return f"attention biases on a {model_type} checkpoint"
    if config.get("use_bidirectional_attention"):
        return "bidirectional attention (an embedding model)"
    if _rope_type(config.get("rope_scaling")) not in ROPE_TYPES:
        return f"rope_scaling type {_rope_type(config.get('rope_scaling'))!r} (only {', '.join(ROPE_TYPES)})"
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    rotary_dim = int(head_dim * float(config.get("partial_rotary_factor", 1.0)))
    # GroupQueryAttention rotates the first rotary_dim features when its cos/sin caches have
    # rotary_dim/2 columns, which must be a multiple of 8 (onnxruntime checks it).
    if rotary_dim % 16 or rotary_dim > head_dim:
        return f"a rotary dimension of {rotary_dim} (GroupQueryAttention needs a multiple of 16)"
    return None


def layer_windows(config: Any, family: Family) -> list[int | None]:
    """Each layer's sliding window in tokens (None: full attention), from a transformers config.

    transformers' sliding window W lets a query see itself and the W - 1 tokens before it,
    which is what GroupQueryAttention's ``local_window_size`` = W does in onnxruntime 1.32
    (checked by the tests past the window).
    """
    window = getattr(config, "sliding_window", None)
    layers = int(config.num_hidden_layers)
    if not window:
        return [None] * layers
    types = getattr(config, "layer_types", None)
    if types:
        return [int(window) if kind == "sliding_attention" else None for kind in types]
    return [int(window) if family.window_on_every_layer else None] * layers
