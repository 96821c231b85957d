"""The real chat sample opened for engine tests: one decoder per precision, its tokenizer, prompts."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CHAT_SAMPLE, SAMPLES_DIR

EOS = (1, 2)  # <|im_start|>, <|im_end|> in the sample's manifest
QUESTIONS = (
    "What is the capital of France?",
    "Tell me about the history of Rome in detail, with dates and names.",
    "Write a haiku about snow.",
    "Count from one to ten.",
    "Say hi.",
    "Explain what a hash table is, briefly.",
)


def variant_folder(dtype: str) -> Path:
    folder = SAMPLES_DIR / CHAT_SAMPLE / "onnx" / dtype
    if not (folder / "model.onnx").is_file():
        pytest.skip(f"{folder} is missing: run 'make export-samples' first.")
    return folder


@cache
def decoder(dtype: str):  # type: ignore[no-untyped-def]
    from ortmodels.engine.decoder import DecoderSession
    from ortmodels.engine.session import create_session

    return DecoderSession(create_session(variant_folder(dtype) / "model.onnx", "cpu", 2))


@cache
def tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(variant_folder("fp32") / "tokenizer.json"))


def chat_prompt(question: str, system: str | None = None) -> list[int]:
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    text += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return tokenizer().encode(text, add_special_tokens=False).ids


def solo_greedy(dtype: str, prompt: list[int], count: int) -> list[int]:
    """Greedy tokens by the plain batch-1 loop over `DecoderSession.forward` (no engine)."""
    from ortmodels.engine.decoder import DecoderState

    dec, state = decoder(dtype), DecoderState()
    logits = dec.forward(state, prompt)
    tokens: list[int] = []
    for _ in range(count):
        tokens.append(int(np.argmax(logits)))
        logits = dec.forward(state, [tokens[-1]])
    return tokens
