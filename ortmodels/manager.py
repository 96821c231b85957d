"""`ModelManager`: one process-wide, thread-safe owner of every loaded model."""

from __future__ import annotations

import logging
import threading
from typing import Any

from .base import BaseEmbeddingModel, BaseLLMModel
from .config import Settings, load_settings
from .loader import BaseModel, build_model
from .names import validate_model_name
from .store import ModelInfo, ModelStore

logger = logging.getLogger(__name__)

_CacheKey = tuple[str, str, Any]


class ModelManager:
    """Lists the models in ``LOCAL_MODELS_DIR``, loads them on demand and caches them.

    ``ModelManager()`` returns the same object every time. Two threads asking for the
    same model at once load it once: each cache entry has its own lock, so loading one
    model never blocks using another.
    """

    _instance: ModelManager | None = None
    _instance_lock = threading.Lock()

    def __new__(cls) -> ModelManager:
        with cls._instance_lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._lock = threading.Lock()
                instance._models: dict[_CacheKey, BaseModel] = {}
                instance._loading: dict[_CacheKey, threading.Lock] = {}
                instance._generation = 0  # bumped by unload/configure: a load begun before is not cached
                instance._apply(load_settings())
                cls._instance = instance
            return cls._instance

    def _apply(self, settings: Settings) -> None:
        self._settings = settings
        self._store = ModelStore(settings.local_models_dir)

    # -- configuration ------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def store(self) -> ModelStore:
        return self._store

    def configure(self, settings: Settings | None = None) -> None:
        """Unload everything and take new settings (re-read from the environment if ``None``)."""
        self.unload_all()
        self._apply(settings or load_settings())

    # -- listing ------------------------------------------------------------------------------

    def list_available_models(self) -> list[ModelInfo]:
        """Every model in the models folder, exported or not."""
        return self._store.list()

    def get_model_info(self, name: str) -> ModelInfo:
        return self._store.info(name)

    def loaded_models(self) -> list[str]:
        with self._lock:
            return sorted({key[1] for key in self._models})

    # -- loading ------------------------------------------------------------------------------

    def get_embedding_model(
        self, name: str | None = None, model_class: type[BaseEmbeddingModel] | None = None
    ) -> BaseEmbeddingModel:
        """A loaded embedding model; ``name`` defaults to ``DEFAULT_EMBEDDING_MODEL``."""
        model = self._get("embedding", name or self._settings.default_embedding_model, model_class)
        assert isinstance(model, BaseEmbeddingModel)
        return model

    def get_chat_model(
        self, name: str | None = None, model_class: type[BaseLLMModel] | None = None
    ) -> BaseLLMModel:
        """A loaded chat model; ``name`` defaults to ``DEFAULT_CHAT_MODEL``."""
        model = self._get("chat", name or self._settings.default_chat_model, model_class)
        assert isinstance(model, BaseLLMModel)
        return model

    def _get(self, kind: str, name: str, model_class: type | None) -> BaseModel:
        validate_model_name(name)
        key: _CacheKey = (kind, name, model_class)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                return model
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # only callers of this very model wait here
            with self._lock:
                model = self._models.get(key)
                generation = self._generation
                store, settings = self._store, self._settings
            if model is None:
                model = build_model(store, settings, kind, name, model_class)  # type: ignore[arg-type]
                with self._lock:
                    if generation == self._generation:
                        self._models[key] = model
                logger.info("Loaded %s model %s", kind, name)
            return model

    # -- unloading ----------------------------------------------------------------------------

    def unload(self, name: str) -> bool:
        """Unload every cached instance of ``name``; ``True`` if one was loaded."""
        with self._lock:
            self._generation += 1
            keys = [key for key in self._models if key[1] == name]
            models = [self._models.pop(key) for key in keys]
        for model in models:
            model.unload()
        return bool(models)

    def unload_all(self) -> None:
        with self._lock:
            self._generation += 1
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.unload()
