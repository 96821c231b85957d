"""KV cache precision (``MODEL_KV_DTYPE``, `export/decoder/kv_precision.py`).

Tiny random checkpoints are exported by the real exporter: each fp32-activation variant
gets an fp16-KV graph sharing its weights, judged by the variant's own gates, and the
runtime loads it under ``auto`` where it passed. The fp16-KV graph must still compute what
PyTorch computes (within fp16's rounding), hold half the bytes per token in every byte
bound (slots, prompt cache), and every refused case must name the setting and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ortmodels.config import load_settings
from ortmodels.errors import ConfigurationError, FailedVariantError, ModelNotExportedError
from tests.conftest import CHAT_SAMPLE
from tests.test_export_decoder_families import MESSAGES, NEW_TOKENS, _onnx_greedy, _torch_greedy
from tests.tiny_decoders import HEAD_DIM, NUM_KV_HEADS, NUM_LAYERS, build_tiny_decoder

FP32_BYTES = NUM_LAYERS * 2 * NUM_KV_HEADS * HEAD_DIM * 4  # key and value of every layer, per token
FAMILIES = ("llama", "qwen3", "gemma2")  # plain; per-head q/k norms; soft-capping and a sliding window


# -- the setting ---------------------------------------------------------------------------------


def test_setting_accepts_the_offered_precisions_and_names_itself_when_refusing() -> None:
    assert load_settings().model_kv_dtype == "auto"
    assert load_settings(MODEL_KV_DTYPE="float16").model_kv_dtype == "fp16"
    assert load_settings(MODEL_KV_DTYPE=" FP32 ").model_kv_dtype == "fp32"
    with pytest.raises(ConfigurationError, match=r"MODEL_KV_DTYPE='int8'.*scales calibrated at export"):
        load_settings(MODEL_KV_DTYPE="int8")
    for bad in ("bf16", "fp64", ""):
        with pytest.raises(ConfigurationError, match=rf"MODEL_KV_DTYPE={bad!r}.*'auto', 'fp32' or 'fp16'"):
            load_settings(MODEL_KV_DTYPE=bad)


def _cache_graph(path: Path, windows: list[int | None], elem_type: int) -> Path:
    """A graph with our decoder's cache inputs (2 KV heads of 4) for ``windows`` (one per layer;
    a number: a sliding layer, with the graph's sliding mask) and nothing else: what `graph_kv` reads."""
    import onnx
    from onnx import TensorProto, helper

    from ortmodels.engine.decoder import LAYER_WINDOWS, SLIDING_MASK

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    if any(windows):
        inputs.append(helper.make_tensor_value_info(SLIDING_MASK, TensorProto.INT64, ["batch", "window"]))
    inputs += [helper.make_tensor_value_info(f"past_key_values.{layer}.{kind}", elem_type, ["batch", 2, "past", 4])
               for layer in range(len(windows)) for kind in ("key", "value")]
    output = helper.make_tensor_value_info("logits", TensorProto.INT64, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "cache",
                                                inputs, [output]))
    helper.set_model_props(model, {LAYER_WINDOWS: json.dumps(windows)})
    onnx.save_model(model, str(path))
    return path


def test_the_recorded_kv_bytes_count_a_sliding_layer_s_window_not_every_token(tmp_path: Path) -> None:
    """A layer that holds only its window costs no bytes per token past it: the manifest's figure
    per token counts the full-history layers, and its ``window_bytes`` what the sliding ones hold
    per sequence at most, as the engine holds them (`held_positions`: the window less one, the
    slack between cuts, the new token)."""
    from onnx import TensorProto

    from ortmodels.engine.decoder import TRIM_SLACK
    from ortmodels.export.decoder.kv_precision import graph_kv

    layer = 2 * 2 * 4 * 4  # key and value, 2 heads of 4, fp32
    plain = _cache_graph(tmp_path / "plain.onnx", [None, None, None], TensorProto.FLOAT)
    assert graph_kv(plain) == ("fp32", 3 * layer, 0)
    gemma = _cache_graph(tmp_path / "gemma.onnx", [8, None, 16, None], TensorProto.FLOAT)  # two windows: the widest
    assert graph_kv(gemma) == ("fp32", 2 * layer, 2 * layer * (15 + TRIM_SLACK + 1))
    mistral = _cache_graph(tmp_path / "mistral.onnx", [4096, 4096], TensorProto.FLOAT16)  # every layer slides
    assert graph_kv(mistral) == ("fp16", 0, 2 * layer // 2 * (4095 + TRIM_SLACK + 1))


# -- the sample, as exported (old exports: fp32 only; new ones: fp16 where it passed) ---------------


def test_sample_loads_fp16_kv_where_it_passed_and_halves_the_bytes(samples_dir: Path) -> None:
    from ortmodels.runtime.chat import OnnxChatModel
    from ortmodels.store import ModelStore

    info = ModelStore(samples_dir).info(CHAT_SAMPLE)
    for dtype in ("fp32", "int4"):
        entry = info.variants[dtype]
        settings = load_settings(LOCAL_MODELS_DIR=str(samples_dir))
        chat = OnnxChatModel(model_path=samples_dir / CHAT_SAMPLE, dtype=dtype, settings=settings)
        chat.load()
        try:
            per_token = chat.kv_bytes_per_token
        finally:
            chat.unload()
        fp16 = (entry.kv or {}).get("fp16")
        if fp16 is not None and fp16.usable:  # exported by this version: auto takes the fp16 cache
            assert entry.kv is not None
            assert per_token == fp16.bytes_per_token == entry.kv["fp32"].bytes_per_token // 2
        else:  # an export made before the choice (or whose fp16 cache failed): fp32 only
            assert per_token == 30 * 2 * 3 * 64 * 4  # SmolLM2-135M: 30 layers, 3 KV heads of 64
            if entry.kv is None:
                fp16_settings = load_settings(LOCAL_MODELS_DIR=str(samples_dir), MODEL_KV_DTYPE="fp16")
                refused = OnnxChatModel(model_path=samples_dir / CHAT_SAMPLE, dtype=dtype, settings=fp16_settings)
                with pytest.raises(ModelNotExportedError, match=r"MODEL_KV_DTYPE=fp16.*Re-export"):
                    refused.load()


# -- tiny checkpoints through the real exporter ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Llama (fp32, fp16, int8), Qwen3 and Gemma 2 (fp32), and a Llama whose values overflow fp16."""
    from safetensors.torch import load_file, save_file

    from ortmodels.export import export_model
    from ortmodels.store import ModelStore

    root = tmp_path_factory.mktemp("kv") / "models"
    for family in FAMILIES:
        build_tiny_decoder(root / f"tiny-{family}", family)
        export_model(ModelStore(root), f"tiny-{family}", ["fp32", "fp16", "int8"] if family == "llama" else ["fp32"])
    # The same function in exact arithmetic (values x 1e5, the output projection / 1e5), but
    # its values no longer fit fp16's 65504: the fp16 cache must fail the gates, fp32 stay.
    folder = build_tiny_decoder(root / "tiny-hot", "llama")
    weights = load_file(folder / "model.safetensors")
    for name, tensor in weights.items():
        if name.endswith("v_proj.weight"):
            tensor *= 1e5
        elif name.endswith("o_proj.weight"):
            tensor /= 1e5
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    export_model(ModelStore(root), "tiny-hot", ["fp32"])
    return root


def _chat(root: Path, name: str, dtype: str, kv: str, **settings: object):  # type: ignore[no-untyped-def]
    from ortmodels.runtime.chat import OnnxChatModel

    chosen = load_settings(LOCAL_MODELS_DIR=str(root), MODEL_KV_DTYPE=kv, **settings)
    return OnnxChatModel(model_path=root / name, dtype=dtype, max_tokens=6, settings=chosen)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_kv_graph_is_recorded_shares_the_weights_and_matches_pytorch(tiny_store: Path, family: str) -> None:
    import onnx
    from transformers import AutoTokenizer

    from ortmodels.engine.decoder import DecoderSession, held_positions
    from ortmodels.engine.session import create_session
    from ortmodels.store import ModelStore
    from tests.tiny_decoders import SLIDING_WINDOW

    name = f"tiny-{family}"
    info = ModelStore(tiny_store).info(name)
    entry = info.variants["fp32"]
    assert entry.kv is not None and set(entry.kv) == {"fp32", "fp16"}, entry.kv
    fp32, fp16 = entry.kv["fp32"], entry.kv["fp16"]
    assert (fp32.file, fp16.file) == ("model.onnx", "model.kv16.onnx")
    # Gemma 2's first layer slides (a window of 8): its bytes are held once per sequence, not per token.
    full, windowed = (FP32_BYTES // 2, FP32_BYTES // 2 * held_positions(SLIDING_WINDOW - 1)) if family == "gemma2" \
        else (FP32_BYTES, 0)
    assert (fp32.bytes_per_token, fp32.window_bytes) == (full, windowed)
    assert (fp16.bytes_per_token, fp16.window_bytes) == (full // 2, windowed // 2)
    assert fp32.parity == entry.parity and fp16.quality is not None and fp16.quality.passed, fp16.quality
    assert fp16.parity["finite"] and fp16.parity["max_logit_diff"] < 2e-2, fp16.parity
    assert "model.kv16.onnx" in entry.files

    folder = info.variant_path("fp32")
    graph = onnx.load(str(folder / "model.kv16.onnx"), load_external_data=False)
    external = [t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and {e.value for t in external for e in t.external_data if e.key == "location"} == {
        "model.onnx.data"}  # the weights are on disk once
    assert (folder / "model.kv16.onnx").stat().st_size < (folder / "model.onnx.data").stat().st_size / 4

    tokenizer = AutoTokenizer.from_pretrained(tiny_store / name)
    prompt = list(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True))
    kv16 = DecoderSession(create_session(folder / "model.kv16.onnx", "cpu"))
    assert kv16.kv_dims[2] == np.float16
    plain = DecoderSession(create_session(folder / "model.onnx", "cpu")).all_logits(prompt)
    # fp16 rounding of keys and values only: close to the fp32 graph (itself within 1e-3 of PyTorch).
    assert np.abs(kv16.all_logits(prompt) - plain).max() < 2e-2
    # Through the cache, token by token: PyTorch's greedy tokens.
    assert _onnx_greedy(folder / "model.kv16.onnx", prompt, NEW_TOKENS) == _torch_greedy(
        tiny_store / name, prompt, NEW_TOKENS)


@pytest.mark.slow
def test_auto_takes_the_fp16_cache_where_it_passed_and_every_byte_bound_counts_half(tiny_store: Path) -> None:
    """fp32 and int8 under auto, fp32 and fp16: slots, engine memory and prompt cache in real bytes.

    fp32's fp16 cache passes its gates (asserted above); on this random checkpoint int8's
    may not (near-tied logits: next-token agreement 0.933 < 0.95 here), and then ``auto``
    must keep fp32 and an explicit fp16 is refused.
    """
    from ortmodels.store import ModelStore

    info = ModelStore(tiny_store).info("tiny-llama")
    assert info.variants["fp32"].kv["fp16"].usable  # type: ignore[index]
    for dtype in ("fp32", "int8"):
        passed = info.variants[dtype].kv["fp16"].usable  # type: ignore[index]
        held: dict[str, tuple[int, int]] = {}
        for kv in ("auto", "fp32", "fp16") if passed else ("auto", "fp32"):
            chat = _chat(tiny_store, "tiny-llama", dtype, kv)
            reply = chat.invoke("What is the capital of France?")
            assert reply.response_metadata["variant"] == dtype
            engine = chat.loaded.engine
            prompt_cache = engine.prompt_cache
            assert len(prompt_cache) >= 1
            cached = prompt_cache.nbytes - sum(e.ids.nbytes for e in prompt_cache._entries.values())
            held[kv] = (chat.kv_bytes_per_token, cached)  # type: ignore[assignment]
            assert engine.memory_bytes() >= prompt_cache.nbytes
            chat.unload()
        assert held["fp32"][0] == FP32_BYTES
        if passed:
            assert held["auto"] == held["fp16"] and held["fp16"][0] == FP32_BYTES // 2
            assert held["fp16"][1] * 2 == held["fp32"][1] > 0  # the same prompt, half the bytes
        else:
            assert held["auto"] == held["fp32"]
            with pytest.raises(FailedVariantError, match=r"MODEL_KV_DTYPE=fp16: the int8 export"):
                _chat(tiny_store, "tiny-llama", dtype, "fp16").load()


@pytest.mark.slow
def test_fp16_variant_has_one_cache_for_every_setting(tiny_store: Path) -> None:
    from ortmodels.store import ModelStore

    entry = ModelStore(tiny_store).info("tiny-llama").variants["fp16"]
    assert entry.kv is not None and set(entry.kv) == {"fp16"} and entry.kv["fp16"].file == "model.onnx"
    assert not (ModelStore(tiny_store).info("tiny-llama").variant_path("fp16") / "model.kv16.onnx").exists()
    for kv in ("auto", "fp32", "fp16"):
        chat = _chat(tiny_store, "tiny-llama", "fp16", kv)
        chat.load()
        assert chat.kv_bytes_per_token == FP32_BYTES // 2
        chat.unload()


@pytest.mark.slow
def test_an_fp16_cache_that_fails_its_gates_is_recorded_never_loaded_and_refused_by_name(tiny_store: Path) -> None:
    from ortmodels.store import ModelStore

    info = ModelStore(tiny_store).info("tiny-hot")
    entry = info.variants["fp32"]
    assert entry.quality is not None and entry.quality.passed  # fp32 computes the same model
    assert entry.kv is not None
    fp16 = entry.kv["fp16"]
    assert fp16.quality is not None and not fp16.quality.passed
    assert any("non-finite" in f for f in fp16.quality.failures), fp16.quality
    assert "model.kv16.onnx" not in entry.files and not (info.variant_path("fp32") / "model.kv16.onnx").exists()

    chat = _chat(tiny_store, "tiny-hot", "fp32", "auto")
    chat.load()
    assert chat.kv_bytes_per_token == FP32_BYTES
    chat.unload()
    with pytest.raises(FailedVariantError, match=r"MODEL_KV_DTYPE=fp16: .*failed its quality gates.*non-finite.*"
                                                 r"MODEL_KV_DTYPE=auto or fp32"):
        _chat(tiny_store, "tiny-hot", "fp32", "fp16").load()


@pytest.mark.slow
def test_an_export_from_before_the_choice_runs_fp32_and_refuses_fp16_naming_the_fix(tiny_store: Path,
                                                                                    tmp_path: Path) -> None:
    """A manifest with no ``kv`` entry and no fp16-KV graph, as every export before this one."""
    root = tmp_path / "models"
    shutil.copytree(tiny_store / "tiny-llama", root / "tiny-llama", symlinks=True)
    manifest_file = next((root / "tiny-llama").glob("**/manifest.json"))
    manifest = json.loads(manifest_file.read_text())
    for dtype, variant in manifest["variants"].items():
        variant.pop("kv")
        if variant["files"].pop("model.kv16.onnx", None) is not None:
            (manifest_file.parent / variant["path"] / "model.kv16.onnx").unlink()
    manifest_file.write_text(json.dumps(manifest))

    for kv in ("auto", "fp32"):
        chat = _chat(root, "tiny-llama", "int8", kv)
        chat.load()
        assert chat.kv_bytes_per_token == FP32_BYTES
        chat.unload()
    with pytest.raises(ModelNotExportedError, match=r"MODEL_KV_DTYPE=fp16: .*int8 .*in fp32.*"
                                                    r"ortmodels export tiny-llama --dtype int8"):
        _chat(root, "tiny-llama", "int8", "fp16").load()
    chat = _chat(root, "tiny-llama", "fp16", "fp16")  # the fp16 variant's own cache is fp16
    chat.load()
    assert chat.kv_bytes_per_token == FP32_BYTES // 2
    chat.unload()


@pytest.mark.slow
def test_info_and_list_show_the_kv_precisions(tiny_store: Path) -> None:
    env = {**os.environ, "LOCAL_MODELS_DIR": str(tiny_store), "COLUMNS": "250"}
    out = subprocess.run([sys.executable, "-m", "ortmodels", "info", "tiny-hot"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "KV cache precision" in out.stdout and "model.kv16.onnx" in out.stdout
    assert "failed: non-finite" in out.stdout  # fp16's row
    data = json.loads(subprocess.run([sys.executable, "-m", "ortmodels", "info", "tiny-llama", "--json"], env=env,
                                     capture_output=True, text=True, timeout=120).stdout)
    kv = data["variants"]["int8"]["kv"]
    assert kv["fp16"]["bytes_per_token"] * 2 == kv["fp32"]["bytes_per_token"] == FP32_BYTES
