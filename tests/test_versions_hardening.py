"""Rollback is all or nothing, and a version is trusted only as what its folder says it is.

Each test makes a second export version of the embedding sample's private copy by hard-linking
the first one's files under a new id (its manifest rewritten to that id): real files, real
sessions, no export run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ortmodels import ModelManager
from ortmodels.cli import _register, app
from ortmodels.errors import ModelBusyError, ModelFileError, ModelIntegrityError
from ortmodels.store import versions as store_versions
from ortmodels.store.versions import active_version, list_versions

from .conftest import EMBEDDING_SAMPLE, manager_on
from .waiting import wait_until

pytestmark = pytest.mark.slow

WAIT_S = 60.0
"""Bound on every wait of these tests: a hang fails the test instead of stalling the suite."""
NEW = "29991231T235959Z-0000beef"


@pytest.fixture
def two_versions(copied_embedding_model: Path) -> tuple[Path, str, str]:
    """The copied sample with its exported version ``old`` (active) and a twin ``NEW``."""
    model_dir = copied_embedding_model
    old = active_version(model_dir)
    assert old is not None
    shutil.copytree(model_dir / ".exports" / old, model_dir / ".exports" / NEW, copy_function=os.link)
    _rewrite_manifest(model_dir / ".exports" / NEW, version=NEW)
    return model_dir, old, NEW


def _rewrite_manifest(folder: Path, **changes: str) -> None:
    """Write a changed manifest as a new file: the old one may be a hard link shared with a twin."""
    path = folder / "manifest.json"
    data = {**json.loads(path.read_text(encoding="utf-8")), **changes}
    path.unlink()
    path.write_text(json.dumps(data), encoding="utf-8")


def _use_store(monkeypatch: pytest.MonkeyPatch, model_dir: Path, **env: str) -> ModelManager:
    return manager_on(monkeypatch, model_dir.parent, **{"MODEL_DTYPE": "float32", **env})


# -- 1. a busy rollback changes nothing ------------------------------------------------------------


def test_a_busy_rollback_leaves_the_link_on_the_version_served(two_versions: tuple[Path, str, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, old, new = two_versions
    manager = _use_store(monkeypatch, model_dir, MODEL_UNLOAD_TIMEOUT="0.3")
    model = manager.get_embedding_model(EMBEDDING_SAMPLE)
    assert model.loaded_version == old

    entered, release = threading.Event(), threading.Event()
    embed = model._embed_as  # every embedding call's way into the model

    def held_open(texts: list[str], *options: object) -> tuple[list[list[float]], int]:  # one call stays inside
        if texts == ["held open"]:
            entered.set()
            if not release.wait(WAIT_S):
                raise TimeoutError("the test never released the held call")
        return embed(texts, *options)

    monkeypatch.setattr(model, "_embed_as", held_open)
    pool = ThreadPoolExecutor(2)
    try:
        held = pool.submit(model.embed_query, "held open")
        assert entered.wait(WAIT_S), "the held call never reached the model"
        with pytest.raises(ModelBusyError) as caught:
            manager.rollback(EMBEDDING_SAMPLE, new)
        message = str(caught.value)
        assert active_version(model_dir) == old, "the link switched although the rollback failed"
        assert f"still points to {old}" in message and "nothing changed" in message, message
        assert "embed_documents" in message and "roll back again" in message, message
        assert model.is_loaded and model.loaded_version == old
        # The failed rollback stopped holding the model: a new call runs beside the held one.
        assert len(pool.submit(model.embed_query, "served meanwhile").result(timeout=WAIT_S)) == 384
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert len(held.result(timeout=WAIT_S)) == 384

    manager.rollback(EMBEDDING_SAMPLE, new)  # now idle: it goes through
    assert active_version(model_dir) == new
    assert not model.is_loaded
    assert manager.get_embedding_model(EMBEDDING_SAMPLE).loaded_version == new


def test_an_instance_first_loaded_during_a_rollback_loads_the_new_version(
        two_versions: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback waiting for a held call must not let a new instance (another precision) open
    the version being replaced: it would keep serving it after the switch."""
    model_dir, old, new = two_versions
    manager = _use_store(monkeypatch, model_dir)
    model = manager.get_embedding_model(EMBEDDING_SAMPLE)
    entered, release, loading = threading.Event(), threading.Event(), threading.Event()
    embed, model_loading = model._embed_as, manager.model_loading

    def held_open(texts: list[str], *options: object) -> tuple[list[list[float]], int]:
        entered.set()
        if not release.wait(WAIT_S):
            raise TimeoutError("the test never released the held call")
        return embed(texts, *options)

    def observed_loading(loaded: object) -> None:
        if loaded is not model:
            loading.set()
        model_loading(loaded)

    monkeypatch.setattr(model, "_embed_as", held_open)
    monkeypatch.setattr(manager, "model_loading", observed_loading)
    pool = ThreadPoolExecutor(3)
    try:
        held = pool.submit(model.embed_query, "held open")
        assert entered.wait(WAIT_S), "the held call never reached the model"
        rollback = pool.submit(manager.rollback, EMBEDDING_SAMPLE, new, WAIT_S)
        wait_until(lambda: manager._switching[EMBEDDING_SAMPLE] > 0 or rollback.done(), timeout=WAIT_S,
                   what="the rollback began its switch")
        assert not rollback.done(), "the rollback ended before it waited for the held call"
        late = pool.submit(manager.get_embedding_model, EMBEDDING_SAMPLE, dtype="int8")
        assert loading.wait(WAIT_S), "the new instance never started loading"
        release.set()
        assert len(held.result(timeout=WAIT_S)) == 384
        assert rollback.result(timeout=WAIT_S).id == new
        assert late.result(timeout=WAIT_S).loaded_version == new
    finally:
        release.set()
        pool.shutdown(wait=True)  # every task is bounded: the held call by release, the rest by WAIT_S
    assert active_version(model_dir) == new and not model.is_loaded


# -- 2. a damaged version is refused before the switch ---------------------------------------------


def _flip_one_byte(path: Path) -> None:
    """Change one byte of ``path`` in a file of its own (it may be a hard link shared with a twin)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.unlink()
    path.write_bytes(bytes(data))


def test_a_rollback_to_a_damaged_version_is_refused(two_versions: tuple[Path, str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, old, new = two_versions
    damaged = model_dir / ".exports" / new / "int8" / "model.onnx"
    _flip_one_byte(damaged)
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(model_dir.parent))
    result = subprocess.run(
        [sys.executable, "-m", "ortmodels", "rollback", EMBEDDING_SAMPLE, new],
        env={**os.environ, "COLUMNS": "4000"}, capture_output=True, text=True, timeout=WAIT_S,
    )  # COLUMNS: rich would wrap the error, path included, at 80 columns
    assert result.returncode == 1, result.stdout + result.stderr
    error = result.stderr
    assert str(damaged) in error, error
    assert f"Cannot roll back {EMBEDDING_SAMPLE} to damaged version {new}" in error, error
    assert "Model file changed" in error and f"stays at {old}" in error, error
    assert active_version(model_dir) == old

    manager = _use_store(monkeypatch, model_dir)
    model = manager.get_embedding_model(EMBEDDING_SAMPLE)
    with pytest.raises(ModelIntegrityError, match="Model file changed") as caught:
        manager.rollback(EMBEDDING_SAMPLE, new)
    assert caught.value.path == damaged
    assert active_version(model_dir) == old
    assert model.is_loaded and model.loaded_version == old
    assert len(model.embed_query("still served")) == 384


# -- 3. a manifest that names another version is damaged -------------------------------------------


def test_a_manifest_naming_another_version_is_never_trusted(two_versions: tuple[Path, str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, old, new = two_versions
    _rewrite_manifest(model_dir / ".exports" / old, version=new)  # the active one now claims new's id
    reason = f"names version '{new}', but its folder is '{old}'"

    manager = _use_store(monkeypatch, model_dir)
    with pytest.raises(ModelFileError, match=reason):
        manager.get_embedding_model(EMBEDDING_SAMPLE)  # never loaded under either id
    assert [v.id for v in list_versions(model_dir)] == [new]
    assert reason in store_versions.damaged_versions(model_dir)[old]
    _register()
    listing = CliRunner().invoke(app, ["versions", EMBEDDING_SAMPLE])
    assert listing.exit_code == 0, listing.output
    assert f"damaged version {old}" in listing.output and "never loaded" in listing.output

    manager.rollback(EMBEDDING_SAMPLE, new)  # away from the damaged active version
    model = manager.get_embedding_model(EMBEDDING_SAMPLE)
    assert model.loaded_version == new
    with pytest.raises(ModelFileError, match=reason):
        manager.rollback(EMBEDDING_SAMPLE, old)  # never rolled back to
    assert active_version(model_dir) == new
    assert model.is_loaded and model.loaded_version == new


# -- 5. a damaged file is never reused by a new export ---------------------------------------------


def test_an_export_never_links_or_keeps_a_file_damaged_since(copied_embedding_model: Path) -> None:
    """The fix a damaged file's error names is ``ortmodels export NAME --force``: the new version
    must not link its fresh, identical file to the damaged one (matched by the sha256 its manifest
    records), nor carry the damaged variant over, nor call the damaged export up to date."""
    from ortmodels.export.pipeline import _up_to_date, carry_over, share_identical_files
    from ortmodels.store import ModelStore
    from ortmodels.store.manifest import read_manifest

    model_dir = copied_embedding_model
    old = active_version(model_dir)
    assert old is not None
    version = model_dir / ".exports" / old
    manifest = read_manifest(version)
    work = model_dir / ".work"  # a fresh export's int8, byte for byte the old one's (as a rebuild gives)
    shutil.copytree(version / "int8", work / "int8")
    info = ModelStore(model_dir.parent).info(EMBEDDING_SAMPLE)
    assert _up_to_date(info, ["int8"], manifest.source_sha256)

    damaged = version / "int8" / "model.onnx"
    with damaged.open("r+b") as handle:  # in place: every link to the file sees it
        handle.seek(damaged.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 1]))
    assert not _up_to_date(info, ["int8"], manifest.source_sha256)
    share_identical_files(model_dir, work, {"int8": manifest.variants["int8"]})
    assert not (work / "int8" / "model.onnx").samefile(damaged)
    twins = [version / variant / "tokenizer.json" for variant in ("fp32", "int8")]
    assert any((work / "int8" / "tokenizer.json").samefile(twin) for twin in twins)  # intact: shared
    kept: dict = {}
    carry_over(info, manifest.source_sha256, work, kept)
    assert "int8" not in kept and "fp32" in kept
