"""Weight quantization and half precision of optimum's decoder graphs, with onnxruntime's own tools.

The fallback for checkpoints our own graph (`graph.py`) refuses. Each function writes ``target`` from ``source`` and returns the recipe that goes into
the manifest, so a variant always says how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..graph_edits import save_model, untie_transposed_weights


def quantize_weight_only(
    source: Path, target: Path, bits: int, block_size: int = 32, symmetric: bool = True,
    eight_bit: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Block-wise weight-only quantization to ``MatMulNBits`` (decoders).

    accuracy_level 4 computes with int8 activations on the CPU, which is what makes one-token
    decode steps faster than fp32 (measured: plain dynamic MatMulInteger was not). The
    tied ``lm_head`` is untied first so it is quantized too. At 4 bits with ``eight_bit``
    empty, the embedding table becomes ``GatherBlockQuantized`` too; with ``eight_bit`` (node
    name parts such as ``down_proj``, ``lm_head``) it is the mix our own graph uses: those
    MatMuls get 8 bits in a second pass and the embedding table stays float.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )


    model = onnx.load(str(source))
    untied = untie_transposed_weights(model)
    mixed = bits == 4 and bool(eight_bit)
    op_types = ("MatMul", "Gather") if bits == 4 and not mixed else ("MatMul",)
    kept = [n.name for n in model.graph.node if n.op_type == "MatMul" and any(part in n.name for part in eight_bit)]

    def one_pass(model, bits: int, exclude: list[str]):  # type: ignore[no-untyped-def]
        config = DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=symmetric, accuracy_level=4, bits=bits,
            op_types_to_quantize=op_types, quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        quantizer = MatMulNBitsQuantizer(
            model, bits=bits, block_size=block_size, is_symmetric=symmetric, accuracy_level=4,
            nodes_to_exclude=exclude, algo_config=config,
        )
        quantizer.process()
        return quantizer.model.model

    model = one_pass(model, bits, kept if mixed else [])
    if mixed:
        model = one_pass(model, 8, [])  # what the first pass left float: the eight_bit MatMuls
    save_model(model, target)
    recipe: dict[str, Any] = {
        "method": "onnxruntime MatMulNBitsQuantizer",
        "graph": "optimum",
        "bits": bits,
        "block_size": block_size,
        "symmetric": symmetric,
        "accuracy_level": 4,
        "op_types": list(op_types),
        "untied": untied,
    }
    if mixed:
        recipe["eight_bit"] = list(eight_bit)
        recipe["eight_bit_nodes"] = len(kept)
    return recipe


#: Operators kept in fp32 by the mixed fallback: the residual adds, the norms (and the
#: pieces an unfused norm is made of) and the attention softmax, where activations overflow.
OVERFLOW_PRONE_OPS: tuple[str, ...] = (
    "Add", "Pow", "ReduceMean", "Sqrt", "Div", "Reciprocal", "Softmax", "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization", "LayerNormalization", "SkipLayerNormalization",
)


def convert_fp16(source: Path, target: Path, keep_fp32_ops: tuple[str, ...] = ()) -> dict[str, Any]:
    """Half-precision weights and compute for CUDA and CoreML; inputs and outputs stay fp32.

    ``keep_fp32_ops`` are left in fp32 (onnxruntime's converter inserts the casts).
    """
    import onnx
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )

    model = onnx.load(str(source))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True, op_block_list=block)
    save_model(converted, target)
    recipe: dict[str, Any] = {"method": "onnxruntime.transformers.float16", "keep_io_types": True}
    if keep_fp32_ops:
        recipe["fp32_ops"] = list(keep_fp32_ops)
    return recipe
