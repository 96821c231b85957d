"""ortmodels: local chat and embedding models on ONNX Runtime, as LangChain objects.

Importing this package loads neither torch, transformers nor optimum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import BaseEmbeddingModel, BaseLLMModel
from .config import Settings, load_settings
from .errors import OrtModelsError
from .manager import ModelManager
from .store import ModelInfo, ModelStore

if TYPE_CHECKING:
    from .runtime.chat import OnnxChatModel
    from .runtime.embeddings import OnnxEmbeddingModel

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The runtime classes pull in onnxruntime: import them on first use only.
    if name == "OnnxEmbeddingModel":
        from .runtime.embeddings import OnnxEmbeddingModel

        return OnnxEmbeddingModel
    if name == "OnnxChatModel":
        from .runtime.chat import OnnxChatModel

        return OnnxChatModel
    raise AttributeError(f"module 'ortmodels' has no attribute {name!r}")


__all__ = [
    "BaseEmbeddingModel",
    "BaseLLMModel",
    "ModelInfo",
    "ModelManager",
    "ModelStore",
    "OnnxChatModel",
    "OnnxEmbeddingModel",
    "OrtModelsError",
    "Settings",
    "load_settings",
]
