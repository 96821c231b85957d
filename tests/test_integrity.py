"""Every file of a variant is checked against the manifest before its first load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ortmodels import ModelManager
from ortmodels.errors import ModelIntegrityError
from ortmodels.store import ModelStore
from ortmodels.store.integrity import forget, verify_variant

from .conftest import EMBEDDING_SAMPLE, manager_on


def _manager_on(model_dir: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> ModelManager:
    return manager_on(monkeypatch, model_dir.parent, **{"MODEL_DTYPE": "float32", **env})


def _fp32_file(model_dir: Path, name: str) -> Path:
    path = ModelStore(model_dir.parent).info(model_dir.name).variant_path("fp32") / name
    assert path.is_file()
    return path


def _refused(manager: ModelManager, path: Path, problem: str) -> None:
    for _ in range(2):  # and the cache keeps serving nothing from it
        with pytest.raises(ModelIntegrityError, match=problem) as caught:
            manager.get_embedding_model(EMBEDDING_SAMPLE)
        assert str(path) in str(caught.value) and "ortmodels export" in str(caught.value)
        assert manager.loaded() == []


def test_changed_file_is_refused(copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fp32_file(copied_embedding_model, "model.onnx")
    with open(path, "r+b") as handle:  # same size, one byte different
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    _refused(_manager_on(copied_embedding_model, monkeypatch), path, "changed: sha256")


def test_truncated_file_is_refused(copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fp32_file(copied_embedding_model, "tokenizer.json")
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 3)
    _refused(_manager_on(copied_embedding_model, monkeypatch), path, "truncated or replaced")


def test_missing_file_is_refused(copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fp32_file(copied_embedding_model, "config.json")
    path.unlink()
    _refused(_manager_on(copied_embedding_model, monkeypatch), path, "Missing model file")


def test_a_passed_check_is_remembered_until_a_file_changes(copied_embedding_model: Path) -> None:
    info = ModelStore(copied_embedding_model.parent).info(EMBEDDING_SAMPLE)
    folder, entry = info.variant_path("fp32"), info.variants["fp32"]
    assert verify_variant(folder, entry, EMBEDDING_SAMPLE) == len(entry.files)
    assert verify_variant(folder, entry, EMBEDDING_SAMPLE) == 0  # remembered in memory
    forget(folder)
    assert verify_variant(folder, entry, EMBEDDING_SAMPLE) == 0  # and on disk, for new processes
    tokenizer = folder / "tokenizer.json"
    os.utime(tokenizer, ns=(tokenizer.stat().st_atime_ns, tokenizer.stat().st_mtime_ns + 10**9))
    assert verify_variant(folder, entry, EMBEDDING_SAMPLE) == 1  # only the touched file again


def test_verification_can_be_switched_off(copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fp32_file(copied_embedding_model, "vocab.txt")
    with open(path, "a") as handle:
        handle.write("extra\n")
    manager = _manager_on(copied_embedding_model, monkeypatch, MODEL_VERIFY_FILES="false")
    assert len(manager.get_embedding_model(EMBEDDING_SAMPLE).embed_query("still loads")) == 384


def test_vocabulary_bounds_are_remembered_until_the_tokenizer_changes(copied_embedding_model: Path,
                                                                      tmp_path: Path) -> None:
    """A load reads a tokenizer's vocabulary bounds back from beside the export instead of
    reading its whole vocabulary again; a changed file, a damaged record or a folder outside an
    export version computes them afresh."""
    from ortmodels.engine.tokenizer import load_tokenizer, vocabulary_bounds
    from ortmodels.store.integrity import remembered_figures

    path = ModelStore(copied_embedding_model.parent).info(EMBEDDING_SAMPLE).variant_path("fp32") / "tokenizer.json"
    exact = vocabulary_bounds(load_tokenizer(path))
    computed: list[tuple[int, int]] = []

    def compute() -> tuple[int, int]:
        computed.append(exact)
        return exact

    def bounds(at: Path = path) -> tuple[int, ...]:
        return remembered_figures(at, "vocabulary_bounds", 2, compute)

    assert bounds() == exact and len(computed) == 1
    assert bounds() == exact and len(computed) == 1  # read back, as a new process would
    record = next((copied_embedding_model / ".exports" / ".verified").glob("*.figures.json"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert bounds() == exact and len(computed) == 2  # the file changed: computed again
    record.write_text("[1, 2", encoding="utf-8")
    assert bounds() == exact and len(computed) == 3  # a damaged record: computed again
    assert bounds() == exact and len(computed) == 3
    outside = tmp_path / "loose"
    outside.mkdir()
    loose = outside / "tokenizer.json"
    loose.write_bytes(path.read_bytes())
    assert bounds(loose) == exact and bounds(loose) == exact and len(computed) == 5  # nowhere to keep them
    assert list(outside.iterdir()) == [loose]


def test_a_files_faster_form_is_kept_until_it_or_the_file_changes(copied_embedding_model: Path,
                                                                   tmp_path: Path) -> None:
    """`remembered_form`: made once and read back by later loads; made again when the file or
    the kept form changed; a file with no other form is remembered as such; nothing is made
    where it could not be kept (a folder outside an export version)."""
    from ortmodels.store.integrity import remembered_form

    path = ModelStore(copied_embedding_model.parent).info(EMBEDDING_SAMPLE).variant_path("fp32") / "tokenizer.json"
    made: list[str] = []

    def make() -> str:
        made.append("form")
        return f"form {len(made)}"

    assert remembered_form(path, "x.json", make) == "form 1"
    assert remembered_form(path, "x.json", make) == "form 1" and len(made) == 1  # read back
    kept = next((copied_embedding_model / ".exports" / ".verified").glob("*.fp32.x.json"))
    kept.write_text("tampered", encoding="utf-8")
    assert remembered_form(path, "x.json", make) == "form 2"  # the form changed: made again
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert remembered_form(path, "x.json", make) == "form 3"  # the file changed: made again
    assert remembered_form(path, "none.json", lambda: None) is None
    assert remembered_form(path, "none.json", make) is None and len(made) == 3  # remembered as having none
    outside = tmp_path / "loose"
    outside.mkdir()
    (outside / "tokenizer.json").write_bytes(path.read_bytes())
    assert remembered_form(outside / "tokenizer.json", "x.json", make) is None and len(made) == 3


def test_a_deleted_versions_records_go_with_it(copied_embedding_model: Path) -> None:
    """`forget_version` (prune, delete) removes the version's integrity record, figures and kept
    forms, and nothing of a version whose id starts the same (``v1`` and ``v1.fp32``)."""
    from ortmodels.store.integrity import forget_version, remembered_figures, remembered_form

    exports = copied_embedding_model / ".exports"
    path = ModelStore(copied_embedding_model.parent).info(EMBEDDING_SAMPLE).variant_path("fp32") / "tokenizer.json"
    version = path.parent.parent.name
    verify_variant(path.parent, ModelStore(copied_embedding_model.parent).info(EMBEDDING_SAMPLE).variants["fp32"],
                   EMBEDDING_SAMPLE)
    remembered_figures(path, "bounds", 1, lambda: (7,))
    remembered_form(path, "x.json", lambda: "form")
    verified = exports / ".verified"
    ours = {p.name for p in verified.iterdir()}
    assert ours == {f"{version}.json", f"{version}.figures.json", f"{version}.fp32.x.json"}, ours
    others = {f"{version}.fp32.json", f"{version}.fp32.figures.json", f"{version}.x.json"}  # another id's
    for name in others:
        (verified / name).write_text("{}", encoding="utf-8")
    forget_version(exports, version)
    assert {p.name for p in verified.iterdir()} == others
    forget_version(exports, version)  # nothing left to delete: no error


def test_merges_as_strings_are_the_same_tokenizer(samples_dir: Path, tmp_path: Path) -> None:
    """A BPE tokenizer's merges as ``"a b"`` strings parse faster and tokenize the same; a
    WordPiece tokenizer, or a merge part holding a space, has no such form."""
    import json

    from ortmodels.engine.tokenizer import load_tokenizer, merges_as_text

    from .conftest import CHAT_SAMPLE

    path = samples_dir / CHAT_SAMPLE / "onnx" / "int4" / "tokenizer.json"
    text = merges_as_text(path)
    assert text is not None and '"Ġ t"' in text
    plain, fast = load_tokenizer(path), load_tokenizer(path, text=text)
    assert fast.to_str() == plain.to_str()
    for sample in ("Why is the sky blue?", "<|im_start|>user\n  tabs\tand é中文 😀<|im_end|>\n", "x" * 300):
        assert fast.encode(sample).ids == plain.encode(sample).ids
    assert load_tokenizer(path, text="not json").to_str() == plain.to_str()  # a damaged form: the file
    wordpiece = ModelStore(samples_dir).info(EMBEDDING_SAMPLE).variant_path("fp32") / "tokenizer.json"
    assert merges_as_text(wordpiece) is None
    data = json.loads(path.read_text(encoding="utf-8"))
    data["model"]["merges"][0] = ["a b", "c"]
    spaced = tmp_path / "tokenizer.json"
    spaced.write_text(json.dumps(data), encoding="utf-8")
    assert merges_as_text(spaced) is None
