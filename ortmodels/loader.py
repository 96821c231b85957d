"""Turn a model name into a ready model object of the right class."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings
from .errors import ModelKindError
from .kinds import kind_spec, load
from .store import ModelStore

if TYPE_CHECKING:
    from .base import BaseEmbeddingModel, BaseLLMModel, BaseRerankModel
    from .store import ModelKind

    BaseModel = BaseEmbeddingModel | BaseLLMModel | BaseRerankModel

logger = logging.getLogger(__name__)


def default_class(kind: ModelKind) -> type:
    """ortmodels' own ONNX class for a kind of model (imported only when first needed)."""
    return load(kind_spec(kind).default_class)


def check_class(kind: ModelKind, model_class: type) -> None:
    base = load(kind_spec(kind).base)
    if not (isinstance(model_class, type) and issubclass(model_class, base)):
        raise ModelKindError(
            f"model_class for a {kind} model must be a subclass of ortmodels.{base.__name__}, "
            f"not {model_class!r}."
        )


def construct_model(
    store: ModelStore,
    settings: Settings,
    kind: ModelKind,
    name: str,
    model_class: type | None,
    version: str | None = None,
    dtype: str | None = None,
) -> BaseModel:
    """Construct ``name`` as ``model_class`` (ortmodels' own class when ``None``), not loaded yet.

    ortmodels' classes need the model (and ``version``, if given) in the store, and are given
    the manager's settings, so ``configure(Settings(...))`` reaches threads and file checks; a
    user's class gets the folder the name maps to even if it does not exist yet, since it
    may load from elsewhere.
    """
    extra = {}
    if model_class is None:
        path: Path = store.require(name, kind, version).path
        model_class = default_class(kind)
        extra["settings"] = settings
    else:
        check_class(kind, model_class)
        path = store.model_dir(name)
    model = model_class(
        model_name=name,
        model_path=path,
        device=settings.model_device,
        dtype=dtype or settings.model_dtype,
        **extra,
    )
    model.version = version
    return model


def estimate_memory(
    store: ModelStore, settings: Settings, kind: ModelKind, name: str,
    model_class: type | None, version: str | None = None, dtype: str | None = None,
) -> int:
    """Bytes the variant that would be loaded holds, to make room before loading; 0 if unknown."""
    if model_class is not None:
        return 0
    try:
        from .engine.session import resolve_device
        from .precision import select_variant

        info = store.require(name, kind, version)
        device = resolve_device(settings.model_device)
        variant = select_variant(dtype or settings.model_dtype, list(info.variants), kind, device,
                                 failed=info.failed_variants())
        return info.variants[variant].size
    except Exception:  # the load itself will report whatever is wrong, with its own message
        return 0
