"""``ortmodels export --skip-gates``: every variant published "not judged", fp32 parity still enforced.

Random-weight checkpoints (benchmarks of speed, memory and size at real shapes) cannot pass
the quality gates. The real export here is a tiny Llama whose ``<|im_start|>`` embedding is
beyond fp16's range, so its fp16 variant fails the gates (NaN logits): with the flag it is
published with its figures and "not judged", listed so, loadable, and eligible for ``auto``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ortmodels.export.quality import gates_skipped, judge_decoder
from ortmodels.precision import select_variant
from ortmodels.store.manifest import QualityVerdict

FAILING = {"perplexity": 13.0, "perplexity_fp32": 12.0, "top1_agreement": 0.277, "finite": True, "probes": []}


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCAL_MODELS_DIR": str(store), "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "ortmodels", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _overflowing_llama(root: Path) -> Path:
    """A tiny Llama whose fp16 variant turns NaN (as in test_quality_gates)."""
    from safetensors.torch import load_file, save_file

    from tests.tiny_decoders import IM_START_ID, build_tiny_decoder

    folder = build_tiny_decoder(root / "tiny-overflow", "llama")
    weights = load_file(folder / "model.safetensors")
    row = weights["model.embed_tokens.weight"][IM_START_ID]
    row *= 1e5 / row.abs().max()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_skipped_gates_record_the_verdict_but_not_for_fp32() -> None:
    assert not judge_decoder("int4", FAILING).passed and judge_decoder("int4", FAILING).judged
    with gates_skipped():
        skipped = judge_decoder("int4", FAILING)
        fp32 = judge_decoder("fp32", FAILING)
    assert not skipped.judged and skipped.publishable and not skipped.passed
    assert skipped.failures == ["next-token agreement 0.277 < 0.8"]
    assert fp32.judged and not fp32.publishable  # parity with PyTorch is never skipped
    assert judge_decoder("int4", FAILING).judged  # the flag ends with its block
    # A manifest written before the flag existed reads as judged.
    assert QualityVerdict.model_validate({"passed": False, "failures": ["x"]}).judged


@pytest.fixture(scope="module")
def skipped_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("skip") / "models"
    _overflowing_llama(root)
    return root, _cli(root, "export", "tiny-overflow", "--dtype", "fp32,fp16", "--skip-gates")


@pytest.mark.slow
def test_every_variant_is_published_not_judged(skipped_store: tuple[Path, subprocess.CompletedProcess]) -> None:
    root, export = skipped_store
    out = export.stdout + export.stderr
    assert export.returncode == 0, out
    assert "not judged (the gates would fail it: non-finite logits" in out and "passed" in out  # fp16, fp32
    manifest = json.loads((root / "tiny-overflow" / "onnx" / "manifest.json").read_text())
    fp16, fp32 = manifest["variants"]["fp16"], manifest["variants"]["fp32"]
    assert fp16["quality"]["judged"] is False and fp16["quality"]["passed"] is False
    assert fp16["parity"]["finite"] is False and fp16["files"]  # its figures, and its files
    assert fp16["quantization"].get("failed_recipes") is None  # the first recipe, not a retry
    assert fp32["quality"]["judged"] is True and fp32["quality"]["passed"] is True

    listing = _cli(root, "list")
    assert "fp16 (not judged)" in listing.stdout and "fp32 (" not in listing.stdout, listing.stdout
    info = _cli(root, "info", "tiny-overflow")
    assert "not judged (the gates would fail it: non-finite logits" in info.stdout, info.stdout
    as_json = json.loads(_cli(root, "info", "tiny-overflow", "--json").stdout)
    assert as_json["variants"]["fp16"]["verdict"] == "not judged"


@pytest.mark.slow
def test_a_not_judged_variant_loads_and_auto_may_pick_it(skipped_store: tuple[Path, subprocess.CompletedProcess]) -> None:
    from ortmodels.store import ModelStore

    root, export = skipped_store
    assert export.returncode == 0
    info = ModelStore(root).info("tiny-overflow")
    assert sorted(info.usable_variants) == ["fp16", "fp32"] and info.failed_variants() == {}
    assert select_variant("auto", list(info.variants), "chat", "cuda", failed=info.failed_variants()) == "fp16"
    assert (info.variant_path("fp16") / "model.onnx").is_file()  # no FailedVariantError


@pytest.mark.slow
def test_an_export_without_the_flag_judges_again(skipped_store: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Not-judged variants are not "up to date" for an export with the gates: it redoes them."""
    from ortmodels.export import export_model
    from ortmodels.store import ModelStore

    root, _ = skipped_store
    store = ModelStore(root)
    assert export_model(store, "tiny-overflow", ["fp32", "fp16"], skip_gates=True).skipped
    judged = export_model(store, "tiny-overflow", ["fp32", "fp16"])
    assert not judged.skipped and judged.failed == ["fp16"]
    assert store.info("tiny-overflow").verdict("fp16") == "failed"


@pytest.mark.slow
def test_fp32_that_does_not_match_pytorch_is_refused_even_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ortmodels.errors import ParityError
    from ortmodels.export import export_model
    from ortmodels.export.decoder import exporter
    from ortmodels.export.decoder.parity import DecoderReference
    from ortmodels.store import ModelStore
    from tests.tiny_decoders import VOCAB_SIZE, build_tiny_decoder

    folder = build_tiny_decoder(tmp_path / "models" / "tiny", "llama")
    real = exporter.compute_reference

    def shifted(*args, **kwargs) -> DecoderReference:  # PyTorch "says" other tokens
        reference = real(*args, **kwargs)
        reference.greedy = [[(t + 1) % VOCAB_SIZE for t in tokens] for tokens in reference.greedy]
        return reference

    monkeypatch.setattr(exporter, "compute_reference", shifted)
    with pytest.raises(ParityError, match="does not reproduce PyTorch's greedy tokens"):
        export_model(ModelStore(tmp_path / "models"), "tiny", ["fp32", "int8"], skip_gates=True)
    assert not (folder / "onnx").exists()
