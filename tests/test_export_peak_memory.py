"""The export's large arrays are worked on in pieces: same figures, a bounded temporary.

Each test measures the numpy allocations of one step with tracemalloc (numpy reports its
array buffers there) against the size of the array the step reads or returns: before
these steps were cut into pieces, the perplexity's float64 pass took ~6.6x one fp32 logits
array, widening a bf16 tensor ~3x its fp32 result, quantizing a matrix ~4x its fp32 size.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ortmodels.export.checkpoint_weights import open_weights
from ortmodels.export.decoder_parity import token_nll
from ortmodels.export.nbits import _VALUES, quantize_matrix


def _peak(step: Callable[[], Any]) -> tuple[Any, int]:
    """What ``step`` returns, and the most bytes allocated at once while it ran (result included)."""
    tracemalloc.start()
    try:
        result = step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def _whole_nll(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """The unchunked formula the export used before (the whole array in float64 at once)."""
    count = min(len(logits), len(ids) - 1)
    scores = logits[:count].astype(np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(count), list(ids[1 : count + 1])]


@pytest.mark.parametrize("rows", [1, 7, 32, 1000])
def test_chunked_nll_equals_the_unchunked_one(rows: int) -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((100, 503)) * 8).astype(np.float32)
    ids = rng.integers(0, 503, size=101).tolist()
    expected = _whole_nll(logits, ids)
    got = token_nll(logits, ids, rows=rows)
    assert got.shape == (100,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # Fewer next ids than logits rows: as many NLLs as there are next ids.
    np.testing.assert_allclose(token_nll(logits, ids[:40], rows=rows), expected[:39], rtol=1e-12, atol=1e-12)


def test_nll_of_a_long_text_holds_a_few_rows_in_float64() -> None:
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((512, 8192)).astype(np.float32)  # 16 MB
    ids = rng.integers(0, 8192, size=513).tolist()
    _, peak = _peak(lambda: token_nll(logits, ids))
    assert peak < 0.5 * logits.nbytes, f"{peak} bytes for {logits.nbytes} bytes of logits"


def test_bf16_is_widened_without_copies_of_the_tensor(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensor = torch.randn(1024, 4099).to(torch.bfloat16)  # 8.4 MB, several read pieces, odd length
    save_file({"w": tensor}, tmp_path / "model.safetensors")
    with open_weights(tmp_path) as weights:
        got, peak = _peak(lambda: weights.get("w"))
    assert got.dtype == np.float32 and np.array_equal(got, tensor.float().numpy())
    assert peak < 1.2 * got.nbytes + 8_500_000, f"{peak} bytes for a {got.nbytes}-byte result"


@pytest.mark.parametrize(("bits", "symmetric", "search"), [(8, True, False), (4, False, True), (8, False, True)])
def test_quantizing_a_tall_matrix_works_on_some_rows_at_a_time(bits: int, symmetric: bool, search: bool) -> None:
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((12 * (_VALUES // 256) + 5, 256)).astype(np.float32)  # 50 MB, 13 pieces
    q, peak = _peak(lambda: quantize_matrix(weight, bits, 32, symmetric=symmetric, search=search))
    result = q.packed.nbytes + q.scales.nbytes + (0 if q.zero_points is None else q.zero_points.nbytes)
    # The result, and a few pieces' temporaries (a piece is _VALUES float32 weights): not the matrix's.
    assert peak < result + 8 * 4 * _VALUES < weight.nbytes, f"{peak} bytes for a {weight.nbytes}-byte matrix"
    # Each piece is quantized as the whole matrix would be: a row's blocks never leave the row.
    head = quantize_matrix(weight[:100], bits, 32, symmetric=symmetric, search=search)
    assert np.array_equal(q.packed[:100], head.packed) and np.array_equal(q.scales[:100], head.scales)
    assert np.abs(q.dequantized() - weight).max() < (0.2 if bits == 4 else 0.02) * np.abs(weight).max()


@pytest.mark.parametrize("name", ["llama-3.2-1b", "qwen2.5-1.5b"])
def test_the_reference_filled_tensor_by_tensor_is_from_pretrained_in_fp32(tmp_path: Path, name: str) -> None:
    """bf16 checkpoint (tied head; Qwen's q/k/v biases): the same logits, bit for bit, as transformers' own load."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from benchmarks.checkpoints import MODELS, build
    from ortmodels.export.decoder_parity import reference_model
    from tests.conftest import CHAT_SAMPLE, SAMPLES_DIR

    config = {**MODELS[name][0], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    folder = build(config, tmp_path / name, tokenizer_from=SAMPLES_DIR / CHAT_SAMPLE, max_shard_bytes=2_000_000)
    ours = reference_model(folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == bool(config.get("tie_word_embeddings"))
    ids = torch.tensor([list(range(1, 200))])
    with torch.inference_mode():
        assert torch.equal(ours(input_ids=ids).logits, theirs(input_ids=ids).logits)


_LOAD_PEAK = """
import sys, threading
from pathlib import Path
import psutil, torch  # imported before the baseline, with what loading a Llama imports
from transformers import AutoConfig, AutoModelForCausalLM, modeling_utils
from transformers.models.llama import modeling_llama
from ortmodels.export.decoder_parity import reference_model
process, peak, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        done.wait(0.002)
before = process.memory_info().rss
thread = threading.Thread(target=sample)
thread.start()
model = reference_model(Path(sys.argv[1]))
done.set()
thread.join(10)
print(max(peak[0], process.memory_info().rss) - before, sum(p.numel() * 4 for p in model.parameters()))
"""


def test_loading_a_bf16_reference_holds_its_fp32_weights_and_little_else(tmp_path: Path) -> None:
    """from_pretrained kept the mapped bf16 file resident beside the fp32 copy: 1.5x the fp32 weights."""
    import subprocess
    import sys

    from benchmarks.checkpoints import MODELS, build
    from tests.conftest import CHAT_SAMPLE, SAMPLES_DIR

    config = {**MODELS["llama-3.2-1b"][0], "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2,
              "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64}  # 71M parameters, 285 MB fp32
    folder = build(config, tmp_path / "ckpt", tokenizer_from=SAMPLES_DIR / CHAT_SAMPLE)
    run = subprocess.run([sys.executable, "-c", _LOAD_PEAK, str(folder)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    grown, fp32 = (int(v) for v in run.stdout.split()[-2:])
    assert grown < 1.2 * fp32, f"loading grew the process by {grown} bytes for {fp32} bytes of fp32 weights"
