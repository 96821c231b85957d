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
