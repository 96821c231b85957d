"""GPTQ's calibration: the Hessian X^T X of each linear layer's inputs over a shipped text.

Why from the fp32 ONNX graph and not PyTorch: the export already has that graph on disk (the
base every variant is made from), its linear layers carry the names the graph builder
quantizes by (``layers.3.mlp.down_proj``), and onnxruntime maps its weights instead of
loading a second copy of the model. The inputs of every MatMul/Gemm with a constant weight
become extra graph outputs; the text (`calibration.txt`, a few KB of prose written for this
project, so no download) runs through it in pieces, and each Hessian is summed in float32
and written to its own ``.npy`` file: memory holds one group of layers' Hessians at a time,
and the builder maps each one when it quantizes that matrix.

The activations are the fp32 model's at every layer (not those of the layers already
quantized, as sequential GPTQ would use): one pass, and the same Hessians for every recipe.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...engine.decoder import (
    SLIDING_MASK,  # the graph's input name; importing graph.py here would make a circle
)

logger = logging.getLogger(__name__)

CALIBRATION_TEXT = Path(__file__).with_name("calibration.txt")
CHUNK_TOKENS = 256  # tokens per run: a fresh sequence each, as the text's paragraphs are
_HESSIAN_BYTES = 256 << 20  # Hessians accumulated per group of runs (float32)
_PASS_THROUGH = ("Slice", "Reshape")  # between the final norm and lm_head: walked back over
_NODE_NAME = re.compile(r"^/(.+)_\d+$")  # `graph._Graph.node`'s names: /<name>_<count>


def calibration_chunks(tokenizer: Any, tokens: int = CHUNK_TOKENS) -> list[list[int]]:
    """The calibration text's token ids in pieces of ``tokens``."""
    ids = tokenizer.encode(CALIBRATION_TEXT.read_text(encoding="utf-8")).ids
    return [ids[i : i + tokens] for i in range(0, len(ids), tokens) if len(ids[i : i + tokens]) > 1]


def linear_inputs(model: Any) -> dict[str, str]:
    """{matrix name: the tensor it multiplies} for every MatMul/Gemm whose weight is an initializer.

    A head fed through Slice/Reshape (``logits_to_keep``) is traced back to the tensor before
    them, so a run that keeps one row of logits still sees every position's input.
    """
    constants = {i.name for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in constants:
            continue
        name = _matrix_name(node)
        source = node.input[0]
        while source in producers and producers[source].op_type in _PASS_THROUGH:
            source = producers[source].input[0]
        found[name] = source
    return found


class Hessians:
    """The Hessians of one graph's linear inputs, one ``.npy`` file each, mapped when read."""

    def __init__(self, folder: Path, names: dict[str, str], tokens: int) -> None:
        self.folder, self.names, self.tokens = folder, names, tokens

    def get(self, matrix: str) -> np.ndarray | None:
        """The Hessian of ``matrix``'s input (K x K), or None for a matrix that was not calibrated."""
        tensor = self.names.get(matrix)
        path = self.folder / f"{_file_name(tensor)}.npy" if tensor else None
        return np.load(path, mmap_mode="r") if path is not None and path.is_file() else None


def _file_name(tensor: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tensor).strip("_")


def collect_hessians(model_file: Path, chunks: list[list[int]], folder: Path) -> Hessians:
    """Run ``model_file`` (a decoder graph with a KV cache) on ``chunks``; write each input's Hessian."""
    import onnx
    import onnxruntime as ort

    from ...engine.session import session_options

    model = onnx.load(str(model_file), load_external_data=False)
    names = linear_inputs(model)
    tensors = sorted(set(names.values()))
    width = _widths(model, names)
    past = {i.name: i for i in model.graph.input if i.name.startswith("past_key_values.")}
    sliding = any(i.name == SLIDING_MASK for i in model.graph.input)
    for tensor in tensors:
        model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    probe = model_file.with_name(f"{model_file.stem}.calibration.onnx")  # beside its external data
    onnx.save_model(model, str(probe))
    del model
    folder.mkdir(parents=True, exist_ok=True)
    try:
        session = ort.InferenceSession(str(probe), sess_options=session_options(prepack=False, arena=False),
                                       providers=["CPUExecutionProvider"])
        feeds = [_feeds(ids, past, sliding) for ids in chunks]
        for group in _groups(tensors, width):
            sums = {t: np.zeros((width[t], width[t]), dtype=np.float32) for t in group}
            for feed in feeds:
                for tensor, value in zip(group, session.run(group, feed)):
                    rows = value.reshape(-1, value.shape[-1]).astype(np.float32)
                    sums[tensor] += rows.T @ rows
            for tensor, total in sums.items():
                np.save(folder / f"{_file_name(tensor)}.npy", total)
        del session
    finally:
        probe.unlink(missing_ok=True)
    tokens = sum(len(ids) for ids in chunks)
    logger.info("Calibrated %d linear inputs on %d tokens", len(tensors), tokens)
    return Hessians(folder, names, tokens)


def _matrix_name(node: Any) -> str:
    match = _NODE_NAME.match(node.name)
    return match.group(1) if match else str(node.name)


def _widths(model: Any, names: dict[str, str]) -> dict[str, int]:
    """Each input tensor's width: the weight's input dimension (K of MatMul's [K, N], Gemm transB's [N, K])."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    nodes = {_matrix_name(n): n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
    width: dict[str, int] = {}
    for matrix, tensor in names.items():
        node = nodes[matrix]
        shape = dims[node.input[1]]
        transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        width[tensor] = int(shape[1] if transposed else shape[0])
    return width


def _groups(tensors: list[str], width: dict[str, int]) -> list[list[str]]:
    """Tensors in groups whose float32 Hessians fit in ``_HESSIAN_BYTES`` together (one run per group)."""
    groups: list[list[str]] = [[]]
    held = 0
    for tensor in tensors:
        size = width[tensor] ** 2 * 4
        if groups[-1] and held + size > _HESSIAN_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(tensor)
        held += size
    return groups


def _feeds(ids: list[int], past: dict[str, Any], sliding: bool = False) -> dict[str, np.ndarray]:
    """One fresh sequence: ids, a full mask (the sliding layers' too, where the graph has them),
    empty caches, one row of logits."""
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "logits_to_keep": np.array([1], dtype=np.int64),
    }
    if sliding:
        feeds[SLIDING_MASK] = feeds["attention_mask"]
    for name, value in past.items():
        shape = value.type.tensor_type.shape.dim
        feeds[name] = np.zeros((1, shape[1].dim_value, 0, shape[3].dim_value), dtype=np.float32)
    return feeds
