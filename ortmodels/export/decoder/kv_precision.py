"""KV cache precision: a second graph per variant whose cache is fp16, sharing the weights.

Why: the cache is held in the graph's float type, so fp32 variants (fp32, int8, int4: their
activations are fp32) keep 4 bytes per value: Llama 3.2 3B takes 229 KB per token, one
8k-token prompt 1.9 GB. onnxruntime's CPU ``GroupQueryAttention`` also runs on fp16 query,
key, value and cache, so the fp16-KV graph is the variant's own graph with casts to fp16
before each attention (packed q/k/v and the rotary cos/sin caches; onnxruntime folds the
casts of the constant caches once at load) and back to the stream's type after it, and
fp16 ``past``/``present`` inputs and outputs. Only the graph proto is written
(``model.kv16.onnx``, a few hundred KB): its initializers point at the same external data
file as ``model.onnx``, so the weights are on disk once.

(GQA also accepts an fp32 query on an fp16 cache without casts; measured on the CPU it
was the slower of the two: a 1,000-token past in Llama 3.2 3B's shape, one thread, 1.11 ms
per layer and step against 0.72 ms with the casts and 0.52 ms all in fp32.)

int8 is not offered: onnxruntime 1.32's CPU kernel does accept an int8 cache, but with
static scales (``k_scale``/``v_scale`` per tensor or per channel) that would have to be
calibrated at export and gated per checkpoint; not done yet.

Graphs without GroupQueryAttention (optimum's) and graphs whose cache is already fp16
(the fp16 variant) get no second graph: their only KV precision is their own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The settings' KV precisions (``MODEL_KV_DTYPE``), besides ``auto``.
KV_DTYPES: tuple[str, ...] = ("fp32", "fp16")
#: The fp16-KV graph's file name, beside ``model.onnx`` in the variant's folder.
KV16_FILE = "model.kv16.onnx"
_PAST = "past_key_values."
_PRESENT = "present."
_ROTARY_INPUTS = (7, 8)  # GroupQueryAttention's cos_cache, sin_cache
_QKV_INPUTS = (0, 1, 2)  # query (packed q/k/v), key, value


def _kv_dtype_of(elem_type: int) -> str | None:
    from onnx import TensorProto

    return {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}.get(elem_type)


def _is_attention(node: Any) -> bool:
    return bool(node.op_type == "GroupQueryAttention" and node.domain == "com.microsoft")


def graph_kv(model_file: Path) -> tuple[str | None, int, int]:
    """(the cache's precision, bytes one token takes in its full-history layers, bytes its
    sliding-window layers hold per sequence at most) of a decoder graph; (None, 0, 0) without a cache.

    Read from the ``past_key_values.*`` inputs and the ``ortmodels.layer_windows`` metadata, as
    the engine reads them (`engine.decoder.kv_dims`, `sliding_layout`): a sliding layer holds its
    window only (`held_positions`), so past it a token costs the full-history layers' bytes alone
    (`Engine.kv_bytes_per_token`, `Engine.kv_window_bytes`).
    """
    import onnx

    from ...engine.decoder import LAYER_WINDOWS, SLIDING_MASK, held_positions, sliding_layout

    model = onnx.load(str(model_file), load_external_data=False)
    graph = model.graph
    pasts = [i for i in graph.input if i.name.startswith(_PAST)]
    if not pasts:
        return None, 0, 0
    tensor = pasts[0].type.tensor_type
    heads, head_dim = (d.dim_value for d in (tensor.shape.dim[1], tensor.shape.dim[3]))
    each = heads * head_dim * onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
    sliding, keep = [False] * len(pasts), 0
    if any(i.name == SLIDING_MASK for i in graph.input):
        metadata = {p.key: p.value for p in model.metadata_props}
        sliding, keep = sliding_layout([i.name for i in pasts], metadata.get(LAYER_WINDOWS))
    slides = sum(sliding)
    return (_kv_dtype_of(tensor.elem_type), each * (len(pasts) - slides),
            each * slides * held_positions(keep) if slides else 0)


def write_fp16_kv_graph(model_file: Path, target: Path) -> bool:
    """Write ``target``: ``model_file`` with an fp16 KV cache; False (nothing written) where it has none to give.

    Nothing is written for graphs without GroupQueryAttention or whose cache is not fp32.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_file), load_external_data=False)
    graph = model.graph
    attention = [n.name for n in graph.node if _is_attention(n)]
    pasts = [i for i in graph.input if i.name.startswith(_PAST)]
    if not attention or not pasts or pasts[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        return False
    for value in [*pasts, *(o for o in graph.output if o.name.startswith(_PRESENT))]:
        value.type.tensor_type.elem_type = TensorProto.FLOAT16

    casts: dict[str, str] = {}  # one cast per value (the rotary caches are shared by every layer)
    nodes: list[Any] = []

    def to_fp16(name: str, node_name: str) -> str:
        if name not in casts:
            casts[name] = f"{name}/kv16"
            nodes.append(helper.make_node("Cast", [name], [casts[name]], name=f"{node_name}/to_fp16_{len(casts)}",
                                          to=TensorProto.FLOAT16))
        return casts[name]

    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)  # the graph's node list is replaced below
        if not _is_attention(node):
            nodes.append(node)
            continue
        for index in (*_QKV_INPUTS, *_ROTARY_INPUTS):
            if index < len(node.input) and node.input[index]:
                node.input[index] = to_fp16(node.input[index], node.name)
        out = node.output[0]
        node.output[0] = f"{out}/kv16"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [node.output[0]], [out], name=f"{node.name}/to_stream",
                                      to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save_model(model, str(target))
    logger.info("Wrote %s (fp16 KV cache, %d attention nodes, weights shared with %s)", target.name,
                len(attention), model_file.name)
    return True
