"""A model is opened once: a first load reads its manifest once, chooses its variant once and
builds no second `ModelStore`; the memory estimate and the load read the same choice; the
server's way to a model (`get_runtime`) and LangChain's (`get_chat_model`) share one life cycle."""

from __future__ import annotations

from typing import Any

import pytest

from ortmodels import ModelManager
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.runtime.chat_runtime import ChatRuntime
from ortmodels.store import catalog
from ortmodels.store.manifest import Manifest

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("kind", "name"), [("embedding", EMBEDDING_SAMPLE), ("chat", CHAT_SAMPLE)])
def test_a_first_load_reads_the_manifest_once_and_chooses_once(kind: str, name: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_MEMORY_BUDGET", "100GB")  # so the manager estimates before it loads
    manager = ModelManager()
    counts = {"manifest": 0, "choice": 0, "store": 0}
    validate, select, make_store = Manifest.model_validate, catalog.ModelInfo.variant_for, catalog.ModelStore.__init__

    def counted_validate(cls: Any, *args: Any, **kwargs: Any) -> Manifest:
        counts["manifest"] += 1
        return validate(*args, **kwargs)

    def counted_select(*args: Any, **kwargs: Any) -> str:
        counts["choice"] += 1
        return select(*args, **kwargs)

    def counted_store(self: Any, *args: Any, **kwargs: Any) -> None:
        counts["store"] += 1
        make_store(self, *args, **kwargs)

    monkeypatch.setattr(Manifest, "model_validate", classmethod(counted_validate))
    monkeypatch.setattr(catalog.ModelInfo, "variant_for", counted_select)
    monkeypatch.setattr(catalog.ModelStore, "__init__", counted_store)
    runtime = manager.get_runtime(kind, name)
    assert runtime.is_loaded
    assert counts == {"manifest": 1, "choice": 1, "store": 0}
    assert manager.loaded()[0].memory_bytes >= runtime.life_cycle.last_memory_bytes > 0
    runtime.unload()
    runtime.load()  # a later load chooses again, once: a new export may have been made meanwhile
    assert counts == {"manifest": 2, "choice": 2, "store": 0}


def test_the_langchain_face_and_the_runtime_share_one_life_cycle() -> None:
    manager = ModelManager()
    runtime = manager.get_runtime("chat", CHAT_SAMPLE)
    chat = manager.get_chat_model(CHAT_SAMPLE)
    assert isinstance(runtime, ChatRuntime) and isinstance(chat, OnnxChatModel)
    assert chat.runtime is runtime and chat.life_cycle is runtime.life_cycle
    assert manager.get_chat_model(CHAT_SAMPLE, OnnxChatModel) is chat  # ortmodels' class named: the same object
    chat.unload()
    assert not runtime.is_loaded
    assert chat.invoke("Hi", max_tokens=2).content and runtime.is_loaded  # loaded again, for both
    assert chat.loaded_variant == runtime.loaded_variant == runtime.variant
    assert [row.model_class for row in manager.loaded()] == ["OnnxChatModel"]
