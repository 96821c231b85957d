"""Which prompt a text is embedded with, and how many of its dimensions are kept.

The rules are sentence-transformers' (5.x), so an exported model gives the vectors its
authors measured. A `SentenceTransformer` always has a ``query`` and a ``document`` prompt
(``""`` unless ``config_sentence_transformers.json`` sets them), so: ``encode_query`` puts
the ``query`` prompt before the text, ``encode_document`` the ``document`` one (its
fall-backs ``passage`` and ``corpus`` are never reached, as in sentence-transformers: a
model's ``passage`` prompt is used when asked for by name), and a plain ``encode`` the
``default_prompt_name``'s prompt or nothing; a prompt asked for by name wins over the role.
Fewer dimensions than the model's are the first ones, renormalised when the model
normalises (as TEI, Infinity and Ollama answer ``dimensions``; sentence-transformers'
``truncate_dim`` with ``normalize_embeddings``): allowed for a model whose card or config
declares Matryoshka training, or when the caller says it knows better. No LangChain here:
the server and Ray replicas use these rules too.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..engine.pooling import l2_normalize
from ..errors import EmbeddingOptionError
from ..store.manifest import EmbeddingSpec

InputType = Literal["query", "document"]
INPUT_TYPES: tuple[str, ...] = ("query", "document")
#: The prompt names each role takes, first found wins (sentence-transformers' encode_query / encode_document).
ROLE_PROMPTS: dict[str, tuple[str, ...]] = {"query": ("query",), "document": ("document", "passage", "corpus")}
#: The prompts every `SentenceTransformer` has before its config's are merged in (``_default_prompts``).
BUILT_IN_PROMPTS: dict[str, str] = {"query": "", "document": ""}


def model_prompts(spec: EmbeddingSpec) -> dict[str, str]:
    """The prompts a `SentenceTransformer` of this model would have: its config's over the built-in ones."""
    return {**BUILT_IN_PROMPTS, **spec.prompts}


def prompt_for(spec: EmbeddingSpec, model: str, input_type: str | None = None, prompt_name: str | None = None) -> str:
    """The text put before each input for this role or prompt name ("" for none)."""
    if input_type is not None and input_type not in ROLE_PROMPTS:
        raise EmbeddingOptionError(
            f"input_type must be 'query' or 'document', got {input_type!r:.40}.", "input_type")
    prompts = model_prompts(spec)
    if prompt_name is not None:
        if prompt_name not in prompts:
            known = ", ".join(repr(name) + ("" if text else " (empty)") for name, text in prompts.items())
            raise EmbeddingOptionError(
                f"{model} has no prompt named {prompt_name!r:.60}; its prompts: {known}. Give one of those, "
                "or leave the prompt name out: a query and a document get their role's prompt.", "prompt_name")
        return prompts[prompt_name]
    role = next((name for name in ROLE_PROMPTS.get(input_type or "", ()) if name in prompts), None)
    chosen = role if role is not None else spec.default_prompt_name
    return prompts.get(chosen, "") if chosen is not None else ""


def output_size(spec: EmbeddingSpec, model: str, dimensions: int | None, matryoshka: bool = False) -> int:
    """The length the vectors are cut to: ``dimensions`` if the model may be cut there, else an error
    that names the model's own size and the opt-in."""
    if dimensions is None or dimensions == spec.dimension:
        return spec.dimension
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions < spec.dimension:
        raise EmbeddingOptionError(
            f"{model} gives {spec.dimension} dimensions; dimensions must be a whole number from 1 to "
            f"{spec.dimension}, got {dimensions!r:.40}.", "dimensions")
    if spec.matryoshka is None and not matryoshka:
        raise EmbeddingOptionError(
            f"{model} gives {spec.dimension} dimensions and its card declares no Matryoshka training, so it "
            f"cannot give {dimensions}: its first {dimensions} numbers are not a trained embedding. Ask for "
            f"{spec.dimension}, or opt in with matryoshka=True (`--matryoshka` on the command line) if you know "
            "it was trained for truncation.",
            "dimensions")
    return dimensions


def truncate(vectors: np.ndarray, size: int, normalize: bool) -> np.ndarray:
    """The first ``size`` numbers of each vector, unit length again if the model normalises."""
    if size >= vectors.shape[1]:
        return vectors
    cut = np.ascontiguousarray(vectors[:, :size])
    return l2_normalize(cut) if normalize else cut
