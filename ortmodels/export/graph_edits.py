"""Small, explicit edits of exported ONNX graphs, and how a graph is saved."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Graphs above this size are saved with their weights in ``model.onnx.data`` (protobuf's 2 GB limit).
_EXTERNAL_DATA_BYTES = 1_800_000_000


def save_model(model, target: Path, external_data: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Save an onnx.ModelProto; weights go to ``<target>.data`` when asked or when over 2 GB.

    External weights load about 3x faster (measured 0.38 s vs 1.2 s for a 240 MB int4
    decoder): onnxruntime maps the file instead of copying tensors out of one protobuf.
    """
    import onnx

    large = model.ByteSize() > _EXTERNAL_DATA_BYTES if hasattr(model, "ByteSize") else False
    onnx.save_model(
        model, str(target), save_as_external_data=large or external_data, all_tensors_to_one_file=True,
        location=f"{target.name}.data", size_threshold=1024,
    )



def untie_transposed_weights(model) -> list[str]:  # type: ignore[no-untyped-def]  # onnx.ModelProto
    """Give every ``MatMul(x, Transpose(W))`` its own pre-transposed weight.

    optimum exports a tied ``lm_head`` as a run-time Transpose of the embedding table,
    which weight quantizers cannot see as a constant; a separate initializer lets the
    largest matrix of a small model be quantized too. Returns the edited node names.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    edited = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        transpose = producers.get(node.input[1])
        if transpose is None or transpose.op_type != "Transpose" or transpose.input[0] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[transpose.input[0]])
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        transposed = np.ascontiguousarray(weight.transpose(perm) if perm else weight.T)
        name = f"{node.name.strip('/').replace('/', '.') or transpose.output[0]}.untied_weight"
        graph.initializer.append(numpy_helper.from_array(transposed, name))
        node.input[1] = name
        edited.append(node.name)
        if not any(transpose.output[0] in other.input for other in graph.node):
            graph.node.remove(transpose)
    for name in edited:
        logger.info("Untied the transposed weight of %s", name)
    return edited


def fuse_decoder_ops(source: Path, target: Path, config: dict[str, Any]) -> dict[str, int]:
    """Fuse rotary embeddings and RMS norms with onnxruntime's transformer optimizer.

    Fewer, larger kernels per step: measured +16% fp32 and +8% int4 decode on the sample.
    The fusions are pattern matches, so the caller checks the fused graph against PyTorch
    and keeps the plain one if they differ. Returns the fused operator counts (empty: none).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        model_type="qwen3",  # the decoder recipe: RoPE, RMSNorm, grouped-query attention
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        opt_level=0,  # graph fusions only; onnxruntime applies its own at load time
    )
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if fused:
        save_model(optimized.model, target)
    return fused
