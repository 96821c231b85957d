"""Which class builds a model: a user's class registered once for a model name or architecture.

``manager.register(MyChat, name="my-model")`` (or ``architecture="LlamaForCausalLM"``), or a
package's entry point in the group ``ortmodels.models`` (``my-model = "pkg.mod:MyChat"``;
``"architecture:LlamaForCausalLM" = ...`` for an architecture), so ``get_chat_model("my-model")``
builds the user's class without naming it at every call. A name wins over an architecture.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib import metadata

from .errors import ModelKindError
from .kinds import KINDS, load

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ortmodels.models"
_ARCHITECTURE = "architecture:"


class ModelRegistry:
    """Model classes by (kind, model name) and (kind, architecture); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plugins_lock = threading.Lock()
        self._by_name: dict[tuple[str, str], type] = {}
        self._by_architecture: dict[tuple[str, str], type] = {}
        self._entry_points_read = False

    def register(self, model_class: type, *, name: str | None = None, architecture: str | None = None) -> None:
        """Build models of ``name`` (or of ``architecture``) with ``model_class`` from now on."""
        kind = _kind_of(model_class)
        if (name is None) == (architecture is None):
            raise ValueError("register() takes exactly one of name= or architecture=.")
        with self._lock:
            if name is not None:
                from .store.names import validate_model_name

                self._by_name[(kind, validate_model_name(name))] = model_class
            else:
                self._by_architecture[(kind, str(architecture))] = model_class

    def unregister(self, *, name: str | None = None, architecture: str | None = None) -> None:
        with self._lock:
            for kind in KINDS:
                self._by_name.pop((kind, name or ""), None)
                self._by_architecture.pop((kind, architecture or ""), None)

    def lookup(self, kind: str, name: str, architecture: Callable[[], str | None]) -> type | None:
        """The class registered for ``name``, else for the model's architecture; ``None``: ortmodels'
        own. ``architecture()`` reads the store, so it is asked only when a class is registered
        for some architecture of this kind (not on every ``get_chat_model``)."""
        self._read_entry_points()
        with self._lock:
            found = self._by_name.get((kind, name))
            by_architecture = any(k == kind for k, _ in self._by_architecture)
            other = next(((k, c) for (k, n), c in self._by_name.items() if n == name and k != kind), None)
        if found is None and other is not None:  # not "unknown": it is known, as another kind
            raise ModelKindError(f"Model {name!r} is registered with the {other[0]} class {other[1].__qualname__}, "
                                 f"not as a {kind} model: ask for it as the {other[0]} model it is.")
        if found is not None or not by_architecture:
            return found
        wanted = architecture()
        with self._lock:
            return self._by_architecture.get((kind, wanted)) if wanted else None

    def _read_entry_points(self) -> None:
        """Plug-ins' classes, once, before the first lookup; a class registered in code wins."""
        with self._plugins_lock:
            if self._entry_points_read:
                return
            for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    model_class = entry.load()
                    kind = _kind_of(model_class)
                    with self._lock:
                        if entry.name.startswith(_ARCHITECTURE):
                            self._by_architecture.setdefault((kind, entry.name[len(_ARCHITECTURE):]), model_class)
                        else:
                            self._by_name.setdefault((kind, entry.name), model_class)
                except Exception as exc:  # a broken plug-in must not break every other model
                    logger.warning("Skipping entry point %s = %s: %s", entry.name, entry.value, exc)
            self._entry_points_read = True


def _kind_of(model_class: type) -> str:
    for kind, spec in KINDS.items():
        if isinstance(model_class, type) and issubclass(model_class, load(spec.base)):
            return kind
    raise ModelKindError(
        f"Only subclasses of ortmodels.BaseLLMModel, BaseEmbeddingModel or BaseRerankModel can be "
        f"registered, not {model_class!r}."
    )
