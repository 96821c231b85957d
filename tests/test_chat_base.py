"""BaseLLMModel: a user's own chat class is built, loaded and cached by the manager."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from ortmodels import BaseLLMModel, ModelManager
from ortmodels.errors import ModelKindError


class ShoutingChat(BaseLLMModel):
    """The smallest useful subclass: only the model-specific part."""

    loads: int = 0

    def _load(self) -> None:
        self.loads += 1

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        reply = str(messages[-1].content).upper()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])

    @property
    def _llm_type(self) -> str:
        return "shouting"


def test_user_chat_class_through_the_manager() -> None:
    manager = ModelManager()
    chat = manager.get_chat_model("my-model", ShoutingChat)
    assert isinstance(chat, BaseChatModel) and isinstance(chat, ShoutingChat)
    assert chat.is_loaded and chat.loads == 1
    assert chat.model_name == "my-model"
    assert chat.model_path == Path(manager.settings.local_models_dir) / "my-model"
    reply = chat.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    assert isinstance(reply, AIMessage) and reply.content == "CAPITAL OF FRANCE?"
    assert manager.get_chat_model("my-model", ShoutingChat) is chat
    manager.unload_all()
    assert not chat.is_loaded


def test_load_is_idempotent() -> None:
    chat = ShoutingChat(model_name="x")
    chat.load().load()
    assert chat.loads == 1
    chat.unload()
    chat.load()
    assert chat.loads == 2


def test_embedding_model_as_chat_is_refused(samples_dir: Path) -> None:
    with pytest.raises(ModelKindError, match="of kind 'embedding', not 'chat'"):
        ModelManager().get_chat_model("all-minilm-l6-v2")
