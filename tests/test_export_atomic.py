"""Exports are all-or-nothing: a failure leaves the previous good export in place."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ortmodels.errors import ExportError, MissingDependencyError, ParityError
from ortmodels.export.encoder import embedding as embedding_export
from ortmodels.export import export_model
from ortmodels.export.checkpoint.source import file_sha256
from ortmodels.export.optimum_bridge import require_export_stack
from ortmodels.runtime.embeddings import OnnxEmbeddingModel
from ortmodels.store import ModelStore

from .conftest import EMBEDDING_SAMPLE

#: An export takes about 30 s on 2 cores, several times that beside other work: a longer bound
#: than the suite's default (pyproject.toml).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def store(samples_dir: Path, tmp_path: Path) -> ModelStore:
    """A private store holding a full copy (checkpoint and export) of the embedding sample."""
    shutil.copytree(samples_dir / EMBEDDING_SAMPLE, tmp_path / EMBEDDING_SAMPLE, symlinks=True)
    return ModelStore(tmp_path)


def _snapshot(store: ModelStore) -> tuple[Path, str, dict[str, str]]:
    info = store.info(EMBEDDING_SAMPLE)
    assert info.manifest is not None
    files = {
        f"{dtype}/{rel}": file_sha256(info.onnx_path / entry.path / rel)
        for dtype, entry in info.variants.items()
        for rel in entry.files
    }
    return info.onnx_path.resolve(), info.manifest.model_dump_json(), files


def _assert_untouched(store: ModelStore, before: tuple[Path, str, dict[str, str]]) -> None:
    assert _snapshot(store) == before
    leftovers = list((store.root / EMBEDDING_SAMPLE / ".exports").glob("tmp-*"))
    assert leftovers == []
    model = OnnxEmbeddingModel(model_path=store.root / EMBEDDING_SAMPLE, dtype="fp32")
    assert len(model.embed_query("still works")) == 384


def test_failed_quantization_keeps_previous_export(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(store)

    def broken(source: Path, target: Path) -> dict:
        target.write_bytes(b"half-written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedding_export, "quantize_int8_dynamic", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(store, EMBEDDING_SAMPLE, ["fp32", "int8"], force=True)
    _assert_untouched(store, before)


def test_parity_failure_keeps_previous_export(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(store)
    real = embedding_export._pytorch_reference

    def skewed(*args, **kwargs) -> np.ndarray:
        ref = real(*args, **kwargs)
        return ref + np.random.default_rng(0).normal(0, 0.05, ref.shape).astype(np.float32)

    monkeypatch.setattr(embedding_export, "_pytorch_reference", skewed)
    with pytest.raises(ParityError, match="worst cosine"):
        export_model(store, EMBEDDING_SAMPLE, ["fp32"], force=True)
    _assert_untouched(store, before)


def test_up_to_date_export_is_skipped(store: ModelStore) -> None:
    outcome = export_model(store, EMBEDDING_SAMPLE, ["fp32", "int8"])
    assert outcome.skipped and outcome.exported == []


def test_new_export_replaces_old_and_keeps_other_variants(store: ModelStore) -> None:
    old_dir, _, old_files = _snapshot(store)
    (store.root / EMBEDDING_SAMPLE / ".exports" / "tmp-leftover").mkdir()  # an interrupted export
    outcome = export_model(store, EMBEDDING_SAMPLE, ["int8"], force=True)
    assert not outcome.skipped and outcome.exported == ["int8"]
    new_dir, _, new_files = _snapshot(store)
    assert new_dir != old_dir and old_dir.exists()  # the old export stays, as a version
    assert set(outcome.manifest.variants) == {"fp32", "int8"}  # fp32 carried over: same checkpoint
    assert {k: v for k, v in new_files.items() if k.startswith("fp32/")} == {
        k: v for k, v in old_files.items() if k.startswith("fp32/")
    }
    assert list((store.root / EMBEDDING_SAMPLE / ".exports").glob("tmp-*")) == []
    int8 = outcome.manifest.variants["int8"]
    assert int8.quantization and int8.quantization["weight_type"] == "QInt8"
    assert 0.9 < int8.parity["cosine_mean"] <= 1.0


def test_export_refuses_unsupported_precision(store: ModelStore) -> None:
    with pytest.raises(ExportError, match="int4 is not supported"):
        export_model(store, EMBEDDING_SAMPLE, ["int4"], force=True)


def test_missing_export_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ortmodels\[export\]'"):
        require_export_stack()


def test_manifest_records_provenance(samples_dir: Path) -> None:
    manifest = ModelStore(samples_dir).info(EMBEDDING_SAMPLE).manifest
    assert manifest is not None
    assert manifest.kind == "embedding" and manifest.task == "feature-extraction"
    assert len(manifest.source_sha256) == 64 and manifest.opset
    assert {"optimum-onnx", "transformers", "torch", "onnxruntime"} <= set(manifest.tools)
    assert manifest.embedding is not None
    spec = manifest.embedding.model_dump()
    assert {k: spec[k] for k in ("pooling", "normalize", "max_seq_length", "dimension", "pad_token_id")} == {
        "pooling": "mean", "normalize": True, "max_seq_length": 256, "dimension": 384, "pad_token_id": 0,
    }
    # all-MiniLM-L6-v2 has no instruction prompts and no Matryoshka training
    assert not any(spec.get("prompts", {}).values()) and spec.get("matryoshka") is None
    fp32 = manifest.variants["fp32"]
    assert fp32.parity["cosine_min"] >= 0.9999 and fp32.parity["probes"] >= 16
    folder = samples_dir / EMBEDDING_SAMPLE / "onnx" / "fp32"
    for rel, entry in fp32.files.items():
        assert (folder / rel).stat().st_size == entry.size
    assert file_sha256(folder / "model.onnx") == fp32.files["model.onnx"].sha256


def test_corrupt_manifest_is_repaired_by_exporting(store: ModelStore) -> None:
    manifest = store.root / EMBEDDING_SAMPLE / "onnx" / "manifest.json"
    manifest.unlink()  # a hard link may share the sample's inode: replace, never write through
    manifest.write_text("{broken")
    outcome = export_model(store, EMBEDDING_SAMPLE, ["fp32"])
    assert not outcome.skipped and store.info(EMBEDDING_SAMPLE).manifest is not None


def test_publish_never_deletes_a_folder_outside_the_model(tmp_path: Path) -> None:
    from ortmodels.export import staging

    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (model / "onnx").symlink_to(outside, target_is_directory=True)
    work = staging.new_staging_dir(model)
    staging.publish(model, work, "v1")
    assert (outside / "keep.txt").is_file()
    assert (model / "onnx").resolve() == (model / ".exports" / "v1").resolve()


def test_unknown_model_export_creates_nothing(tmp_path: Path) -> None:
    from ortmodels.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        export_model(ModelStore(tmp_path), "ghost")
    assert not (tmp_path / "ghost").exists()
