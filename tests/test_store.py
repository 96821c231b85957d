"""The model store: name validation before any disk access, kind detection, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ortmodels.errors import (
    InvalidModelNameError,
    ModelFileError,
    ModelKindError,
    ModelNotExportedError,
    UnknownModelError,
)
from ortmodels.store import ModelStore, detect_kind


def _checkpoint(folder: Path, architecture: str, **extra_files: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    for name, text in extra_files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    "name",
    ["../secrets", "a/b", "a\\b", "/etc/passwd", ".hidden", "..", "", "x" * 200, "a..b", "C:\\models"],
)
def test_traversal_and_odd_names_are_refused_before_disk_access(tmp_path: Path, name: str) -> None:
    store = ModelStore(tmp_path / "does-not-exist")
    with pytest.raises(InvalidModelNameError, match="Invalid model name"):
        store.info(name)
    assert not (tmp_path / "does-not-exist").exists()


def test_non_string_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelNameError, match="must be a string"):
        ModelStore(tmp_path).info(42)  # type: ignore[arg-type]


def test_unknown_name_lists_known_models(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "alpha", "BertModel")
    _checkpoint(tmp_path / "beta", "LlamaForCausalLM")
    with pytest.raises(UnknownModelError) as info:
        ModelStore(tmp_path).info("gamma")
    message = str(info.value)
    assert "gamma" in message and "alpha, beta" in message
    assert isinstance(info.value, KeyError)  # existing `except KeyError` code keeps working


def test_kinds_are_told_apart_by_files(tmp_path: Path) -> None:
    assert detect_kind(_checkpoint(tmp_path / "st", "BertModel", **{"modules.json": "[]"}))[0] == "embedding"
    assert detect_kind(_checkpoint(tmp_path / "enc", "XLMRobertaModel"))[0] == "embedding"
    assert detect_kind(_checkpoint(tmp_path / "llm", "Qwen2ForCausalLM"))[0] == "chat"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect_kind(empty)[0] == "unknown"


def test_listing_skips_hidden_and_non_model_folders(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "real", "BertModel")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert ModelStore(tmp_path).names() == ["real"]
    assert ModelStore(tmp_path / "missing").names() == []


def test_wrong_kind_is_a_clear_error(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "llm", "LlamaForCausalLM")
    _checkpoint(tmp_path / "enc", "BertModel")
    with pytest.raises(ModelKindError, match="of kind 'chat', not 'embedding'. Embedding models here: enc"):
        ModelStore(tmp_path).require("llm", "embedding")


def test_corrupt_manifest_names_the_file(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "enc", "BertModel")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="manifest.json"):
        ModelStore(tmp_path).info("enc")
    # listing survives one broken model
    assert [i.name for i in ModelStore(tmp_path).list()] == ["enc"]


def test_missing_variant_says_how_to_export(samples_dir: Path) -> None:
    info = ModelStore(samples_dir).info("all-minilm-l6-v2")
    assert set(info.variants) >= {"fp32", "int8"}
    with pytest.raises(ModelNotExportedError, match="ortmodels export all-minilm-l6-v2 --dtype int4"):
        info.variant_path("int4")
