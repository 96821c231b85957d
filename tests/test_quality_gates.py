"""Quality gates (`export/quality.py`): a variant that is not faithful is never loaded.

The figures are judged on their own first (loops, missed answers, bounds); then a tiny
Llama whose ``<|im_start|>`` embedding is too large for fp16 (1e5 > 65504) is exported in
fp32 and fp16: fp32 holds, fp16 turns NaN and must be marked failed, be named in the
export's table and exit code, never be picked by ``auto``, and refuse to load by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ortmodels.export.quality import derailment, find_loop, judge_decoder
from ortmodels.precision import select_variant

#: An export takes about 30 s on 2 cores, several times that beside other work: a longer bound
#: than the suite's default (pyproject.toml).
pytestmark = pytest.mark.timeout(600)

# -- the judge on figures ----------------------------------------------------------------------

FAITHFUL = {"perplexity": 12.2, "perplexity_fp32": 12.14, "top1_agreement": 0.97, "finite": True, "probes": []}


def test_find_loop_sees_a_cycle_at_the_end_only() -> None:
    assert find_loop([7, 8, 9, 10] + [1, 2, 3, 4] * 5) == 4
    assert find_loop([5] * 12) == 1
    assert find_loop(list(range(40))) is None
    assert find_loop([1, 2, 3, 4] * 5 + list(range(100, 120))) is None  # it recovered
    assert find_loop([1, 2] * 3) is None  # too short to call a loop


def test_derailment_needs_fp32_to_know_better() -> None:
    assert derailment([1, 2, 3, 4] * 5, "la France, la France", [9], "The capital of France is Paris.", ("Paris",))
    assert derailment([1, 2], "It is Lyon.", [9], "The capital of France is Paris.", ("Paris",)) == (
        "misses 'Paris', which fp32 answers")
    assert derailment([1, 2], "Paris, of course.", [9], "The capital of France is Paris.", ("Paris",)) is None
    # fp32 does not know it either (a tiny random model): only a loop fp32 does not have counts
    assert derailment([1, 2], "xq zz", [9], "gibberish", ("Paris",)) is None
    assert derailment([3] * 20, "aaaa", [3] * 20, "aaaa", ("Paris",)) is None


def test_judge_passes_faithful_figures_and_names_each_failure() -> None:
    assert judge_decoder("int8", FAITHFUL).passed
    verdict = judge_decoder("int8", {**FAITHFUL, "perplexity": 12.6})
    assert not verdict.passed and "perplexity 1.038x fp32's > 1.02" in verdict.failures[0]
    assert judge_decoder("int4", {**FAITHFUL, "perplexity": 12.6}).passed  # int4's bound is 1.10
    nan = judge_decoder("fp16", {**FAITHFUL, "perplexity": float("nan"), "finite": False, "top1_agreement": 0.0})
    assert not nan.passed and nan.failures[0].startswith("non-finite logits")
    assert any("perplexity nan" in f for f in nan.failures) and any("agreement 0.000" in f for f in nan.failures)
    probe = {"question": "What is the capital of France?", "answer": "L'Étoile, la France, la France",
             "derailed": "loops ('la France, la France')"}
    looped = judge_decoder("int8", {**FAITHFUL, "probes": [probe]})
    assert looped.failures == ["'What is the capital of France?' loops ('la France, la France')"]


def test_auto_never_picks_a_failed_variant() -> None:
    exported = ["fp16", "fp32", "int8", "int4"]
    assert select_variant("auto", exported, "chat", "cuda") == "fp16"
    assert select_variant("auto", exported, "chat", "cuda", failed={"fp16": "NaN"}) == "fp32"
    assert select_variant("auto", exported, "chat", "cpu", failed={"int4": "x"}) == "int8"
    assert select_variant("auto", exported, "chat", "cpu") == "int4"


# -- a real export whose fp16 overflows ---------------------------------------------------------


@pytest.fixture(scope="module")
def overflowing_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with one embedding row beyond fp16's range, exported by the real CLI."""
    from safetensors.torch import load_file, save_file

    from tests.tiny_decoders import IM_START_ID, build_tiny_decoder

    root = tmp_path_factory.mktemp("gates") / "models"
    folder = build_tiny_decoder(root / "tiny-overflow", "llama")
    weights = load_file(folder / "model.safetensors")
    weights["model.embed_tokens.weight"][IM_START_ID] *= 1e5 / weights["model.embed_tokens.weight"][IM_START_ID].abs().max()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return root


@pytest.fixture(scope="module")
def overflow_export(overflowing_store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCAL_MODELS_DIR": str(overflowing_store), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "ortmodels", "export", "tiny-overflow", "--dtype", "fp32,fp16"],
        env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_nan_fp16_is_marked_failed_in_the_table_and_exit_code(overflow_export: subprocess.CompletedProcess,
                                                               overflowing_store: Path) -> None:
    out = overflow_export.stdout + overflow_export.stderr
    assert overflow_export.returncode == 1, out
    assert "Failed the quality gates, not published: tiny-overflow fp16" in out
    assert "non-finite logits" in out and "passed" in out  # fp32's row

    manifest = json.loads((overflowing_store / "tiny-overflow" / "onnx" / "manifest.json").read_text())
    fp16, fp32 = manifest["variants"]["fp16"], manifest["variants"]["fp32"]
    assert fp32["quality"]["passed"] and fp32["parity"]["finite"]
    assert fp16["quality"]["passed"] is False and fp16["parity"]["finite"] is False
    assert fp16["files"] == {} and not (overflowing_store / "tiny-overflow" / "onnx" / "fp16").exists()

    listing = subprocess.run([sys.executable, "-m", "ortmodels", "list"], capture_output=True, text=True,
                             env={**os.environ, "LOCAL_MODELS_DIR": str(overflowing_store), "COLUMNS": "250"})
    assert "fp16 (failed)" in listing.stdout, listing.stdout


@pytest.mark.slow
def test_a_failed_variant_is_never_loaded(overflow_export: subprocess.CompletedProcess, overflowing_store: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.messages import HumanMessage

    from ortmodels import ModelManager
    from ortmodels.errors import FailedVariantError
    from ortmodels.store import ModelStore

    assert overflow_export.returncode == 1
    info = ModelStore(overflowing_store).info("tiny-overflow")
    assert info.usable_variants == ["fp32"] and "non-finite logits" in info.failed_variants()["fp16"]
    assert select_variant("auto", list(info.variants), "chat", "cuda", failed=info.failed_variants()) == "fp32"

    monkeypatch.setenv("LOCAL_MODELS_DIR", str(overflowing_store))
    manager = ModelManager()
    with pytest.raises(FailedVariantError, match=r"fp16 export of 'tiny-overflow' failed its quality gates.*non-finite"):
        manager.get_chat_model("tiny-overflow", dtype="fp16").invoke([HumanMessage("hi")], max_tokens=2)
    chat = manager.get_chat_model("tiny-overflow")  # auto: fp32, the one that passed
    assert chat.invoke([HumanMessage("hi")], max_tokens=4).response_metadata["finish_reason"]
    assert chat.variant == "fp32"
    manager.unload_all()


@pytest.mark.slow
def test_the_server_and_versions_say_a_failed_variant_failed(overflow_export: subprocess.CompletedProcess,
                                                             overflowing_store: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Not 'does not exist' (the server) nor listed as if it could load (versions, rollback)."""
    from ortmodels import ModelManager
    from ortmodels.errors import OrtModelsError
    from ortmodels.serve.errors import ApiError
    from ortmodels.serve.models import Catalog

    assert overflow_export.returncode == 1
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(overflowing_store))
    catalog = Catalog(ModelManager())
    with pytest.raises(ApiError, match="fp16 export of 'tiny-overflow' failed its quality gates") as caught:
        catalog.resolve("tiny-overflow:fp16", "chat")
    assert (caught.value.status, caught.value.code, caught.value.param) == (404, "model_not_found", "model")
    with pytest.raises(OrtModelsError, match="Cannot serve 'tiny-overflow:fp16': The fp16 export .* failed"):
        catalog.check(["tiny-overflow:fp16"])
    assert catalog.resolve("tiny-overflow:fp32", "chat").dtype == "fp32"
    assert [list(v.variants) for v in ModelManager().versions("tiny-overflow")] == [["fp32"]]
    listing = subprocess.run([sys.executable, "-m", "ortmodels", "versions", "tiny-overflow"], capture_output=True,
                             text=True, env={**os.environ, "LOCAL_MODELS_DIR": str(overflowing_store), "COLUMNS": "250"})
    assert "fp16" not in listing.stdout and "fp32" in listing.stdout, listing.stdout


@pytest.mark.slow
def test_an_export_whose_every_variant_fails_says_so_and_publishes_nothing(tmp_path: Path) -> None:
    """Only fp16 asked for, on a first export, and fp16 overflows: a clear error naming the
    failure (it was a FileNotFoundError from reading the deleted variant's opset)."""
    from safetensors.torch import load_file, save_file

    from ortmodels.errors import ExportError
    from ortmodels.export import export_model
    from ortmodels.store import ModelStore
    from tests.tiny_decoders import IM_START_ID, build_tiny_decoder

    root = tmp_path / "models"
    folder = build_tiny_decoder(root / "tiny-overflow", "llama")
    weights = load_file(folder / "model.safetensors")
    weights["model.embed_tokens.weight"][IM_START_ID] *= 1e5 / weights["model.embed_tokens.weight"][IM_START_ID].abs().max()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError, match=r"Every variant of tiny-overflow failed.*fp16: non-finite logits"):
        export_model(ModelStore(root), "tiny-overflow", ["fp16"])
    assert not (folder / "onnx").exists()


@pytest.mark.slow
def test_fp16_whose_residual_stream_overflows_falls_back_to_an_fp32_stream(tmp_path: Path) -> None:
    """Gemma 2's norms after attention and MLP scaled to 3e4: each block's output fits fp16,
    their sum in the residual stream does not (as Gemma's real activations outgrow fp16).
    Plain fp16 turns NaN and fails; the export then keeps the stream, adds and norms in fp32,
    and that passes, with the failed recipe recorded."""
    from safetensors.torch import load_file, save_file

    from ortmodels.export import export_model
    from ortmodels.store import ModelStore
    from tests.tiny_decoders import build_tiny_decoder

    root = tmp_path / "models"
    folder = build_tiny_decoder(root / "tiny-hot", "gemma2")
    weights = load_file(folder / "model.safetensors")
    for name, tensor in weights.items():
        if "post_attention_layernorm" in name or "post_feedforward_layernorm" in name:
            tensor[:] = 3e4
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    fp16 = export_model(ModelStore(root), "tiny-hot", ["fp32", "fp16"]).manifest.variants["fp16"]
    assert fp16.quality is not None and fp16.quality.passed, fp16.quality
    assert fp16.quantization["fp32_residual"] is True and fp16.files
    failed = fp16.quantization["failed_recipes"]
    assert len(failed) == 1 and failed[0]["recipe"]["fp32_residual"] is False
    assert failed[0]["failures"][0].startswith("non-finite logits")
    assert fp16.parity["perplexity"] <= 1.01 * fp16.parity["perplexity_fp32"]
