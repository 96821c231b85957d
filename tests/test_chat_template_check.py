"""A chat checkpoint without a chat template: listed as such, warned about before an export, and
usable once a template is added to its folder, without a re-export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from ortmodels import ModelManager
from ortmodels.errors import ModelFileError
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.store import ModelStore
from ortmodels.store.versions import active_version

from .conftest import CHAT_SAMPLE

pytestmark = pytest.mark.slow


@pytest.fixture
def templateless(samples_dir: Path, tmp_path: Path) -> Path:
    """The chat sample's int4 export, with every copy of its chat template removed."""
    source = samples_dir / CHAT_SAMPLE
    target = tmp_path / "models" / CHAT_SAMPLE
    version = str(active_version(source))
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(
        ".exports", "model.safetensors", "chat_template.jinja"))
    shutil.copytree(source / ".exports" / version, target / ".exports" / version,
                    ignore=shutil.ignore_patterns("fp32", "fp16", "int8", "chat_template.jinja", ".prepacked"))
    import json

    for config in target.rglob("tokenizer_config.json"):
        data = json.loads(config.read_text())
        data.pop("chat_template", None)
        config.write_text(json.dumps(data))
    manifest = target / ".exports" / version / "manifest.json"
    data = json.loads(manifest.read_text())
    data["variants"] = {"int4": data["variants"]["int4"]}
    manifest.write_text(json.dumps(data))
    return target


def test_listed_as_chat_without_a_template(templateless: Path) -> None:
    info = ModelStore(templateless.parent).info(CHAT_SAMPLE)
    assert info.kind == "chat" and info.has_chat_template is False
    assert info.kind_label == "chat (no template)" and info.to_dict()["chat_template"] is False


def test_chat_says_where_the_template_goes_and_reads_one_added_later(templateless: Path, samples_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(templateless.parent))
    monkeypatch.setenv("MODEL_VERIFY_FILES", "false")  # the test edited tokenizer_config.json
    manager = ModelManager()
    manager.configure()
    chat = manager.get_chat_model(CHAT_SAMPLE)
    with pytest.raises(ModelFileError, match=f"No chat template.*{templateless}/chat_template.jinja.*next to config.json"):
        chat.invoke("Capital of France?")
    assert isinstance(chat, OnnxChatModel)
    manager.unload_all()
    shutil.copy(samples_dir / CHAT_SAMPLE / "chat_template.jinja", templateless / "chat_template.jinja")
    assert ModelStore(templateless.parent).info(CHAT_SAMPLE).has_chat_template is True
    reply = manager.get_chat_model(CHAT_SAMPLE).invoke([HumanMessage("What is the capital of France?")], max_tokens=12)
    assert "Paris" in reply.content
