"""The export's large arrays are worked on in pieces: same figures, a bounded temporary.

Each test measures the numpy allocations of one step with tracemalloc (numpy reports its
array buffers there) against the size of the array the step reads or returns: before
these steps were cut into pieces, the perplexity's float64 pass took ~6.6x one fp32 logits
array, widening a bf16 tensor ~3x its fp32 result, quantizing a matrix ~4x its fp32 size.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from ortmodels.export.checkpoint.weights import open_weights
from ortmodels.export.decoder.parity import token_nll
from ortmodels.export.decoder.nbits import _VALUES, quantize_matrix


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
    """bf16 checkpoint (tied head; Qwen's q/k/v biases): the same logits, bit for bit, as transformers' own load.

    Its matrices stay bf16 (widened a piece at a time as used); the head's 128k rows take
    several pieces, the prompt and a cached step both go through them.
    """
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from benchmarks.checkpoints import MODELS, build
    from ortmodels.export.decoder.parity import reference_model
    from ortmodels.export.decoder.reference import PIECE_ELEMENTS
    from tests.conftest import CHAT_SAMPLE, SAMPLES_DIR

    config = {**MODELS[name][0], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    folder = build(config, tmp_path / name, tokenizer_from=SAMPLES_DIR / CHAT_SAMPLE, max_shard_bytes=2_000_000)
    ours = reference_model(folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert ours.model.embed_tokens.weight.dtype == torch.bfloat16
    assert ours.model.embed_tokens.weight.numel() > 2 * PIECE_ELEMENTS  # the head is widened in pieces
    assert all(p.dtype == (torch.bfloat16 if n.endswith("proj.weight") else torch.float32)
               for n, p in ours.named_parameters() if "layers" in n)
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == bool(config.get("tie_word_embeddings"))
    ids = torch.tensor([list(range(1, 200))])
    with torch.inference_mode():
        assert torch.equal(ours(input_ids=ids).logits, theirs(input_ids=ids).logits)
        a, b = ours(input_ids=ids, use_cache=True), theirs(input_ids=ids, use_cache=True)
        step = torch.tensor([[7]])
        assert torch.equal(ours(input_ids=step, past_key_values=a.past_key_values).logits,
                           theirs(input_ids=step, past_key_values=b.past_key_values).logits)


@pytest.mark.parametrize(("family", "dtype"), [("llama", "bf16"), ("llama", "fp16"), ("qwen2", "bf16"),
                                               ("phi3", "bf16"), ("gemma2", "bf16"), ("gemma3_text", "bf16")])
def test_a_narrow_reference_computes_what_fp32_weights_compute(tmp_path: Path, family: str, dtype: str) -> None:
    """Each family's tiny checkpoint stored in bf16 or fp16: its reference equals the fp32 model of those weights.

    Gemma 3 scales its embedding inside its own module, so that matrix stays fp32 there; a
    plain ``nn.Linear`` or ``nn.Embedding`` keeps the stored dtype.
    """
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from ortmodels.export.decoder.parity import reference_model
    from tests.tiny_decoders import build_tiny_decoder

    folder = build_tiny_decoder(tmp_path / family, family)
    narrow = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    tensors = load_file(folder / "model.safetensors")
    save_file({k: v.to(narrow) for k, v in tensors.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    ours = reference_model(folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                  **({"attn_implementation": "eager"} if family == "gemma2" else {}))
    theirs.eval()
    kept = {p.dtype for n, p in ours.named_parameters() if n.endswith("proj.weight")}
    assert kept == {narrow}
    scaled = family == "gemma3_text"
    assert ours.model.embed_tokens.weight.dtype == (torch.float32 if scaled else narrow)
    ids = torch.tensor([[1, 40, 70, 100, 7, 200, 13, 300, 250, 9, 42, 17, 99, 180, 6, 77]])
    with torch.inference_mode():
        got, expected = ours(input_ids=ids).logits, theirs(input_ids=ids).logits
    assert got.dtype == torch.float32
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert (got - expected).abs().max().item() < 1e-5


_LOAD_PEAK = """
import sys, threading
from pathlib import Path
import psutil, torch  # imported before the baseline, with what loading a Llama imports
from transformers import AutoConfig, AutoModelForCausalLM, modeling_utils
from transformers.models.llama import modeling_llama
from ortmodels.export.decoder.parity import reference_model
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


def test_loading_a_bf16_reference_holds_its_bf16_weights_and_little_else(tmp_path: Path) -> None:
    """from_pretrained kept the mapped bf16 file resident beside an fp32 copy: 1.5x the fp32 weights.

    Now the matrices stay bf16 (half the fp32 bytes); norms are fp32, and a few 8 MB pieces.
    """
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
    assert grown < 0.65 * fp32, f"loading grew the process by {grown} bytes for {fp32} bytes of fp32 weights"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="file-backed pages are told apart on Linux")
def test_the_meter_tells_a_mapped_file_from_anonymous_memory(tmp_path: Path) -> None:
    """onnxruntime maps a graph's weights: RSS counts those pages, the anonymous peak does not."""
    import mmap

    from ortmodels.export import resources

    data = tmp_path / "weights.bin"
    data.write_bytes(b"\1" * (64 << 20))
    with resources.measure() as meter, data.open("rb") as file, mmap.mmap(file.fileno(), 0,
                                                                           access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, len(mapped), mmap.PAGESIZE)) == len(mapped) // mmap.PAGESIZE
        meter.sample()
    figures = meter.figures(checkpoint_bytes=64 << 20)
    assert figures["peak_rss_bytes"] - figures["peak_anon_bytes"] >= 60 << 20, figures


@pytest.mark.slow
def test_a_quantized_export_of_a_bf16_checkpoint_writes_no_fp32_graph(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """int4 alone: built from the checkpoint, checked against the narrow reference; no fp32 graph on the way."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    from ortmodels.export import export_model
    from ortmodels.export.decoder import exporter as decoder
    from ortmodels.store import ModelStore
    from tests.tiny_decoders import build_tiny_decoder

    folder = build_tiny_decoder(tmp_path / "models" / "tiny", "llama")
    tensors = load_file(folder / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    built: list[Any] = []
    real = decoder.build_decoder_graph

    def recording(checkpoint: Path, target: Path, precision: Any, hessians: Any = None, facts: Any = None
                  ) -> dict[str, Any]:
        built.append(precision)
        return real(checkpoint, target, precision, hessians, facts)

    monkeypatch.setattr(decoder, "build_decoder_graph", recording)
    manifest = export_model(ModelStore(tmp_path / "models"), "tiny", ["int4"], skip_gates=True).manifest
    assert [p.bits for p in built] == [4]  # no fp32 graph written first
    assert list(manifest.variants) == ["int4"] and manifest.variants["int4"].files
    parity = manifest.variants["int4"].parity
    assert parity["reference"] == "pytorch fp32" and parity["finite"] and parity["greedy_agreement"] > 0
    cost = manifest.export_cost
    assert cost is not None and 0 < cost["peak_anon_bytes"] <= cost["peak_rss_bytes"]


def _anon_bytes() -> int:
    info = psutil.Process().memory_info()
    return info.rss - info.shared


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="file-backed pages are told apart on Linux")
def test_an_fp16_graph_checked_on_the_cpu_holds_no_fp32_copy_of_its_weights(tmp_path: Path) -> None:
    """onnxruntime's CPU provider computes an fp16 MatMul in fp32; by default it keeps an fp32 copy of the weight.

    The export's check session widens each weight as the run reaches it: the same outputs,
    bit for bit, and the 64 MB fp32 copy of a 32 MB fp16 weight is not held after opening.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ortmodels.engine.session import create_session, create_widening_cpu_session

    rng = np.random.default_rng(3)
    weight = (rng.standard_normal((2048, 8192)) * 0.05).astype(np.float16)  # 32 MB, 64 MB in fp32
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 8192])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "model.onnx", save_as_external_data=True, location="model.onnx.data")
    x = rng.standard_normal((4, 2048)).astype(np.float16)

    outputs, grown = [], []
    for open_session in (lambda f: create_session(f, "cpu", prepack=False, arena=False), create_widening_cpu_session):
        before = _anon_bytes()
        session = open_session(tmp_path / "model.onnx")
        grown.append(_anon_bytes() - before)
        outputs.append(session.run(None, {"x": x})[0])
        del session
    assert np.array_equal(outputs[0], outputs[1])
    assert grown[0] > 0.9 * 4 * weight.size, grown  # the default: the fp32 copy, made at load
    assert grown[1] < 0.25 * 4 * weight.size, grown


_FREED = """
import sys
import numpy as np, psutil
from ortmodels.lifecycle.memory import large_allocations_mapped
def anon():
    info = psutil.Process().memory_info()
    return info.rss - info.shared
with large_allocations_mapped():
    for _ in range(3):  # glibc would raise its threshold past 25 MB after the first is freed
        block = np.ones(25_000_000 // 8)
        del block
    print(anon())
    block = np.ones(25_000_000 // 8)
    print(anon())
    del block
    print(anon())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_inside_an_export_a_freed_large_block_goes_back_at_once() -> None:
    """A freed 25 MB array (a piece of logits) is handed back, not kept in the heap for reuse."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", _FREED], capture_output=True, text=True, timeout=120, check=False,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr[-2000:]
    before, holding, after = (int(v) for v in run.stdout.split())
    assert holding - before > 20_000_000 and after - before < 5_000_000, (before, holding, after)


def test_only_the_export_command_maps_large_blocks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`large_allocations_mapped` leaves glibc's mmap threshold fixed for the rest of the process:
    the library's `export_model` (a notebook that exports, then chats) leaves it alone unless
    asked, and ``ortmodels export``, whose process ends after the export, asks."""
    import inspect

    from typer.testing import CliRunner

    import ortmodels.export as export_package
    from ortmodels.cli import _register, app
    from ortmodels.export.pipeline import export_model

    assert inspect.signature(export_model).parameters["map_large_blocks"].default is False

    class Reached(Exception):
        pass

    asked: dict[str, Any] = {}

    def recorded(store: object, name: str, dtypes: object = None, **options: Any) -> None:
        asked.update(options, name=name)
        raise Reached

    monkeypatch.setattr(export_package, "export_model", recorded)
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(tmp_path))
    _register("export")
    result = CliRunner().invoke(app, ["export", "some-model"])
    assert isinstance(result.exception, Reached), result.output
    assert asked["name"] == "some-model" and asked["map_large_blocks"] is True
