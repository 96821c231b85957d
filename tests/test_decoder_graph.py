"""Our own decoder graph (`export/decoder_graph.py`) and its block quantization (`export/nbits.py`).

The builder is checked against PyTorch on tiny random Llama, Qwen2 (q/k/v biases, tied
embeddings) and Mistral checkpoints: logits at every position, greedy tokens through the
runtime's KV-cache loop, a prompt fed in pieces, ``logits_to_keep``, and the int8/int4/fp16
variants within bounds. The MatMulNBits layout is checked against onnxruntime itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ortmodels.export.nbits import quantize_matrix

# -- MatMulNBits layout ------------------------------------------------------------------------


def _nbits_session(q, k: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(q.packed, "B"), numpy_helper.from_array(q.scales.reshape(-1), "S")]
    names = ["A", "B", "S"]
    if q.zero_points is not None:
        inits.append(numpy_helper.from_array(q.zero_points, "Z"))
        names.append("Z")
    node = helper.make_node("MatMulNBits", names, ["Y"], domain="com.microsoft", K=k, N=q.n, bits=q.bits,
                            block_size=q.block_size, accuracy_level=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", q.n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k", [96, 160])  # 3 and 5 blocks: odd block counts pack zero points with padding
def test_matmul_nbits_layout_matches_onnxruntime(bits: int, symmetric: bool, k: int) -> None:
    rng = np.random.default_rng(bits + k)
    weight = rng.standard_normal((48, k)).astype(np.float32)
    q = quantize_matrix(weight, bits, 32, symmetric=symmetric)
    a = rng.standard_normal((3, k)).astype(np.float32)
    got = _nbits_session(q, k).run(None, {"A": a})[0]
    np.testing.assert_allclose(got, a @ q.dequantized().T, rtol=1e-4, atol=1e-4)
    error = np.sqrt(((q.dequantized() - weight) ** 2).mean() / (weight**2).mean())
    assert error < (0.12 if bits == 4 else 0.01), error


def test_asymmetric_blocks_reproduce_a_grid_with_integer_offsets() -> None:
    """Weights already on a 4-bit grid (offset a whole number of steps) come back exactly."""
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 16, (8, 2, 32))
    levels[..., 0], levels[..., 1] = 0, 15  # every block spans the whole grid
    step = rng.uniform(0.01, 0.1, (8, 2, 1))
    weight = ((levels - rng.integers(0, 16, (8, 2, 1))) * step).reshape(8, 64).astype(np.float32)
    q = quantize_matrix(weight, 4, 32, symmetric=False)
    np.testing.assert_allclose(q.dequantized(), weight, atol=1e-6)


# -- the graph against PyTorch -------------------------------------------------------------------

#: Every family our graph builds (tests/tiny_decoders.py has a fixture for each).
FAMILIES = ("llama", "qwen2", "mistral", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    from tests.tiny_decoders import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp(request.param) / "ckpt", request.param)


def _built(checkpoint: Path, folder: Path, dtype: str = "fp32") -> Path:
    """The graph of one precision, as `ortmodels export` builds it."""
    from ortmodels.export.decoder import GRAPH_PRECISIONS
    from ortmodels.export.decoder_graph import build_decoder_graph

    folder.mkdir(parents=True, exist_ok=True)
    build_decoder_graph(checkpoint, folder / "model.onnx", GRAPH_PRECISIONS[dtype])
    return folder / "model.onnx"


def _decoder(model_file: Path):  # type: ignore[no-untyped-def]
    from ortmodels.engine.decoder import DecoderSession
    from ortmodels.engine.session import create_session

    return DecoderSession(create_session(model_file, "cpu"))


def _torch(checkpoint: Path, ids: list[int], new: int) -> tuple[np.ndarray, list[int]]:
    """PyTorch's logits over ``ids`` and its ``new`` greedy tokens after them."""
    import torch

    from ortmodels.export.decoder_parity import reference_model

    model = reference_model(checkpoint)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
        logits = out.logits[0].numpy()
        tokens: list[int] = []
        for _ in range(new):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return logits, tokens


PROMPT = [1, 40, 70, 100, 7, 200, 13, 300, 250, 9, 42, 17, 99, 180, 6, 77]


@pytest.mark.slow
def test_fp32_graph_matches_pytorch(tiny: Path, tmp_path: Path) -> None:
    from ortmodels.engine.decoder import DecoderState
    from ortmodels.export.decoder_parity import greedy_tokens

    decoder = _decoder(_built(tiny, tmp_path / "fp32"))
    expected_logits, expected_tokens = _torch(tiny, PROMPT, 24)
    assert len(set(expected_tokens)) > 4, expected_tokens
    np.testing.assert_allclose(decoder.all_logits(PROMPT), expected_logits, atol=1e-3, rtol=1e-3)
    assert greedy_tokens(decoder, PROMPT, 24) == expected_tokens

    # Prefill keeps one row of logits, and it is the last row of the full pass.
    state = DecoderState()
    np.testing.assert_allclose(decoder.forward(state, PROMPT), expected_logits[-1], atol=1e-3, rtol=1e-3)
    # A prompt fed in pieces onto the cache computes what one pass does.
    pieces = DecoderState()
    decoder.forward(pieces, PROMPT[:5])
    decoder.forward(pieces, PROMPT[5:11])
    np.testing.assert_allclose(decoder.forward(pieces, PROMPT[11:]), expected_logits[-1], atol=1e-3, rtol=1e-3)
    assert pieces.length == len(PROMPT)


@pytest.mark.slow
def test_quantized_and_half_graphs_stay_close(tiny: Path, tmp_path: Path) -> None:
    """Random tiny weights have near-tied logits, so greedy tokens are no fair test here: the
    bounds are on logits and perplexity (the real model's are in test_chat_real.py)."""
    from ortmodels.export.decoder_parity import perplexity

    reference = _decoder(_built(tiny, tmp_path / "fp32"))
    text = PROMPT * 4
    expected = reference.all_logits(text)
    base = perplexity(expected, text)
    scale = float(np.abs(expected).max())
    bounds = {"int8": (1.02, 0.1), "int4": (1.5, 1.0), "fp16": (1.01, 0.02)}  # perplexity ratio, logit diff / scale
    for name in ("int8", "int4", "fp16"):
        got = _decoder(_built(tiny, tmp_path / name, name)).all_logits(text)
        ppl_bound, diff_bound = bounds[name]
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.isfinite(perplexity(got, text)) and perplexity(got, text) <= base * ppl_bound, name
        assert float(np.abs(got - expected).max()) <= diff_bound * scale, name
