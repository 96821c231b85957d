"""Export versions side by side: load by version, roll back, prune; never delete one in use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ortmodels import ModelManager
from ortmodels.cli import _register, app
from ortmodels.errors import InvalidVersionError, UnknownVersionError, VersionInUseError
from ortmodels.export import export_model
from ortmodels.store import ModelStore
from ortmodels.store.versions import (
    active_version,
    delete_version,
    list_versions,
    prune,
)

from .conftest import EMBEDDING_SAMPLE, manager_on

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def versioned(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A private store whose embedding model has two versions: ``old`` and a newer int8 re-export."""
    root = tmp_path_factory.mktemp("versions")
    source = samples_dir / EMBEDDING_SAMPLE
    model_dir = root / EMBEDDING_SAMPLE
    shutil.copytree(source, model_dir, symlinks=True, ignore=shutil.ignore_patterns(".exports", "onnx"))
    old = active_version(source)
    assert old is not None
    shutil.copytree(source / ".exports" / old, model_dir / ".exports" / old)
    (model_dir / "onnx").symlink_to(Path(".exports") / old, target_is_directory=True)
    export_model(ModelStore(root), EMBEDDING_SAMPLE, ["int8"], force=True)
    new = active_version(model_dir)
    assert new is not None and new != old
    return model_dir, old, new


def _use_store(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> ModelManager:
    return manager_on(monkeypatch, model_dir.parent, MODEL_DTYPE="float32")


def _cli(*args: str) -> str:
    _register()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_versions_share_identical_files(versioned: tuple[Path, str, str]) -> None:
    """The re-export's files that equal the old version's (fp32 carried over, the tokenizer and
    configs of the rebuilt int8) are hard links to them, not copies: same inode."""
    from ortmodels.store.manifest import read_manifest

    model_dir, old, new = versioned
    old_files: dict[tuple[str, int], list[Path]] = {}
    for e in read_manifest(model_dir / ".exports" / old).variants.values():
        for rel, f in e.files.items():
            old_files.setdefault((f.sha256, f.size), []).append(model_dir / ".exports" / old / e.path / rel)
    shared, distinct = [], []
    for entry in read_manifest(model_dir / ".exports" / new).variants.values():
        for rel, file in entry.files.items():
            path, twins = model_dir / ".exports" / new / entry.path / rel, old_files.get((file.sha256, file.size), [])
            if twins:
                (shared if any(path.samefile(t) for t in twins) else distinct).append(f"{entry.path}/{rel}")
    assert not distinct, f"identical but copied: {distinct}"
    assert "int8/tokenizer.json" in shared and "fp32/model.onnx" in shared, shared


def test_a_shared_file_changed_in_place_is_not_mended_by_a_rollback(versioned: tuple[Path, str, str]) -> None:
    """The fix offered is a re-export: the other version links the same, now damaged, file."""
    from ortmodels.errors import ModelIntegrityError
    from ortmodels.store.integrity import verify_variant
    from ortmodels.store.manifest import read_manifest

    model_dir, old, new = versioned
    folder = model_dir / ".exports" / new
    entry = read_manifest(folder).variants["fp32"]
    config = folder / entry.path / "config.json"  # hard-linked to the old version's
    assert config.stat().st_nlink > 1
    before = config.read_bytes()
    config.write_bytes(before.replace(b"{", b" ", 1) if before.startswith(b"{") else b" " + before[1:])
    try:
        with pytest.raises(ModelIntegrityError, match="shared with the model's other export versions") as caught:
            verify_variant(folder / entry.path, entry, EMBEDDING_SAMPLE)
        assert "rollback" not in str(caught.value) and "--force" in str(caught.value)
    finally:
        config.write_bytes(before)
    verify_variant(folder / entry.path, entry, EMBEDDING_SAMPLE)


def test_two_versions_side_by_side_and_a_rollback(versioned: tuple[Path, str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, old, new = versioned
    found = list_versions(model_dir)
    assert [v.id for v in found] == [new, old]  # newest first
    assert found[0].active and not found[1].active
    assert found[0].content_sha256 and found[0].variants.keys() == {"fp32", "int8"}

    manager = _use_store(monkeypatch, model_dir)
    current = manager.get_embedding_model(EMBEDDING_SAMPLE)
    pinned = manager.get_embedding_model(EMBEDDING_SAMPLE, version=old)
    assert current is not pinned
    assert (current.loaded_version, pinned.loaded_version) == (new, old)
    # fp32 was carried over unchanged into the new version: both give the same vectors.
    assert current.embed_query("side by side") == pinned.embed_query("side by side")
    assert {v.id for v in manager.versions(EMBEDDING_SAMPLE) if v.in_use} == {old, new}

    manager.rollback(EMBEDDING_SAMPLE, old)
    assert active_version(model_dir) == old
    assert not current.is_loaded  # the instance of the replaced version was unloaded
    assert manager.get_embedding_model(EMBEDDING_SAMPLE).loaded_version == old
    assert manager.get_model_info(EMBEDDING_SAMPLE).version == old

    monkeypatch.setenv("LOCAL_MODELS_DIR", str(model_dir.parent))
    assert "now active" in _cli("rollback", EMBEDDING_SAMPLE, new)
    assert active_version(model_dir) == new
    listing = json.loads(_cli("versions", EMBEDDING_SAMPLE, "--json"))
    assert [(v["id"], v["active"]) for v in listing] == [(new, True), (old, False)]


def test_a_store_whose_link_is_gone_says_to_roll_back(versioned: tuple[Path, str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept exports and no active one (the ``onnx`` link removed): a rollback, seconds, is the
    fix offered first, not only a re-export, minutes to hours at real sizes."""
    from ortmodels.errors import ModelFileError

    model_dir, _, new = versioned
    manager = _use_store(monkeypatch, model_dir)
    link = model_dir / "onnx"
    target = link.readlink()
    link.unlink()
    try:
        with pytest.raises(ModelFileError, match=rf"none is active .* 'ortmodels rollback {EMBEDDING_SAMPLE} {new}'"):
            manager.get_embedding_model(EMBEDDING_SAMPLE)
        assert "ortmodels rollback" in _cli("info", EMBEDDING_SAMPLE)
        manager.rollback(EMBEDDING_SAMPLE, new)
        assert manager.get_embedding_model(EMBEDDING_SAMPLE).loaded_version == new
    finally:
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
        manager.unload_all()


def test_unknown_version_lists_the_known_ones(versioned: tuple[Path, str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, old, new = versioned
    manager = _use_store(monkeypatch, model_dir)
    with pytest.raises(UnknownVersionError, match=f"Versions: {new}, {old}"):
        manager.get_embedding_model(EMBEDDING_SAMPLE, version="20200101T000000Z-deadbeef")
    with pytest.raises(InvalidVersionError, match="Invalid export version '../../etc'"):
        manager.get_embedding_model(EMBEDDING_SAMPLE, version="../../etc")
    with pytest.raises(VersionInUseError, match="active"):
        delete_version(model_dir, new)


_HOLDER = """
import sys
from ortmodels.runtime.embeddings import OnnxEmbeddingModel
model = OnnxEmbeddingModel(model_path=sys.argv[1], dtype="fp32")
model.version = sys.argv[2]
model.load()
print("loaded", flush=True)
sys.stdin.readline()
"""


def test_prune_never_deletes_a_version_in_use(versioned: tuple[Path, str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, old, new = versioned
    manager = _use_store(monkeypatch, model_dir)
    pinned = manager.get_embedding_model(EMBEDDING_SAMPLE, version=old)
    assert prune(model_dir, keep=1) == []  # loaded here
    manager.unload_all()
    assert not pinned.is_loaded

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(model_dir), old],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "loaded"
        assert prune(model_dir, keep=1) == []  # loaded by another process
        assert [v.in_use for v in list_versions(model_dir) if v.id == old] == [True]
    finally:
        holder.communicate("\n", timeout=30)
    verified = model_dir / ".exports" / ".verified"
    assert (verified / f"{old}.json").is_file()  # its files' check, kept by the loads above
    assert "removed 1 version" in _cli("prune", EMBEDDING_SAMPLE, "--keep", "1")
    assert [v.id for v in list_versions(model_dir)] == [new]
    assert not [p.name for p in verified.iterdir() if p.name.startswith(f"{old}.")]  # nor what was kept of them
    assert len(manager.get_embedding_model(EMBEDDING_SAMPLE).embed_query("still fine")) == 384

