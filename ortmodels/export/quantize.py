"""Weight quantization of exported graphs with onnxruntime's own quantizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def quantize_int8_dynamic(source: Path, target: Path) -> dict[str, Any]:
    """8-bit weights, per output channel, activations quantized at run time; returns the recipe."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe: dict[str, Any] = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": True,
        "op_types": ["MatMul"],
    }
    quantize_dynamic(
        model_input=source,
        model_output=target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )
    return recipe
