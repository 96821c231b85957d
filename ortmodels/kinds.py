"""The kinds of model ortmodels knows, in one table: every place that differs by kind reads it.

Classes and exporters are named as ``"module:attribute"`` and imported only when asked for,
so reading this table imports neither LangChain nor the export tool chain.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .errors import ModelKindError


@dataclass(frozen=True)
class KindSpec:
    """What one kind of model is made of and how it is exported and picked."""

    name: str
    base: str
    """The interface a user's class must subclass."""
    default_class: str
    """ortmodels' own ONNX Runtime class for the kind."""
    exporter: str
    """The function that exports a checkpoint of the kind."""
    precisions: tuple[str, ...]
    """The variants an export makes."""
    auto_cpu: tuple[str, ...]
    """What ``MODEL_DTYPE=auto`` prefers on the CPU, best first."""
    default_setting: str
    """The `Settings` field that names the default model of the kind."""


KINDS: dict[str, KindSpec] = {
    "embedding": KindSpec(
        name="embedding",
        base="ortmodels.base:BaseEmbeddingModel",
        default_class="ortmodels.runtime.embeddings:OnnxEmbeddingModel",
        exporter="ortmodels.export.encoder.embedding:export_embedding",
        precisions=("fp32", "int8"),
        # fp32 on the CPU: int8 costs some quality, so it is picked by name, never silently.
        auto_cpu=("fp32", "int8"),
        default_setting="default_embedding_model",
    ),
    "reranker": KindSpec(
        name="reranker",
        base="ortmodels.base:BaseRerankModel",
        default_class="ortmodels.runtime.rerank:OnnxCrossEncoder",
        exporter="ortmodels.export.encoder.rerank:export_reranker",
        precisions=("fp32", "int8"),
        # As for embeddings: int8 is picked by name, its gate only bounds how far the order moves.
        auto_cpu=("fp32", "int8"),
        default_setting="default_rerank_model",
    ),
    "chat": KindSpec(
        name="chat",
        base="ortmodels.base:BaseLLMModel",
        default_class="ortmodels.runtime.chat:OnnxChatModel",
        exporter="ortmodels.export.decoder.exporter:export_decoder",
        precisions=("fp32", "fp16", "int8", "int4"),
        auto_cpu=("int4", "int8", "fp32"),
        default_setting="default_chat_model",
    ),
}


def kind_spec(kind: str) -> KindSpec:
    """The spec of ``kind``, or a `ModelKindError` that lists the kinds there are."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ModelKindError(
            f"ortmodels has no runtime for models of kind {kind!r}; kinds: {', '.join(KINDS)}. "
            "Pass your own BaseLLMModel, BaseEmbeddingModel or BaseRerankModel subclass as model_class."
        )
    return spec


def load(reference: str) -> Any:
    """Import ``"module:attribute"``."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def is_loaded_class(reference: str, candidate: object) -> bool:
    """Is ``candidate`` the class ``reference`` names? Imports nothing: a module not imported
    yet cannot hold the candidate."""
    import sys

    module, _, attribute = reference.partition(":")
    loaded = sys.modules.get(module)
    return loaded is not None and getattr(loaded, attribute, None) is candidate
