"""ModelManager: one instance, thread-safe caching, defaults, user classes, unloading."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ortmodels import BaseEmbeddingModel, ModelManager, OnnxChatModel, OnnxCrossEncoder
from ortmodels.errors import ConfigurationError, InvalidModelNameError, ModelKindError, UnknownModelError
from ortmodels.runtime.embeddings import OnnxEmbeddingModel

from .waiting import DEADLINE_S, join_all, wait_for_event


class CountingEmbeddings(BaseEmbeddingModel):
    """A user's own class: deterministic vectors, counts its loads."""

    loads = 0
    _count_lock = threading.Lock()

    def _load(self) -> None:
        with self._count_lock:
            type(self).loads += 1

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]


class CrowdedLoadEmbeddings(CountingEmbeddings):
    """Its load ends only once ``expected`` callers have asked for it: they all race the one load."""

    expected = 8
    callers = 0
    _crowd = threading.Condition()

    def load(self) -> CrowdedLoadEmbeddings:
        with self._crowd:
            type(self).callers += 1
            self._crowd.notify_all()
        return super().load()

    def _load(self) -> None:
        with self._crowd:
            if not self._crowd.wait_for(lambda: type(self).callers >= self.expected, timeout=DEADLINE_S):
                pytest.fail(f"only {type(self).callers} of {self.expected} callers came during the load")
        super()._load()


class UnloadedWhileLoadingEmbeddings(CountingEmbeddings):
    """Its load ends only once an unload of it was asked for: the unload lands during the load."""

    loading = threading.Event()
    unload_asked = threading.Event()

    def _load(self) -> None:
        type(self).loading.set()
        wait_for_event(type(self).unload_asked, what="asked to unload during the load")
        super()._load()

    def unload(self, timeout: float | None = None) -> None:
        type(self).unload_asked.set()  # the load may end now; this unload then waits for its lock
        super().unload(timeout)


def test_same_object_every_time() -> None:
    assert ModelManager() is ModelManager()
    results = []
    threads = [threading.Thread(target=lambda: results.append(ModelManager())) for _ in range(8)]
    for t in threads:
        t.start()
    join_all(threads)
    assert all(m is results[0] for m in results)


def test_list_available_models(samples_dir: Path) -> None:
    infos = {i.name: i for i in ModelManager().list_available_models()}
    assert infos["all-minilm-l6-v2"].kind == "embedding"
    assert infos["smollm2-135m-instruct"].kind == "chat"
    assert {"fp32", "int8"} <= set(infos["all-minilm-l6-v2"].variants)


@pytest.mark.slow
def test_default_embedding_model_and_cache(samples_dir: Path) -> None:
    manager = ModelManager()
    emb = manager.get_embedding_model()
    assert isinstance(emb, OnnxEmbeddingModel) and emb.model_name == "all-minilm-l6-v2"
    assert manager.get_embedding_model("all-minilm-l6-v2") is emb
    assert len(emb.embed_documents(["a", "b"])) == 2
    assert manager.loaded_models() == ["all-minilm-l6-v2"]


@pytest.mark.slow
def test_default_name_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch, samples_dir: Path) -> None:
    """A default that is not there names the setting it came from, as the way to fix it; a name
    given by the caller does not."""
    import pickle

    monkeypatch.setenv("DEFAULT_EMBEDDING_MODEL", "no-such-model")
    manager = ModelManager()
    with pytest.raises(UnknownModelError, match="all-minilm-l6-v2") as info:
        manager.get_embedding_model()
    assert "'no-such-model' (the default, from DEFAULT_EMBEDDING_MODEL)" in str(info.value)
    assert "Set DEFAULT_EMBEDDING_MODEL to an embedding model among them" in str(info.value)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)  # as a Ray replica sends it
    with pytest.raises(UnknownModelError) as named:
        manager.get_embedding_model("no-such-model")
    assert "DEFAULT_EMBEDDING_MODEL" not in str(named.value)


def test_a_missing_reranker_is_not_sent_to_the_samples(monkeypatch: pytest.MonkeyPatch, samples_dir: Path) -> None:
    """The samples have no reranker: a reranker that is not there is said to need a cross-encoder
    checkpoint exported, its default setting named as the other way out."""
    import pickle

    monkeypatch.setenv("DEFAULT_RERANK_MODEL", "no-such-model")
    manager = ModelManager()
    with pytest.raises(UnknownModelError, match=r"cross-encoder checkpoint .* 'ortmodels export no-such-model'") as info:
        manager.get_reranker("no-such-model")
    assert "ortmodels samples" not in str(info.value) and "DEFAULT_RERANK_MODEL" not in str(info.value)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)
    with pytest.raises(UnknownModelError, match=r"\(the default, from DEFAULT_RERANK_MODEL\).*or set "
                                                r"DEFAULT_RERANK_MODEL to a reranker you have"):
        manager.get_reranker()
    with pytest.raises(UnknownModelError, match="ortmodels samples"):  # the other kinds keep their hint
        manager.get_chat_model("no-such-model")


@pytest.mark.parametrize(("setting", "make"), [
    ("DEFAULT_CHAT_MODEL", lambda: OnnxChatModel().invoke("Hi")),
    ("DEFAULT_EMBEDDING_MODEL", lambda: OnnxEmbeddingModel().embed_query("Hi")),
    ("DEFAULT_RERANK_MODEL", lambda: OnnxCrossEncoder().rerank("q", ["d"])),
])
def test_a_model_made_without_the_manager_names_the_default_setting_too(
        monkeypatch: pytest.MonkeyPatch, samples_dir: Path, setting: str, make: Callable[[], object]) -> None:
    monkeypatch.setenv(setting, "no-such-model")
    with pytest.raises(UnknownModelError, match=rf"'no-such-model' \(the default, from {setting}\)"):
        make()


@pytest.mark.parametrize("model_class", [OnnxChatModel, OnnxEmbeddingModel, OnnxCrossEncoder])
def test_a_model_given_its_settings_finds_its_default_there(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_class: type) -> None:
    """The settings a model is given, not the environment's, name its default model and folder
    (the chat model read the environment's until the three kinds shared one rule)."""
    from ortmodels.config import load_settings

    monkeypatch.setenv("LOCAL_MODELS_DIR", str(tmp_path / "from-the-environment"))
    given = load_settings(local_models_dir=tmp_path / "given", default_chat_model="given-chat",
                          default_embedding_model="given-embeddings", default_rerank_model="given-reranker")
    model = model_class(settings=given)
    expected = {"OnnxChatModel": "given-chat", "OnnxEmbeddingModel": "given-embeddings",
                "OnnxCrossEncoder": "given-reranker"}[model_class.__name__]
    assert (model.model_name, model.model_path) == (expected, tmp_path / "given" / expected)


@pytest.mark.parametrize("model_class", [OnnxChatModel, OnnxEmbeddingModel])
def test_a_model_path_that_is_no_folder_is_said_as_such(tmp_path: Path, model_class: type) -> None:
    """Not 'unknown model ... run ortmodels samples', which is about the store, not a path given."""
    from ortmodels.errors import ModelFileError

    model = model_class(model_path=tmp_path / "nowhere")
    with pytest.raises(ModelFileError, match=r"No model folder: .*nowhere\. Give model_path the folder of an exported"):
        model.load()


@pytest.mark.slow
def test_dtype_setting_is_honoured(monkeypatch: pytest.MonkeyPatch, samples_dir: Path) -> None:
    monkeypatch.setenv("MODEL_DTYPE", "int8")
    assert ModelManager().get_embedding_model().variant == "int8"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_auto_and_the_precision_it_chose_are_one_instance(samples_dir: Path) -> None:
    """``name`` (MODEL_DTYPE=auto) and ``name:<what auto chose>`` share one loaded model, in
    either order: two copies would hold twice the memory and batch apart."""
    manager, name = ModelManager(), "all-minilm-l6-v2"
    auto = manager.get_embedding_model(name)
    chosen = auto.variant  # type: ignore[attr-defined]
    assert manager.get_embedding_model(f"{name}:{chosen}") is auto
    assert [r.variant for r in manager.loaded()] == [chosen]
    manager.configure()  # the cached objects forgotten: now the tag comes first
    tagged = manager.get_embedding_model(name, dtype=chosen)
    assert manager.get_embedding_model(name) is tagged
    other = "int8" if chosen != "int8" else "fp32"
    manager.get_embedding_model(f"{name}:{other}")
    assert sorted(r.variant for r in manager.loaded()) == sorted([chosen, other])
    assert manager.unload(f"{name}:{other}") is True  # a tag unloads that precision only
    assert [r.variant for r in manager.loaded()] == [chosen]


def test_bad_arguments_are_named(samples_dir: Path) -> None:
    manager = ModelManager()
    with pytest.raises(ConfigurationError, match="Unknown precision 4"):
        manager.get_embedding_model("all-minilm-l6-v2", dtype=4)  # type: ignore[arg-type]
    for bad in ("x", -1, float("nan"), True):
        with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
            manager.unload("all-minilm-l6-v2", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
            manager.unload_all(timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidModelNameError):
        manager.unload(None)  # type: ignore[arg-type]


def test_unknown_name_lists_known(samples_dir: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        ModelManager().get_embedding_model("nope")
    assert "all-minilm-l6-v2" in str(info.value) and "smollm2-135m-instruct" in str(info.value)


def test_traversal_name_refused() -> None:
    with pytest.raises(InvalidModelNameError):
        ModelManager().get_embedding_model("../models")


def test_chat_model_as_embeddings_is_refused(samples_dir: Path) -> None:
    with pytest.raises(ModelKindError, match="of kind 'chat'"):
        ModelManager().get_embedding_model("smollm2-135m-instruct")


def test_user_class_loads_once_under_concurrency() -> None:
    CrowdedLoadEmbeddings.loads = CrowdedLoadEmbeddings.callers = 0
    manager = ModelManager()
    models: list[BaseEmbeddingModel] = []
    threads = [threading.Thread(target=lambda: models.append(manager.get_embedding_model("my-model",
                                                                                        CrowdedLoadEmbeddings)))
               for _ in range(CrowdedLoadEmbeddings.expected)]
    for thread in threads:
        thread.start()
    join_all(threads)
    assert CrowdedLoadEmbeddings.loads == 1 and len(models) == CrowdedLoadEmbeddings.expected
    assert all(m is models[0] for m in models)
    assert models[0].is_loaded and models[0].model_path == manager.settings.local_models_dir / "my-model"
    assert models[0].embed_documents(["abc"]) == [[3.0, 1.0]]


def test_user_class_must_subclass_the_base() -> None:
    with pytest.raises(ModelKindError, match="subclass of ortmodels.BaseEmbeddingModel"):
        ModelManager().get_embedding_model("x", dict)  # type: ignore[arg-type]


def test_unload_and_unload_all() -> None:
    manager = ModelManager()
    first = manager.get_embedding_model("one", CountingEmbeddings)
    manager.get_embedding_model("two", CountingEmbeddings)
    assert manager.loaded_models() == ["one", "two"]
    assert manager.unload("one") is True and not first.is_loaded
    assert manager.unload("one") is False
    again = manager.get_embedding_model("one", CountingEmbeddings)
    assert again is first and again.is_loaded  # the same object, loaded again
    manager.unload_all()
    assert manager.loaded_models() == []


def test_configure_rereads_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    manager = ModelManager()
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(tmp_path))
    manager.configure()
    assert manager.list_available_models() == []
    assert manager.settings.local_models_dir == tmp_path


def test_unload_during_a_load_is_not_undone() -> None:
    UnloadedWhileLoadingEmbeddings.loading.clear()
    UnloadedWhileLoadingEmbeddings.unload_asked.clear()
    manager = ModelManager()
    loader = threading.Thread(target=lambda: manager.get_embedding_model("slow", UnloadedWhileLoadingEmbeddings))
    loader.start()
    wait_for_event(UnloadedWhileLoadingEmbeddings.loading, what="loading")
    manager.unload_all()  # the load is still running: it ends only once this unload was asked for
    join_all([loader])
    assert manager.loaded_models() == []  # the finished load was not put back into the cache


def test_naming_the_default_class_gives_the_same_object(samples_dir: Path) -> None:
    manager = ModelManager()
    assert manager.get_embedding_model(model_class=OnnxEmbeddingModel) is manager.get_embedding_model()
