"""Activation smoothing before int8, and the int8-vs-fp32 quality figures, on a hand-made graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ortmodels.export.encoder.quantize import (
    int8_quality,
    smooth_activations,
    top_k_agreement,
)

VOCAB, DIM, HIDDEN = 50, 32, 64


def _outlier_graph(path: Path) -> None:
    """input_ids -> embedding with three outlier channels -> two MatMuls sharing it -> ReLU -> MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.normal(0, 1, (VOCAB, DIM)).astype(np.float32)
    table[:, [3, 11, 20]] *= 60  # the few large channels real encoders have after LayerNorm / GELU
    w_a, w_b = (rng.normal(0, 0.1, (DIM, HIDDEN)).astype(np.float32) for _ in range(2))
    w_out = rng.normal(0, 0.1, (HIDDEN, DIM)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["x"]),
        helper.make_node("MatMul", ["x", "w_a"], ["a"], name="a/MatMul"),
        helper.make_node("MatMul", ["x", "w_b"], ["b"], name="b/MatMul"),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Relu", ["ab"], ["r"]),
        helper.make_node("MatMul", ["r", "w_out"], ["last_hidden_state"], name="out/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", DIM])],
        [numpy_helper.from_array(v, n) for n, v in
         (("table", table), ("w_a", w_a), ("w_b", w_b), ("w_out", w_out))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _run(path: Path, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]


@pytest.fixture
def graphs(tmp_path: Path) -> tuple[Path, Path, dict]:
    source, smoothed = tmp_path / "model.onnx", tmp_path / "smoothed.onnx"
    _outlier_graph(source)
    rng = np.random.default_rng(1)
    calibration = [rng.integers(0, VOCAB, rng.integers(3, 20)).tolist() for _ in range(40)]
    recipe = smooth_activations(source, smoothed, calibration)
    return source, smoothed, recipe


def test_smoothing_keeps_fp32_outputs(graphs: tuple[Path, Path, dict]) -> None:
    import onnx

    source, smoothed, recipe = graphs
    ids = np.random.default_rng(2).integers(0, VOCAB, (4, 12))
    np.testing.assert_allclose(_run(smoothed, ids), _run(source, ids), rtol=1e-4, atol=1e-3)
    assert recipe["smoothing"]["matmuls"] == 3
    muls = [n for n in onnx.load(str(smoothed)).graph.node if n.op_type == "Mul"]
    assert len(muls) == 2  # the two MatMuls reading the same input share one division


def test_smoothing_makes_int8_closer_to_fp32(graphs: tuple[Path, Path, dict], tmp_path: Path) -> None:
    from ortmodels.export.encoder.quantize import quantize_int8_dynamic

    source, smoothed, _ = graphs
    quantize_int8_dynamic(source, tmp_path / "plain_int8.onnx")
    quantize_int8_dynamic(smoothed, tmp_path / "smoothed_int8.onnx")
    ids = np.random.default_rng(3).integers(0, VOCAB, (8, 16))
    reference = _run(source, ids)

    def error(path: Path) -> float:
        return float(np.abs(_run(path, ids) - reference).mean() / np.abs(reference).mean())

    assert error(tmp_path / "smoothed_int8.onnx") < error(tmp_path / "plain_int8.onnx")


def test_top_k_agreement() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    assert top_k_agreement(vectors, vectors * 3.0) == 1.0  # scale does not move neighbours
    shuffled = vectors[rng.permutation(60)]
    assert top_k_agreement(vectors, shuffled) < 0.5
    assert top_k_agreement(vectors[:1], vectors[:1]) == 1.0  # no neighbours to compare


def test_int8_quality_bar() -> None:
    rng = np.random.default_rng(0)
    fp32 = rng.normal(size=(100, 32)).astype(np.float32)
    close = int8_quality(fp32, fp32 + rng.normal(0, 0.01, fp32.shape).astype(np.float32))
    assert close["meets_bar"] and close["cosine_min"] > 0.99 and close["texts"] == 100
    far = int8_quality(fp32, fp32 + rng.normal(0, 1.0, fp32.shape).astype(np.float32))
    assert not far["meets_bar"] and far["top10_agreement"] < 0.9
