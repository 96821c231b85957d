"""ortmodels: local chat and embedding models on ONNX Runtime, as LangChain objects.

Importing this package loads neither torch, transformers nor optimum, and nothing heavy
at all: each public name is imported on first use (PEP 562), so ``import ortmodels`` and
``from ortmodels import ModelManager`` stay cheap; LangChain's chat-model machinery and
onnxruntime load when a model is first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lazy import lazy_attribute

if TYPE_CHECKING:
    from .base import BaseEmbeddingModel, BaseLLMModel, BaseRerankModel
    from .config import Settings, load_settings
    from .errors import OrtModelsError
    from .manager import ModelManager
    from .runtime.chat import OnnxChatModel
    from .runtime.embeddings import OnnxEmbeddingModel
    from .runtime.rerank import OnnxCrossEncoder, OnnxReranker
    from .store import ModelInfo, ModelStore

__version__ = "0.1.0"

_PUBLIC = {
    "BaseEmbeddingModel": ".base",
    "BaseLLMModel": ".base",
    "BaseRerankModel": ".base",
    "ModelInfo": ".store",
    "ModelManager": ".manager",
    "ModelStore": ".store",
    "OnnxChatModel": ".runtime.chat",
    "OnnxCrossEncoder": ".runtime.rerank",
    "OnnxEmbeddingModel": ".runtime.embeddings",
    "OnnxReranker": ".runtime.rerank",
    "OrtModelsError": ".errors",
    "Settings": ".config",
    "load_settings": ".config",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _PUBLIC)


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = sorted(_PUBLIC)
