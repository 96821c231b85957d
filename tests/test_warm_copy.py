"""Warm copies: a quantized chat graph opens from the copy onnxruntime saved with its weights
packed for this machine, with the same logits to the bit; a damaged, stale or unwritable copy
never stops a load. On the real int4 sample (its files linked, not copied, into a temporary
variant folder)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ortmodels.engine import session as sessions
from ortmodels.engine import warm_copy
from ortmodels.engine.decoder import DecoderSession
from ortmodels.engine.session import create_session

from .conftest import CHAT_SAMPLE, SAMPLES_DIR, manager_on
from .engine_samples import variant_folder

pytestmark = pytest.mark.slow

TOKENS = list(range(100, 400, 7))


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    """The int4 sample's fp16-KV graph and its weights, linked into a folder of this test's own."""
    source = variant_folder("int4")
    folder = tmp_path / "int4"
    folder.mkdir()
    for name in ("model.kv16.onnx", "model.onnx", "model.onnx.data"):
        os.link(source / name, folder / name)
    return folder / "model.kv16.onnx"


def _opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files ONNX Runtime is asked to open from now on."""
    opened: list[Path] = []
    real = sessions._open_file
    monkeypatch.setattr(sessions, "_open_file", lambda path, *rest: opened.append(path) or real(path, *rest))
    return opened


def _logits(session: object) -> np.ndarray:
    return DecoderSession(session).all_logits(TOKENS)  # type: ignore[arg-type]


def test_the_second_session_opens_the_copy_and_computes_the_same_logits(
        graph: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _logits(create_session(graph, "cpu", 1))
    opened = _opened(monkeypatch)
    first = create_session(graph, "cpu", 1, warm=True)  # writes the copy as it opens
    copy = warm_copy.warm_copy(graph)
    assert opened == [graph] and copy.ready()
    assert (copy.folder.stat().st_mode & 0o777) == 0o755
    second = create_session(graph, "cpu", 1, warm=True)
    assert opened == [graph, copy.graph]
    assert np.array_equal(_logits(first), plain) and np.array_equal(_logits(second), plain)
    assert [p.name for p in copy.root.iterdir()] == [copy.key]  # no temporary folder left


def test_a_damaged_copy_is_written_again(graph: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    create_session(graph, "cpu", 1, warm=True)
    copy = warm_copy.warm_copy(graph)
    data = copy.folder / "model.onnx.data"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    opened = _opened(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="ortmodels.engine.session"):
        session = create_session(graph, "cpu", 1, warm=True)
    assert "did not open" in caplog.text and "writing it again" in caplog.text
    assert opened == [copy.graph, graph] and copy.ready()
    assert np.array_equal(_logits(session), _logits(create_session(graph, "cpu", 1)))
    create_session(graph, "cpu", 1, warm=True)
    assert opened[-1] == copy.graph  # the copy written again opens


def test_a_changed_graph_gets_a_new_copy_and_the_old_one_goes(graph: Path) -> None:
    create_session(graph, "cpu", 1, warm=True)
    old = warm_copy.warm_copy(graph)
    stamp = graph.stat()
    os.utime(graph, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    new = warm_copy.warm_copy(graph)
    assert new.key != old.key and not new.ready()
    other = warm_copy.warm_copy(graph.with_name("model.onnx"))  # the variant's fp32-KV graph
    create_session(graph.with_name("model.onnx"), "cpu", 1, warm=True)
    create_session(graph, "cpu", 1, warm=True)
    assert new.ready() and not old.folder.exists()
    assert other.ready()  # another graph's copy stays


def test_a_folder_it_cannot_write_opens_the_graph_as_exported(graph: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_: object) -> str:
        raise PermissionError("read-only store")

    monkeypatch.setattr(warm_copy.tempfile, "mkdtemp", refuse)
    opened = _opened(monkeypatch)
    session = create_session(graph, "cpu", 1, warm=True)
    assert opened == [graph] and not warm_copy.warm_copy(graph).ready()
    assert np.array_equal(_logits(session), _logits(create_session(graph, "cpu", 1)))


def test_a_graph_onnx_runtime_cannot_open_is_reported_as_without_a_copy(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a graph")
    from ortmodels.errors import ModelFileError

    with pytest.raises(ModelFileError, match="ONNX Runtime could not load the model"):
        create_session(bad, "cpu", 1, warm=True)
    assert not any((tmp_path / warm_copy.FOLDER).iterdir())  # no half-written copy left


@pytest.mark.parametrize(("dtype", "setting", "kept"), [("int4", "true", True), ("int4", None, False),
                                                       ("fp32", "true", False)])
def test_the_manager_keeps_copies_of_quantized_variants_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, setting: str | None, kept: bool) -> None:
    models = tmp_path / "models"
    others = [d for d in ("fp32", "fp16", "int8", "int4") if d != dtype]
    shutil.copytree(SAMPLES_DIR / CHAT_SAMPLE, models / CHAT_SAMPLE, symlinks=True, copy_function=os.link,
                    ignore=shutil.ignore_patterns("model.safetensors", ".early-chat.json", ".prepacked", *others))
    manager = manager_on(monkeypatch, models, **({"MODEL_PREPACKED_CACHE": setting} if setting else {}))
    chat = manager.get_chat_model(f"{CHAT_SAMPLE}:{dtype}")
    answer = chat.invoke("Say hi.", max_tokens=2)
    assert answer.content
    manager.unload_all()
    variant = next((models / CHAT_SAMPLE / ".exports").glob(f"*/{dtype}"))
    copies = sorted(p.name for p in (variant / warm_copy.FOLDER).glob("*/ready"))
    assert bool(copies) == kept, copies
