"""Choosing the class and the precision per model: the registry, ``dtype=`` and ``name:tag``;
and settings given to ``configure`` reaching the models the manager builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from ortmodels import BaseEmbeddingModel, ModelManager
from ortmodels.config import load_settings
from ortmodels.errors import (
    ConfigurationError,
    InvalidModelNameError,
    ModelIntegrityError,
    ModelKindError,
)
from ortmodels.store.names import split_tag
from ortmodels.store.versions import active_version

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE
from .test_call_guard import SlowEcho


class Lengths(BaseEmbeddingModel):
    """A user's embedding model: the vector is the text's length."""

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t))] for t in texts]


def test_tags_split_into_name_and_precision() -> None:
    assert split_tag("smollm2-135m-instruct:int8") == ("smollm2-135m-instruct", "int8")
    assert split_tag("m:float32") == ("m", "fp32")
    assert split_tag("m", "float16") == ("m", "fp16")
    assert split_tag("m") == ("m", None)
    # auto asks for none (MODEL_DTYPE's choice): it was refused as an "Unknown precision 'auto'" that listed auto
    assert split_tag("m:auto") == split_tag("m", "AUTO") == split_tag("m:auto", "auto") == ("m", None)
    assert split_tag("m:auto", "int8") == split_tag("m:int8", "auto") == ("m", "int8")
    with pytest.raises(ConfigurationError, match="Unknown precision 'int3'"):
        split_tag("m:int3")
    with pytest.raises(InvalidModelNameError, match="disagree"):
        split_tag("m:int8", "int4")
    with pytest.raises(InvalidModelNameError):
        split_tag("../m:int8")


@pytest.mark.slow
def test_each_precision_is_its_own_cached_instance() -> None:
    manager = ModelManager()
    int8 = manager.get_chat_model(f"{CHAT_SAMPLE}:int8")
    int4 = manager.get_chat_model(CHAT_SAMPLE, dtype="int4")
    assert (int8.loaded_variant, int4.loaded_variant) == ("int8", "int4")
    assert manager.get_chat_model(CHAT_SAMPLE, dtype="int8") is int8
    assert manager.get_chat_model(CHAT_SAMPLE, dtype="auto") is manager.get_chat_model(CHAT_SAMPLE)
    embeddings = manager.get_embedding_model(f"{EMBEDDING_SAMPLE}:int8")
    assert embeddings.loaded_variant == "int8"
    assert {(row.name, row.variant) for row in manager.loaded()} >= {
        (CHAT_SAMPLE, "int8"), (CHAT_SAMPLE, "int4"), (EMBEDDING_SAMPLE, "int8")}


def test_a_registered_class_builds_the_model_by_name() -> None:
    manager = ModelManager()
    manager.register(SlowEcho, name="echo-bot")
    chat = manager.get_chat_model("echo-bot")
    assert isinstance(chat, SlowEcho)
    assert chat.invoke("hello there").content == "hello there"
    assert manager.get_chat_model("echo-bot") is chat
    manager.register(Lengths, name="lengths")
    assert manager.get_embedding_model("lengths").embed_query("four") == [4.0]
    with pytest.raises(ModelKindError, match="'lengths' is registered with the embedding class Lengths, not as a "
                                             "chat model"):  # known, as another kind: not "unknown"
        manager.get_chat_model("lengths")


@pytest.mark.slow
def test_a_class_registered_for_an_architecture_builds_every_model_of_it() -> None:
    manager = ModelManager()
    manager.register(Lengths, architecture="BertModel")  # the embedding sample's architecture
    model = manager.get_embedding_model(EMBEDDING_SAMPLE)
    assert isinstance(model, Lengths)
    assert model.model_path == manager.store.model_dir(EMBEDDING_SAMPLE)
    assert model.embed_documents(["ab", "abc"]) == [[2.0], [3.0]]


def test_only_model_classes_can_be_registered() -> None:
    with pytest.raises(ModelKindError, match="Only subclasses of ortmodels.BaseLLMModel"):
        ModelManager().register(dict, name="x")
    with pytest.raises(ValueError, match="exactly one of name= or architecture="):
        ModelManager().register(Lengths)


@pytest.mark.slow
def test_configure_settings_reach_the_models(copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``configure(Settings(...))`` wins over the environment: models no longer re-read it."""
    variant = copied_embedding_model / ".exports" / str(active_version(copied_embedding_model)) / "fp32"
    with open(variant / "vocab.txt", "a") as handle:
        handle.write("changed\n")
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(copied_embedding_model.parent))
    manager = ModelManager()
    manager.configure()
    with pytest.raises(ModelIntegrityError, match="vocab.txt"):
        manager.get_embedding_model(EMBEDDING_SAMPLE)
    manager.configure(load_settings(model_verify_files=False))  # the environment still says true
    model = manager.get_embedding_model(EMBEDDING_SAMPLE)
    assert model.embed_query("checks off, as configured")
