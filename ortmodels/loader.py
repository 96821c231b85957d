"""Turn a model name into a ready model object of the right class."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import ModelKindError
from .kinds import kind_spec, load
from .lifecycle import Managed
from .store import ModelStore

if TYPE_CHECKING:
    from .store import ModelKind

logger = logging.getLogger(__name__)


#: ortmodels' LangChain-free runtime per kind, and its LangChain face's ``over(runtime)``; a kind
#: without one is built as its default class directly.
RUNTIMES = {
    "chat": "ortmodels.runtime.chat_runtime:ChatRuntime",
    "embedding": "ortmodels.runtime.embedding_runtime:EmbeddingRuntime",
    "reranker": "ortmodels.runtime.rerank_runtime:RerankRuntime",
}


def default_class(kind: ModelKind) -> type:
    """ortmodels' own ONNX class for a kind of model (imported only when first needed)."""
    return load(kind_spec(kind).default_class)


def adapter_of(kind: ModelKind, model: Any) -> Any:
    """The LangChain object for what `construct_model` built: ``model`` itself unless it is one
    of ortmodels' runtimes, whose LangChain face (sharing its life cycle) is made here."""
    if kind in RUNTIMES and isinstance(model, load(RUNTIMES[kind])):
        face: Any = default_class(kind)
        return face.over(model)
    return model


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
) -> Managed:
    """Construct ``name`` as ``model_class`` (``None``: ortmodels' own runtime, LangChain-free;
    `adapter_of` makes its LangChain face), not loaded yet.

    ortmodels' classes need the model (and ``version``, if given) in the store, and are given
    the manager's settings, so ``configure(Settings(...))`` reaches threads and file checks; a
    user's class gets the folder the name maps to even if it does not exist yet, since it
    may load from elsewhere.
    """
    if model_class is None:
        dtype = dtype or settings.model_dtype
        if kind in RUNTIMES:
            return _runtime(store, settings, kind, name, version, dtype)
        path: Path = store.require(name, kind, version).path
        model = default_class(kind)(model_name=name, model_path=path, device=settings.model_device, dtype=dtype,
                                    settings=settings)
    else:
        check_class(kind, model_class)
        model = model_class(model_name=name, model_path=store.model_dir(name), device=settings.model_device,
                            dtype=dtype or settings.model_dtype)
    model.version = version
    return model


def _runtime(store: ModelStore, settings: Settings, kind: ModelKind, name: str, version: str | None,
             dtype: str) -> Managed:
    """ortmodels' runtime for ``name``, with what its first load opens chosen here, once (the
    manifest read, the variant chosen, the version leased), and the chooser of later loads."""
    from .runtime.variant import choose_variant

    first = choose_variant(store, name, kind, version, settings.model_device, dtype, settings)
    try:
        runtime = load(RUNTIMES[kind])(name, model_path=first.info.path, device=settings.model_device, dtype=dtype,
                                       version=version, settings=settings)
        runtime.life_cycle.set_chooser(partial(runtime.choice, store), first)
    except BaseException:
        first.release()
        raise
    model: Managed = runtime
    return model
