"""examples/huggingface_chat.py: a user's BaseLLMModel subclass on transformers, through the manager.

The tiny random Llama checkpoint checks that the example's answers are exactly what
transformers' own ``generate`` gives (greedy), with the right token counts, streaming and
stop strings, and that the manager loads and unloads it; the slow test asks the real sample.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
)

from ortmodels import ModelManager
from ortmodels.errors import ChatInputError, MissingDependencyError

from .conftest import CHAT_SAMPLE, SAMPLES_DIR, load_example
from .tiny_decoders import build_tiny_decoder

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "huggingface_chat.py"
TINY = "tiny-llama"
NEW_TOKENS = 12
MESSAGES = [SystemMessage("You are a helpful assistant."), HumanMessage("What is the capital of France?")]


def _load_example():
    return load_example("ortmodels_example_huggingface_chat", EXAMPLE)


@pytest.fixture(scope="module")
def example():
    return _load_example()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_tiny_decoder(root / TINY, "llama")
    return root


@pytest.fixture
def manager(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> ModelManager:
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(tiny_root))
    monkeypatch.setenv("MODEL_DEVICE", "cpu")
    ModelManager._instance = None
    return ModelManager()


def _transformers_greedy(folder: Path, max_new_tokens: int) -> tuple[int, list[int], str]:
    """Prompt length, new token ids and their text, straight from transformers' ``generate``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    messages = [{"role": "system", "content": MESSAGES[0].content}, {"role": "user", "content": MESSAGES[1].content}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids.shape[-1]:].tolist()
    return ids.shape[-1], new, tokenizer.decode(new, skip_special_tokens=True)


def test_importing_the_example_loads_no_torch() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ex', {str(EXAMPLE)!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['ex'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_invoke_stream_and_unload_through_the_manager(example, manager: ModelManager, tiny_root: Path) -> None:
    chat = manager.get_chat_model(TINY, example.HuggingFaceChatModel)
    assert isinstance(chat, example.HuggingFaceChatModel)
    assert chat.is_loaded and chat.model_path == tiny_root / TINY
    assert manager.get_chat_model(TINY, example.HuggingFaceChatModel) is chat  # cached
    assert chat.memory_bytes() > 0

    prompt_len, new_ids, expected = _transformers_greedy(tiny_root / TINY, NEW_TOKENS)
    assert len(set(new_ids)) > 3, f"degenerate fixture: {new_ids}"

    reply = chat.invoke(MESSAGES, max_tokens=NEW_TOKENS, temperature=0)
    assert isinstance(reply, AIMessage)
    assert reply.content == expected
    usage = {"input_tokens": prompt_len, "output_tokens": len(new_ids), "total_tokens": prompt_len + len(new_ids)}
    assert dict(reply.usage_metadata) == usage
    assert reply.response_metadata["model_name"] == TINY

    chunks = list(chat.stream(MESSAGES, max_tokens=NEW_TOKENS, temperature=0))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(c.content for c in chunks) == expected
    assert chunks[-1].chunk_position == "last" and dict(chunks[-1].usage_metadata) == usage

    # A stop string cuts the answer before it, in invoke and in the stream alike.
    stop = expected[len(expected) // 2:len(expected) // 2 + 2]
    cut = expected[: expected.find(stop)]
    assert chat.invoke(MESSAGES, max_tokens=NEW_TOKENS, temperature=0, stop=[stop]).content == cut
    assert "".join(c.content for c in chat.stream(MESSAGES, max_tokens=NEW_TOKENS, temperature=0, stop=[stop])) == cut

    with pytest.raises(ChatInputError, match="top_p"):
        chat.invoke(MESSAGES, top_p=0.9)

    assert [m.name for m in manager.loaded()] == [TINY]
    manager.unload_all()
    assert not chat.is_loaded and chat._model is None and manager.loaded() == []
    assert chat.invoke(MESSAGES, max_tokens=NEW_TOKENS, temperature=0).content == expected  # loads again


def test_missing_transformers_says_what_to_install(example, tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    chat = example.HuggingFaceChatModel(model_name=TINY, model_path=tiny_root / TINY)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ortmodels\[export\]'"):
        chat.load()
    assert not chat.is_loaded


@pytest.mark.slow
def test_real_sample_answers_paris(example) -> None:
    if not (SAMPLES_DIR / CHAT_SAMPLE / "model.safetensors").is_file():
        pytest.fail(f"{SAMPLES_DIR / CHAT_SAMPLE} has no checkpoint: run 'ortmodels samples' (make test does).")
    manager = ModelManager()
    chat = manager.get_chat_model(CHAT_SAMPLE, example.HuggingFaceChatModel)
    reply = chat.invoke([SystemMessage("Be brief."), HumanMessage("What is the capital of France?")],
                        max_tokens=24, temperature=0)
    assert "Paris" in reply.content, reply.content
    assert reply.usage_metadata["output_tokens"] <= 24
    manager.unload_all()
    assert not chat.is_loaded
