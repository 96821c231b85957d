"""The chat prompts and the perplexity text every contender gets, built once by the parent.

A short chat (system message and a question, about 40 tokens after the template) whose
greedy answer runs far past 128 tokens in every precision, and a long one (about 1,000
tokens: standard-library docstrings to summarise) for time to first token on a long
prompt. Each prompt is handed to the workers as messages (for contenders that apply the
chat template and tokenize themselves: ortmodels, transformers, optimum), as the rendered
text, and as the token ids the checkpoint's own ``tokenizer.json`` gives for that text
(for the peers). The peers get ids because onnxruntime-genai 0.18's tokenizer
(onnxruntime-extensions) misreads this checkpoint's tokenizer (a GGUF conversion: byte
fallback plus byte level) and returns -1 for every space; feeding every peer the same ids
keeps the comparison about the engines. Their tokenization (a few milliseconds for 1,000
tokens) is then outside their time to first token, while ortmodels' is inside. The
parent checks that all contenders' token counts agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.corpus import stdlib_sentences

SYSTEM = "You are a helpful assistant."
QUESTION = "Explain in detail why the sky is blue during the day but turns red and orange at sunset."
LONG_INSTRUCTION = "Summarise the documentation above in three sentences."


def render(template_source: str, messages: list[dict[str, str]]) -> str:
    """Render a chat template as transformers does (trim_blocks, lstrip_blocks, generation prompt)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template_source).render(messages=messages, add_generation_prompt=True)


def _prompt(template: str, tokenizer: Any, messages: list[dict[str, str]]) -> dict[str, Any]:
    text = render(template, messages)
    return {"messages": messages, "text": text, "ids": tokenizer.encode(text, add_special_tokens=False).ids}


def build_prompts(model_dir: Path, long_tokens: int = 1000) -> dict[str, dict[str, Any]]:
    """``short`` and ``long`` prompts; ``long`` grows sentence by sentence up to ``long_tokens``."""
    from tokenizers import Tokenizer

    template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    short = _prompt(template, tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])

    def long_prompt(paragraphs: list[str]) -> dict[str, Any]:
        body = "\n\n".join(paragraphs) + "\n\n" + LONG_INSTRUCTION
        return _prompt(template, tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}])

    def count(prompt: dict[str, Any]) -> int:
        return len(prompt["ids"])

    paragraphs: list[str] = []
    best = long_prompt(paragraphs)
    for sentence in stdlib_sentences(400):
        candidate = long_prompt([*paragraphs, sentence])
        if count(candidate) > long_tokens:
            break
        paragraphs.append(sentence)
        best = candidate
    return {"short": short, "long": best}


def perplexity_ids(model_dir: Path, tokens: int = 1024) -> list[int]:
    """``tokens`` token ids of real text nobody here wrote: stdlib docstrings (from the 1,000th on,
    so they do not overlap the long prompt), tokenized by the checkpoint's tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = "\n\n".join(stdlib_sentences(2000)[1000:])
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return list(ids[:tokens])
