"""A chat model's session opens on a helper thread while its tokenizer and template are read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ortmodels.engine.session import create_session, open_beside
from ortmodels.engine.tokenizer import load_tokenizer
from ortmodels.errors import ModelFileError

from .engine_samples import variant_folder

pytestmark = pytest.mark.slow


def test_both_results_and_the_session_on_its_own_thread() -> None:
    folder = variant_folder("int4")
    threads: list[str] = []

    def open_session():  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return create_session(folder / "model.onnx", "cpu", 1, arena=False)

    session, tokenizer = open_beside(open_session, lambda: load_tokenizer(folder / "tokenizer.json"))
    assert threads == ["ortmodels-session-open"]
    assert session.get_outputs()[0].name == "logits"
    assert tokenizer.encode("Paris").ids


def test_the_session_error_wins_over_the_other_files(tmp_path: Path) -> None:
    """Opened in turn, a bad graph was reported first: still so when both are bad."""
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelFileError, match="ONNX Runtime could not load the model"):
        open_beside(lambda: create_session(tmp_path / "model.onnx", "cpu", 1),
                    lambda: load_tokenizer(tmp_path / "tokenizer.json"))


def test_the_other_files_error_once_the_session_opened(tmp_path: Path) -> None:
    folder = variant_folder("int4")
    with pytest.raises(ModelFileError, match="Missing tokenizer file"):
        open_beside(lambda: create_session(folder / "model.onnx", "cpu", 1, arena=False),
                    lambda: load_tokenizer(tmp_path / "tokenizer.json"))


def test_a_session_opened_early_is_the_one_the_load_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ortmodels chat`` starts its graph opening before it imports the rest: the load then
    takes that session instead of opening the file again, and answers with it."""
    from ortmodels.config import load_settings
    from ortmodels.engine import session as sessions
    from ortmodels.manager import ModelManager
    from ortmodels.runtime.events import TextDelta
    from ortmodels.runtime.options import ChatOptions
    from ortmodels.runtime.variant import open_chat_early
    from ortmodels.store import ModelStore

    from .conftest import CHAT_SAMPLE, SAMPLES_DIR

    opened: list[str] = []
    real_open = sessions._create_session

    def counted(model_file: Path, *rest):  # type: ignore[no-untyped-def]
        opened.append(f"{model_file.name} on {threading.current_thread().name}")
        return real_open(model_file, *rest)

    monkeypatch.setattr(sessions, "_create_session", counted)
    settings = load_settings()
    open_chat_early(ModelStore(SAMPLES_DIR), CHAT_SAMPLE, "int4", settings)
    model = ModelManager().get_runtime("chat", f"{CHAT_SAMPLE}:int4")
    assert len(opened) == 1 and opened[0].endswith("on ortmodels-session-early"), opened
    assert not sessions._early  # taken
    text = "".join(e.text for e in model.chat_events([{"role": "user", "content": "Say hi."}],
                                                     ChatOptions(max_tokens=4)) if isinstance(e, TextDelta))
    assert text.strip()


def test_an_early_session_nobody_takes_is_dropped_and_its_error_is_the_loads(tmp_path: Path) -> None:
    """A bad graph opened early fails in the load that takes it, with the load's own error;
    one nobody takes (another model was asked for) is dropped."""
    from ortmodels.engine import session as sessions

    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    sessions.open_early(tmp_path / "model.onnx", "cpu", 1)
    with pytest.raises(ModelFileError, match="ONNX Runtime could not load the model"):
        create_session(tmp_path / "model.onnx", "cpu", 1)
    released: list[bool] = []
    sessions.open_early(tmp_path / "model.onnx", "cpu", 1, done=lambda: released.append(True))
    sessions.discard_early()
    assert not sessions._early and released == [True]


def test_an_early_session_opened_on_a_guess_is_opened_again_by_the_load_if_it_failed(tmp_path: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch
                                                                                      ) -> None:
    """A session `cli.early_hint` started before the file checks and without a lease may have
    failed for a reason the load's own opening would not meet: the load opens the file again,
    and its own error is the one reported."""
    from ortmodels.engine import session as sessions

    attempts: list[str] = []
    real_open = sessions._create_session

    def counted(model_file: Path, *rest):  # type: ignore[no-untyped-def]
        attempts.append(threading.current_thread().name)
        return real_open(model_file, *rest)

    monkeypatch.setattr(sessions, "_create_session", counted)
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    sessions.open_early(tmp_path / "model.onnx", "cpu", 1, retry=True)
    with pytest.raises(ModelFileError, match="ONNX Runtime could not load the model"):
        create_session(tmp_path / "model.onnx", "cpu", 1)
    assert attempts == ["ortmodels-session-early", threading.current_thread().name]


def test_a_chat_start_reopens_the_last_ones_session_until_what_chose_it_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ortmodels chat NAME`` remembers the graph its choice opened (`cli.early_hint`); the next
    start opens it before importing the settings and the store, unless a setting, the ``.env``
    file or a file of the variant changed since. The choice then takes that very session."""
    import shutil

    from ortmodels.cli import _open_early, early_hint
    from ortmodels.engine import session as sessions

    from .conftest import CHAT_SAMPLE, SAMPLES_DIR

    models, hint = tmp_path / "models", early_hint.HINT_FILE
    shutil.copytree(SAMPLES_DIR / CHAT_SAMPLE, models / CHAT_SAMPLE, symlinks=True,
                    ignore=shutil.ignore_patterns("model.safetensors", "fp32", "fp16", "int8", hint, ".prepacked"))
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(models))
    opened: list[str] = []
    monkeypatch.setattr(sessions, "_create_session", lambda model_file, *rest: opened.append(model_file.name) or object())
    word = f"{CHAT_SAMPLE}:int4"

    def reopened() -> bool:
        started = early_hint.start(word)
        assert all(early.retry for early in sessions._early.values())
        sessions.discard_early()
        return started

    assert not reopened()  # nothing remembered yet
    _open_early(["chat", word, "hi"])
    sessions.discard_early()
    assert opened == ["model.kv16.onnx"] and (models / CHAT_SAMPLE / ".exports" / hint).is_file()
    assert reopened() and opened == ["model.kv16.onnx"] * 2
    early_hint.start(word)
    _open_early(["chat", word, "hi"])  # the choice takes the session already opening
    assert len(sessions._early) == 1 and opened == ["model.kv16.onnx"] * 3
    sessions.discard_early()

    monkeypatch.setenv("model_threads", "1")  # read as MODEL_THREADS
    assert not reopened()
    _open_early(["chat", word, "hi"])  # remembered under this setting too
    sessions.discard_early()
    assert reopened()
    monkeypatch.delenv("model_threads")
    assert reopened()  # the first one is still kept
    variant = next((models / CHAT_SAMPLE / ".exports").glob("*/int4"))
    (variant / ".prepacked").mkdir()  # a cache beside the export (its warm copy) is not one of its files
    assert reopened()
    (variant / "extra.txt").write_text("x")
    assert not reopened()
    (variant / "extra.txt").unlink()
    assert reopened()
    config = (variant / "config.json").read_bytes()
    (variant / "config.json").unlink()
    (variant / "config.json").write_bytes(config)  # the same bytes, another file
    assert not reopened()
    monkeypatch.delenv("LOCAL_MODELS_DIR")
    monkeypatch.chdir(tmp_path)  # the default folder, models/, from here
    assert not reopened()  # the file's stamp changed: not since remembered
    _open_early(["chat", word, "hi"])
    sessions.discard_early()
    assert reopened()
    (tmp_path / ".env").write_text("MODEL_THREADS=1\n")  # the models folder could be named there
    assert not reopened()


def test_a_hint_naming_a_graph_outside_the_models_folder_is_never_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint file is data in the store: a graph path it names outside the model's folder is
    skipped even when its fingerprint matches."""
    import json

    from ortmodels.cli import early_hint
    from ortmodels.engine import session as sessions

    models = tmp_path / "models"
    (models / "m" / ".exports" / "v" / "int4").mkdir(parents=True)
    (models / "m" / "onnx").symlink_to(".exports/v")
    outside = tmp_path / "elsewhere" / "int4"
    outside.mkdir(parents=True)
    (outside / "model.onnx").write_bytes(b"x")
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(models))
    opened: list[str] = []
    monkeypatch.setattr(sessions, "_create_session", lambda model_file, *rest: opened.append(str(model_file)) or object())
    key = [str(outside / "model.onnx"), "CPUExecutionProvider", 2, False, False]
    fingerprint = early_hint._fingerprint(str(models), str(models / "m"), key[0], [], early_hint._environment(),
                                          sessions.available_providers())
    (models / "m" / ".exports" / early_hint.HINT_FILE).write_text(json.dumps(
        {"format": early_hint._FORMAT, "hints": {"m": [{"names": [], "key": key, "fingerprint": fingerprint}]}}))
    assert fingerprint is not None and not early_hint.start("m")
    sessions.discard_early()
    assert opened == []
