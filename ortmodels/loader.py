"""Turn a model name into a ready model object of the right class."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .base import BaseEmbeddingModel, BaseLLMModel
from .config import Settings
from .errors import ModelKindError
from .store import ModelStore

if TYPE_CHECKING:
    from .store import ModelKind

logger = logging.getLogger(__name__)

BaseModel = BaseEmbeddingModel | BaseLLMModel

_BASES: dict[str, type] = {"embedding": BaseEmbeddingModel, "chat": BaseLLMModel}


def default_class(kind: ModelKind) -> type:
    """ortmodels' own ONNX class for a kind of model (imported only when first needed)."""
    if kind == "embedding":
        from .runtime.embeddings import OnnxEmbeddingModel

        return OnnxEmbeddingModel
    if kind == "chat":
        from .runtime.chat import OnnxChatModel

        return OnnxChatModel
    raise ModelKindError(
        f"ortmodels has no built-in ONNX runtime for {kind} models yet; pass your own "
        f"{_BASES[kind].__name__} subclass as model_class."
    )


def check_class(kind: ModelKind, model_class: type) -> None:
    base = _BASES[kind]
    if not (isinstance(model_class, type) and issubclass(model_class, base)):
        raise ModelKindError(
            f"model_class for a {kind} model must be a subclass of ortmodels.{base.__name__}, "
            f"not {model_class!r}."
        )


def build_model(
    store: ModelStore,
    settings: Settings,
    kind: ModelKind,
    name: str,
    model_class: type | None,
) -> BaseModel:
    """Construct and load ``name`` as ``model_class`` (ortmodels' own class when ``None``).

    ortmodels' classes need the model in the store; a user's class gets the folder the
    name maps to even if it does not exist yet, since it may load from elsewhere.
    """
    if model_class is None:
        path: Path = store.require(name, kind).path
        model_class = default_class(kind)
    else:
        check_class(kind, model_class)
        path = store.model_dir(name)
    model = model_class(
        model_name=name,
        model_path=path,
        device=settings.model_device,
        dtype=settings.model_dtype,
    )
    model.load()
    return model
