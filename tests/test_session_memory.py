"""Session options that change memory, never tokens: checked on the real chat sample."""

from __future__ import annotations

import numpy as np
import pytest

from .engine_samples import QUESTIONS, chat_prompt, variant_folder

pytestmark = pytest.mark.slow


def _greedy(session, prompt: list[int], count: int) -> tuple[list[int], np.ndarray]:  # type: ignore[no-untyped-def]
    from ortmodels.engine.decoder import DecoderSession, DecoderState

    dec, state = DecoderSession(session), DecoderState()
    logits = first = dec.forward(state, prompt)
    tokens: list[int] = []
    for _ in range(count):
        tokens.append(int(np.argmax(logits)))
        logits = dec.forward(state, [tokens[-1]])
    return tokens, first


@pytest.mark.parametrize("dtype", ["int4", "fp32"])
def test_no_arena_gives_the_same_greedy_tokens_and_logits(dtype: str) -> None:
    """Chat sessions run without onnxruntime's CPU arena: same prefill logits, same tokens."""
    from ortmodels.engine.session import create_session

    model = variant_folder(dtype) / "model.onnx"
    with_arena = create_session(model, "cpu", 2, arena=True)
    without = create_session(model, "cpu", 2, arena=False)
    for question in QUESTIONS[:2]:
        prompt = chat_prompt(question)
        tokens, logits = _greedy(with_arena, prompt, 24)
        tokens_no_arena, logits_no_arena = _greedy(without, prompt, 24)
        assert tokens_no_arena == tokens
        np.testing.assert_array_equal(logits_no_arena, logits)


def test_chat_models_open_without_the_arena(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_variant asks for no arena for chat sessions only (embeddings keep theirs)."""
    from ortmodels.runtime import variant

    asked: list[bool] = []
    real = variant.create_session

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs.get("arena", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(variant, "create_session", spy)
    from ortmodels.config import load_settings
    from ortmodels.runtime.chat import OnnxChatModel

    folder = variant_folder("int4").parent.parent
    OnnxChatModel(model_path=folder, dtype="int4", device="cpu", settings=load_settings()).load().unload()
    assert asked == [False]


def test_a_load_hands_the_heap_it_freed_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading trims the heap once (what parsing the tokenizer's JSON and opening the session
    freed: 311 -> 283 MB resident for the int4 sample, measured by hand), and the model answers."""
    from langchain_core.messages import HumanMessage

    from ortmodels.lifecycle import loading
    from ortmodels.runtime.chat import OnnxChatModel

    calls: list[int] = []
    real = loading.trim_heap
    monkeypatch.setattr(loading, "trim_heap", lambda: calls.append(1) or real())
    chat = OnnxChatModel(model_path=variant_folder("int4").parent.parent, dtype="int4", device="cpu", max_tokens=8)
    chat.load()
    chat.load()  # already loaded: no second trim
    assert calls == [1]
    assert "Paris" in chat.invoke([HumanMessage("What is the capital of France?")]).content
    chat.unload()
