"""What a hostile model folder, a careless caller or a cancelled task can do, and how each is refused.

One test (or a few) per way in; each checks that the error names the problem and the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from ortmodels import ModelManager
from ortmodels.cli import _register, app
from ortmodels.engine.chat_template import ChatTemplate
from ortmodels.engine.prompt_tokens import PromptTokenizer
from ortmodels.errors import (
    ChatInputError,
    ChatTemplateError,
    EmbeddingInputError,
    InvalidModelNameError,
    InvalidVersionError,
    ModelBusyError,
    ModelFileError,
    ModelIntegrityError,
)
from ortmodels.monitoring import runtime_state
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.runtime.embeddings import OnnxEmbeddingModel
from ortmodels.store import ModelStore
from ortmodels.store.integrity import forget
from ortmodels.store.versions import active_version

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE, manager_on
from .test_call_guard import SlowEcho
from .waiting import DEADLINE_S, async_wait_until, join_all, wait_for_event, wait_until

# -- helpers -------------------------------------------------------------------------------------


def _use_store(monkeypatch: pytest.MonkeyPatch, root: Path, **env: str) -> ModelManager:
    return manager_on(monkeypatch, root, **env)


def _variant_dir(model_dir: Path, variant: str = "fp32") -> Path:
    return model_dir / ".exports" / str(active_version(model_dir)) / variant


def _edit_manifest(model_dir: Path, edit: Any) -> None:
    path = model_dir / ".exports" / str(active_version(model_dir)) / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _cli(*args: str) -> Any:
    _register()
    return CliRunner().invoke(app, list(args))


class SlowLoadingEcho(SlowEcho):
    """A chat model whose load, once ``gate`` is armed, waits for it: a call waiting on that load
    is cancelled while it certainly waits."""

    gate: ClassVar[threading.Event | None] = None
    loading: ClassVar[threading.Event] = threading.Event()

    def _load(self) -> None:
        gate = type(self).gate
        if gate is not None:
            type(self).loading.set()
            wait_for_event(gate, what="let the load end")


# -- 1. a cancelled async call ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
def test_a_call_cancelled_while_the_model_loads_does_not_hold_it(how: str) -> None:
    manager = ModelManager()
    model = manager.get_chat_model("echo", SlowLoadingEcho)
    model.unload()  # so the next call has to wait for a load
    gate = threading.Event()
    SlowLoadingEcho.loading.clear()
    SlowLoadingEcho.gate = gate

    async def call() -> None:
        if how == "ainvoke":
            await model.ainvoke("hi there")
        else:
            async for _ in model.astream("hi there"):
                pass

    async def cancel_then_call_again() -> str:
        waiting = asyncio.create_task(call())
        await async_wait_until(SlowLoadingEcho.loading.is_set, what="loading for the call")
        waiting.cancel()  # while its admission waits on the load
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        # the admission finishes in its thread once the load is done, and is undone at once
        return (await asyncio.wait_for(model.ainvoke("second call"), DEADLINE_S)).content

    try:
        assert asyncio.run(cancel_then_call_again()) == "second call"
    finally:
        SlowLoadingEcho.gate = None
    wait_until(lambda: model.active_calls == 0, what="the cancelled call undone")
    manager.unload("echo", timeout=5)  # would block for ever with a call counted for good
    assert not model.is_loaded


# -- 2. one odd folder does not break the store --------------------------------------------------


@pytest.fixture
def odd_store(copied_embedding_model: Path) -> Path:
    root = copied_embedding_model.parent
    odd = root / "my model (1)"
    odd.mkdir()
    (odd / "config.json").write_text('{"architectures": ["BertModel"]}')
    weird = root / "weird-config"
    weird.mkdir()
    (weird / "config.json").write_text(json.dumps({
        "architectures": "LlamaForCausalLM", "vocab_size": "big", "max_position_embeddings": [1],
        "hidden_size": True,
    }))
    return root


def test_a_folder_with_a_bad_name_is_skipped_and_named_once(odd_store: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    manager = _use_store(monkeypatch, odd_store)
    names = [info.name for info in manager.list_available_models()]
    assert names == [EMBEDDING_SAMPLE, "weird-config"]
    skipped = manager.store.skipped()
    assert list(skipped) == ["my model (1)"]
    assert "rename the folder, e.g. to 'my-model-1'" in skipped["my model (1)"]
    manager.list_available_models()
    assert sum("my model (1)" in r.getMessage() for r in caplog.records) == 1  # reported once
    assert manager.get_embedding_model(EMBEDDING_SAMPLE).embed_query("still works")


def test_config_values_of_the_wrong_type_are_ignored_not_fatal(odd_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(odd_store))
    info = ModelStore(odd_store).info("weird-config")
    assert (info.architecture, info.vocab_size, info.context_length, info.embedding_size) == (None, None, None, None)
    assert info.to_dict()["name"] == "weird-config"
    for args in (["list"], ["list", "--json"], ["info", "weird-config"], ["info", "weird-config", "--json"]):
        result = _cli(*args)
        assert result.exit_code == 0, (args, result.output)
    assert "weird-config" in _cli("list").output


def test_a_linked_model_folder_is_skipped_with_the_reason(copied_embedding_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(copied_embedding_model), elsewhere)
    copied_embedding_model.symlink_to(elsewhere, target_is_directory=True)
    store = ModelStore(copied_embedding_model.parent)
    assert store.names() == []
    assert "is a link to" in store.skipped()[EMBEDDING_SAMPLE]
    with pytest.raises(ModelFileError, match="move the folder into LOCAL_MODELS_DIR"):
        store.info(EMBEDDING_SAMPLE)


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidModelNameError, match="plain folder name"):
        ModelManager().get_embedding_model(EMBEDDING_SAMPLE + "\n")


# -- 3. the manifest is not trusted for paths ----------------------------------------------------


@pytest.mark.parametrize("edit, refused", [
    (lambda m: m["variants"]["fp32"].update(path="/tmp"), "variants.fp32.path"),
    (lambda m: m["variants"]["fp32"].update(path="../../.."), "variants.fp32.path"),
    (lambda m: m["variants"]["fp32"]["files"].update({"/etc/hostname": {"sha256": "0" * 64, "size": 1}}),
     "variants.fp32.files"),
    (lambda m: m["variants"]["fp32"]["files"].update({"../../x": {"sha256": "0" * 64, "size": 1}}),
     "variants.fp32.files"),
    (lambda m: m["embedding"].update(max_seq_length=-1), "embedding.max_seq_length"),
    (lambda m: m["variants"]["fp32"]["files"]["model.onnx"].update(sha256="zz"), "variants.fp32.files.model.onnx.sha256"),
])
def test_a_manifest_naming_paths_outside_its_version_is_refused(
    copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, refused: str
) -> None:
    _edit_manifest(copied_embedding_model, edit)
    manager = _use_store(monkeypatch, copied_embedding_model.parent, MODEL_DTYPE="float32")
    with pytest.raises(ModelFileError, match=f"Export manifest refused: {refused}.*re-run 'ortmodels export'"):
        manager.get_embedding_model(EMBEDDING_SAMPLE)


def test_a_link_or_device_inside_a_variant_is_refused(copied_embedding_model: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _variant_dir(copied_embedding_model)
    (folder / "vocab.txt").unlink()
    (folder / "vocab.txt").symlink_to("/dev/zero")
    manager = _use_store(monkeypatch, copied_embedding_model.parent, MODEL_DTYPE="float32")
    with pytest.raises(ModelFileError, match="A link in the export leads outside it"):
        manager.get_embedding_model(EMBEDDING_SAMPLE)
    (folder / "vocab.txt").unlink()
    os.mkfifo(folder / "vocab.txt")  # inside the folder, but hashing it would never end
    with pytest.raises(ModelIntegrityError, match="not a regular file"):
        manager.get_embedding_model(EMBEDDING_SAMPLE)


# -- 4. huge inputs are bounded before tokenizing -------------------------------------------------


class _RecordingTokenizer:
    """Wraps a tokenizer to record how much text it was given."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.longest = inner, 0

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.longest = max(self.longest, len(text))
        return self.inner.encode(text, *args, **kwargs)

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.longest = max([self.longest, *map(len, texts)])
        return self.inner.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.slow
def test_a_huge_text_to_embed_is_cut_before_tokenizing_with_the_same_vector() -> None:
    model = ModelManager().get_embedding_model(EMBEDDING_SAMPLE)
    assert isinstance(model, OnnxEmbeddingModel)
    sentence = "The quick brown fox jumps over the lazy dog. "
    reference = model.embed_query(sentence * 600)  # far past 256 tokens already
    recorder = _RecordingTokenizer(model.runner.tokenizer)
    model.runner.tokenizer = recorder
    assert model.embed_query(sentence * 250_000) == reference  # 11 MB
    assert 0 < recorder.longest <= model.runner.text_chars < 100_000  # 0: the recorder was not on the path


@pytest.mark.slow
@pytest.mark.parametrize("blank", [" ", "\n", " \t\u00a0"])
def test_a_long_run_of_blanks_before_a_text_does_not_hide_it(blank: str) -> None:
    """Blanks make no token: a cut by characters alone kept only blanks, and the vector was the
    empty text's (cos 0.03 to the text's); the cut reaches past them, and the model reads the text."""
    model = ModelManager().get_embedding_model(EMBEDDING_SAMPLE)
    assert isinstance(model, OnnxEmbeddingModel)
    text = "The cat sat on the mat."
    padded = blank * (model.runner.text_chars // len(blank) + 100) + text
    assert np.allclose(model.embed_query(padded), model.embed_query(text), atol=1e-5)
    assert np.allclose(model.embed_documents([padded, text])[0], model.embed_query(text), atol=1e-5)


@pytest.mark.slow
def test_a_conversation_of_many_short_messages_is_past_the_context_not_a_template_failure() -> None:
    """60,000 one-word messages (1.3 MB as a body): each counts with its markup, so it is the
    context's error naming the messages (it was the template's size bound, naming the template
    file), and ``truncate_prompt`` keeps the newest instead."""
    chat = OnnxChatModel(model_name=CHAT_SAMPLE, dtype="int4", device="cpu", max_tokens=2).load()
    messages = [HumanMessage("hi")] * 60_000
    with pytest.raises(ChatInputError, match="The conversation \\(its markup counted\\) has 1,560,000 characters") as caught:
        chat.invoke(messages)
    assert caught.value.param == "messages" and "chat_template" not in str(caught.value)  # type: ignore[attr-defined]
    room = 8100  # so the prompt kept is short to prefill; a grammar ends the answer at once
    reply = chat.invoke(messages, truncate_prompt=True, max_tokens=room, response_format={"type": "regex", "regex": "(yes|no)"})
    assert reply.usage_metadata is not None and 0 < reply.usage_metadata["input_tokens"] <= 8192 - room


@pytest.mark.slow
def test_a_huge_prompt_is_refused_before_tokenizing() -> None:
    chat = OnnxChatModel(model_name=CHAT_SAMPLE, dtype="int4", device="cpu", max_tokens=4).load()
    recorder = _RecordingTokenizer(chat.loaded.tokenizer)
    chat.loaded.prompt_tokens = PromptTokenizer(recorder)  # what the chat service tokenizes prompts with
    with pytest.raises(ChatInputError, match="10,000,024 characters.*truncate_prompt=True") as caught:
        chat.invoke("x" * 10_000_000)
    assert recorder.longest == 0
    import pickle

    from ortmodels.errors import ContextLengthError

    assert isinstance(caught.value, ContextLengthError) and caught.value.param == "messages"
    again = pickle.loads(pickle.dumps(caught.value))  # across processes (Ray), the same error, spelt the same
    assert (str(again), again.param, again.spelt("pass --truncate")) == (
        str(caught.value), "messages", caught.value.spelt("pass --truncate"))
    assert "or pass --truncate to drop the oldest text." in again.spelt("pass --truncate")
    # A small window to fill: the characters are still cut to the full context's bound before
    # tokenizing (`prompt_chars`), but the prefill is of 64 tokens, not of the sample's 8,192
    # (115 s of a CI run on a slow machine).
    chat.loaded.spec = chat.loaded.spec.model_copy(update={"context_length": 64})
    truncating = chat.model_copy(update={"truncate_prompt": True})
    answer = truncating.invoke([HumanMessage("y" * 10_000_000)])
    assert 0 < answer.usage_metadata["input_tokens"] <= 64 - chat.max_tokens
    assert 0 < recorder.longest <= chat.loaded.prompt_chars


# -- 5. chat templates are bounded in time and size ----------------------------------------------


@pytest.mark.parametrize("source, problem", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x", "ran for more than"),
    ("{% set r = range(100000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}x", "ran for more than"),
    ("{{ 'x' * 300000000 }}", "a repeated sequence would be 300,000,000 characters"),
    ("{{ 'x' | center(300000000) }}", "a number passed to a filter"),
    ("{% for i in range(100000) %}{{ messages[0].content * 100 }}{% endfor %}", "the rendered prompt would be"),
    ("{{ 9 ** 99999999 }}", "the power"),
    ("{% set ns = namespace(a='x') %}{% for i in range(40) %}{% set ns.a = ns.a + ns.a %}{% endfor %}x",
     "a joined sequence would be"),
    ("{% set ns = namespace(a='x') %}{% for i in range(40) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}x",
     "grew the process|ran for more than"),
    ("{{ '{:>50000000}'.format('a') }}", "a formatted field would be 50,000,000"),
])
def test_a_runaway_template_is_stopped_and_named(tmp_path: Path, source: str, problem: str) -> None:
    (tmp_path / "chat_template.jinja").write_text(source)
    template = ChatTemplate.from_folder(tmp_path)
    with pytest.raises(ChatTemplateError, match=problem) as caught:
        template.render([{"role": "user", "content": "hi"}], max_chars=1_000_000, seconds=0.5)
    assert str(tmp_path / "chat_template.jinja") in str(caught.value)


def test_a_template_that_renders_nothing_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{% endfor %}")
    with pytest.raises(ChatTemplateError, match="rendered an empty prompt.*reads 'messages'"):
        ChatTemplate.from_folder(tmp_path).render([{"role": "user", "content": "hi"}])


# -- 6. a rollback reaches an instance that is loading --------------------------------------------


class SlowOpeningEmbedding(OnnxEmbeddingModel):
    """Opens its variant, then waits for ``resume``: a rollback lands in between."""

    opened: ClassVar[threading.Event] = threading.Event()
    resume: ClassVar[threading.Event] = threading.Event()

    def _load(self) -> None:
        super()._load()
        type(self).opened.set()
        wait_for_event(type(self).resume, what="let the load end")


@pytest.mark.slow
def test_a_rollback_during_a_load_unloads_the_replaced_version(copied_embedding_model: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = copied_embedding_model
    old = str(active_version(model_dir))
    new = old[:-8] + "0" * 8
    shutil.copytree(model_dir / ".exports" / old, model_dir / ".exports" / new)
    manifest = model_dir / ".exports" / new / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": new}))
    manager = _use_store(monkeypatch, model_dir.parent, MODEL_DTYPE="float32")
    SlowOpeningEmbedding.opened.clear()
    SlowOpeningEmbedding.resume.clear()
    loader = threading.Thread(target=manager.get_embedding_model, args=(EMBEDDING_SAMPLE, SlowOpeningEmbedding))
    loader.start()
    wait_for_event(SlowOpeningEmbedding.opened, what="opened the old version")
    rollback = threading.Thread(target=manager.rollback, args=(EMBEDDING_SAMPLE, new))
    rollback.start()  # the old version is opened, the load is not finished
    wait_until(lambda: manager._switching[EMBEDDING_SAMPLE] > 0, what="started the rollback")
    # The rollback waits for the load (it holds the model's lock) before the link switches, so
    # nothing loaded from the old version can outlive the switch.
    assert loader.is_alive() and str(active_version(model_dir)) == old
    SlowOpeningEmbedding.resume.set()
    join_all([loader, rollback])
    model = manager.get_embedding_model(EMBEDDING_SAMPLE, SlowOpeningEmbedding)
    assert model.loaded_version == new


# -- 7. a stop string given as one string ----------------------------------------------------------


@pytest.mark.slow
def test_a_stop_string_is_one_string_not_its_characters() -> None:
    chat = OnnxChatModel(model_name=CHAT_SAMPLE, dtype="int4", device="cpu", max_tokens=24)
    full = chat.invoke("What is the capital of France?").content
    assert "Paris" in full
    cut = chat.invoke("What is the capital of France?", stop="Paris").content
    assert cut == full[: full.index("Paris")]  # not cut at the first 'a' of "capital"
    assert OnnxChatModel(model_name=CHAT_SAMPLE, stop="Paris").stop == ["Paris"]


# -- 8. the integrity stamp sees an edit that restored the mtime ---------------------------------


@pytest.mark.slow
def test_an_edit_in_place_with_the_mtime_restored_is_caught(copied_embedding_model: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    manager = _use_store(monkeypatch, copied_embedding_model.parent, MODEL_DTYPE="float32")
    manager.get_embedding_model(EMBEDDING_SAMPLE)  # verified and remembered, on disk too
    manager.unload_all()
    folder = _variant_dir(copied_embedding_model)
    target = folder / "vocab.txt"
    before = target.stat()
    data = bytearray(target.read_bytes())
    data[-2] = ord("Z") if data[-2] != ord("Z") else ord("Y")
    with open(target, "r+b") as handle:  # same inode, same size
        handle.write(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    forget(folder)  # as a fresh process: only the record on disk is left
    manager.configure()
    with pytest.raises(ModelIntegrityError, match="vocab.txt.*Re-run 'ortmodels export"):
        manager.get_embedding_model(EMBEDDING_SAMPLE)


# -- 9. ortmodels' own errors instead of raw ones ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("options, message", [
    ({"seed": -1}, "seed=-1: Input should be greater than or equal to 0"),
    ({"stop": [5]}, r"stop\[0\] is int 5; stop strings must be strings"),
    ({"temperature": float("inf")}, "temperature=inf: Input should be a finite number"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty=inf: Input should be a finite number"),
    ({"top_p": float("nan")}, "top_p=nan"),
    ({"max_token": 5}, "Unknown generation option: max_token. Options: max_tokens"),
])
def test_bad_generation_options_are_refused_before_generating(options: dict[str, Any], message: str) -> None:
    chat = ModelManager().get_chat_model(CHAT_SAMPLE)
    with pytest.raises(ChatInputError, match=message):
        chat.invoke("hi", **options)


@pytest.mark.slow
def test_lone_surrogates_are_refused_by_chat_and_embeddings() -> None:
    chat = ModelManager().get_chat_model(CHAT_SAMPLE)
    with pytest.raises(ChatInputError, match=r"Message 0 is not valid Unicode: '\\ud800' at character 3.*not a character .*Send UTF-8 text"):
        chat.invoke("hi \ud800")
    with pytest.raises(ChatInputError, match="stop"):
        chat.invoke("hi", stop=["\udfff"])
    embeddings = ModelManager().get_embedding_model(EMBEDDING_SAMPLE)
    with pytest.raises(EmbeddingInputError, match=r"Text 1 is not valid Unicode"):
        embeddings.embed_documents(["fine", "bad \ud800"])


@pytest.mark.parametrize("version", [123, "x" * 5000, "../other", "", "a b"])
def test_a_bad_version_id_is_refused_by_name(version: Any) -> None:
    with pytest.raises(InvalidVersionError, match="Invalid export version.*'ortmodels versions NAME'"):
        ModelManager().get_embedding_model(EMBEDDING_SAMPLE, version=version)


@pytest.mark.parametrize("keep", [1.5, "2", 0, True])
def test_a_bad_keep_for_prune_is_refused(keep: Any) -> None:
    with pytest.raises(InvalidVersionError, match="keep must be a whole number of versions"):
        ModelManager().prune(EMBEDDING_SAMPLE, keep=keep)


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", [
    (lambda m: m["embedding"].update(dimension=385), "dimension 385 does not match the graph's 384"),
    (lambda m: m["embedding"].update(pad_token_id=10**6), "pad_token_id 1000000 is outside"),
])
def test_manifest_values_that_do_not_fit_the_graph_are_refused_at_load(
    copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, message: str
) -> None:
    _edit_manifest(copied_embedding_model, edit)
    manager = _use_store(monkeypatch, copied_embedding_model.parent, MODEL_DTYPE="float32")
    with pytest.raises(ModelFileError, match=f"{message}.*Re-run 'ortmodels export'"):
        manager.get_embedding_model(EMBEDDING_SAMPLE)


@pytest.mark.slow
def test_a_tokenizer_larger_than_the_embedding_table_is_refused_at_load(
    copied_embedding_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _variant_dir(copied_embedding_model) / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    size = len(tokenizer["model"]["vocab"])
    tokenizer["added_tokens"].append({"id": size + 500, "content": "<far>", "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": True})
    path.write_text(json.dumps(tokenizer))
    manager = _use_store(monkeypatch, copied_embedding_model.parent, MODEL_DTYPE="float32", MODEL_VERIFY_FILES="false")
    with pytest.raises(ModelFileError, match="refuses the tokenizer's highest id.*tokenizer.json.*different checkpoints"):
        manager.get_embedding_model(EMBEDDING_SAMPLE)


# -- 10. ps trusts only live processes of this host; unload does not wait for ever ----------------


def test_ps_ignores_a_state_file_whose_pid_is_another_process(tmp_path: Path) -> None:
    runtime_state.write_state(tmp_path, [{"name": "m"}], [])
    mine = runtime_state.state_file(tmp_path)
    assert [s["pid"] for s in runtime_state.read_states(tmp_path)] == [os.getpid()]
    reused = json.loads(mine.read_text())
    reused.update(pid=1, started=-5)  # pid 1 is alive, but it is not the process that wrote this
    (mine.parent / "1.json").write_text(json.dumps(reused))
    foreign = {**json.loads(mine.read_text()), "pid": 2, "host": socket.gethostname() + "-other"}
    (mine.parent / "2.json").write_text(json.dumps(foreign))
    assert [s["pid"] for s in runtime_state.read_states(tmp_path)] == [os.getpid()]
    assert not (mine.parent / "1.json").exists()


def test_an_unread_stream_makes_unload_time_out_naming_it() -> None:
    manager = ModelManager()
    model = manager.get_chat_model("echo", SlowEcho)
    stream = model.stream("one two three")
    assert next(stream).content == "one "  # the stream is open and holds the model
    with pytest.raises(ModelBusyError, match=r"1 call\(s\) still hold it \(stream from thread 'MainThread'.*closed"):
        manager.unload("echo", timeout=0.3)
    assert model.invoke("others still get answers").content == "others still get answers"
    stream.close()
    manager.unload("echo", timeout=5)
    assert not model.is_loaded


def test_unload_timeout_setting_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_UNLOAD_TIMEOUT", "0.2")
    manager = ModelManager()
    manager.configure()
    model = manager.get_chat_model("echo", SlowEcho)
    stream = model.stream("one two")
    next(stream)
    with pytest.raises(ModelBusyError, match="within 0.2 s"):
        manager.unload_all()
    stream.close()

