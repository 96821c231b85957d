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
