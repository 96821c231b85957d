"""`ModelManager`: one process-wide, thread-safe owner of every loaded model."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .config import Settings, load_settings, setting_name
from .errors import ConfigurationError, ModelBusyError, OrtModelsError, UnknownModelError
from .kinds import is_loaded_class, kind_spec
from .lifecycle import Managed, cache, set_recorder
from .lifecycle.cache import CacheEntry
from .lifecycle.keep_alive import KeepAliveThread
from .lifecycle.memory import return_freed_memory
from .loader import adapter_of, construct_model
from .monitoring import stats
from .monitoring.runtime_state import StatePublisher
from .registry import ModelRegistry
from .store import ModelInfo, ModelStore, versions
from .store.names import split_tag

if TYPE_CHECKING:  # the bases pull in LangChain's model machinery: imported when a LangChain model is asked for
    from .base import BaseEmbeddingModel, BaseLLMModel, BaseRerankModel

logger = logging.getLogger(__name__)
set_recorder(stats.RECORDER)  # every model's loads and calls land in the stats

class _CacheKey(NamedTuple):
    """One cached model object per kind, name, class, export version and precision."""

    kind: str
    name: str
    model_class: Any
    version: str | None
    dtype: str | None


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model, as ``manager.loaded()`` and ``ortmodels ps`` show it."""

    name: str
    kind: str
    variant: str | None
    version: str | None
    device: str | None
    memory_bytes: int
    loaded_at: float | None
    last_used: float
    expires_at: float | None
    """Wall-clock time when it is unloaded if still idle; ``None``: kept until unloaded."""
    active_calls: int
    model_class: str


class ModelManager:
    """Lists the models in ``LOCAL_MODELS_DIR``, loads them on demand and caches them.

    ``ModelManager()`` returns the same object every time. Each (kind, name, class,
    version) has one model object: two threads asking for it get the same object and it
    is loaded once. Loaded models are unloaded, least recently used first, to keep within
    ``MODEL_MEMORY_BUDGET``, and after ``MODEL_KEEP_ALIVE`` seconds idle; a model is never
    unloaded under a running call. An unloaded model stays in the cache and reloads on
    its next use, so a caller holding it never sees it broken.
    """

    _instance: ModelManager | None = None
    _instance_lock = threading.Lock()

    def __new__(cls) -> ModelManager:
        with cls._instance_lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._init()
                cls._instance = instance
            return cls._instance

    def _init(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[_CacheKey, CacheEntry] = {}
        self._aliases: dict[_CacheKey, CacheEntry] = {}
        """Keys that name an entry of another key: ``name`` under ``MODEL_DTYPE=auto`` and
        ``name:int4`` are one instance when auto chose int4 (never iterated: counted once)."""
        self._switching: Counter[str] = Counter()
        """Names whose ``onnx`` link a rollback is switching: their new instances wait to load."""
        self._switched = threading.Condition(self._lock)
        self._keep_alive = KeepAliveThread(self._lock, lambda: list(self._entries.values()))
        self._publisher = StatePublisher(lambda: self._settings.local_models_dir,
                                         lambda: [asdict(r) for r in self.loaded()])
        self._registry = ModelRegistry()
        self._apply(load_settings())
        atexit.register(self._publisher.clear)

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
        """Unload everything, forget the cached objects and take new settings (``None``: re-read)."""
        self.unload_all()
        with self._lock:
            for entry in self._entries.values():
                entry.model.set_listener(None)
            self._entries.clear()
            self._aliases.clear()
            self._apply(settings or load_settings())

    # -- listing ------------------------------------------------------------------------------

    def list_available_models(self) -> list[ModelInfo]:
        """Every model in the models folder, exported or not."""
        return self._store.list()

    def get_model_info(self, name: str, version: str | None = None) -> ModelInfo:
        return self._store.info(name, version)

    def versions(self, name: str) -> list[versions.VersionInfo]:
        """The export versions of ``name``, newest first."""
        return versions.list_versions(self._store.folder(name))

    def rollback(self, name: str, version: str, timeout: float | None = None) -> versions.VersionInfo:
        """Make ``version`` the active export, all or nothing; loaded instances of another are unloaded.

        Before the ``onnx`` link switches, the version's files are verified and this process's
        instances of the replaced version stop taking calls and finish their running ones
        (``timeout``, default ``MODEL_UNLOAD_TIMEOUT``); they are unloaded after the switch and
        their next call loads ``version``. A damaged version (`ModelFileError`) or calls still
        running at the timeout (`ModelBusyError`) change nothing: the link stays where it was.
        """
        version = versions.check_version_id(version)
        model_dir = self._store.folder(name)
        if timeout is None and self._settings.model_unload_timeout >= 0:
            timeout = self._settings.model_unload_timeout
        held: list[Any] | None = None  # set once hold() has counted the switch

        def hold() -> None:  # under the export lock, after the version was verified
            nonlocal held
            deadline = None if timeout is None else time.monotonic() + timeout
            acquired: list[Any] = []
            with self._lock:  # an instance made after this waits in model_loading: none is missed
                self._switching[name] += 1
                held = acquired
                instances = [e.model for k, e in self._entries.items() if k[1] == name and k[3] is None]
            for model in instances:
                if model.hold_unless_version(version, deadline, timeout):
                    acquired.append(model)

        try:
            info = versions.activate(model_dir, version, before_switch=hold)
        except ModelBusyError as exc:
            self._end_switch(name, held, None)
            raise ModelBusyError(
                f"Rollback of {name} to {version} not done, nothing changed: the onnx link still points "
                f"to {versions.active_version(model_dir)}, which this process goes on serving. {exc}"
            ) from None
        except BaseException:
            self._end_switch(name, held, None)
            raise
        self._end_switch(name, held, version)
        return info

    def _end_switch(self, name: str, held: list[Any] | None, version: str | None) -> None:
        """Release the instances a rollback held, unloading those not on ``version`` (``None``: the
        rollback failed, unload none); no call can run on a held model, so this never waits."""
        if held is None:  # refused before hold(): nothing was held or counted
            return
        try:
            for model in held:
                model.release_hold(version)
        finally:
            with self._lock:
                self._switching[name] -= 1
                self._switched.notify_all()

    def prune(self, name: str, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest versions (never the active one or one in use)."""
        return versions.prune(self._store.info(name).path, versions.check_keep(keep))

    def loaded_models(self) -> list[str]:
        """Names of the models loaded now."""
        return sorted({entry.name for entry in self.loaded()})

    def loaded(self) -> list[LoadedModel]:
        """What is loaded now: memory, last use and when it expires (as ``ollama ps``)."""
        with self._lock:
            entries = list(self._entries.values())
        rows = []
        for entry in entries:
            model = entry.model
            if not model.is_loaded:
                continue
            rows.append(LoadedModel(
                name=entry.key[1], kind=entry.key[0], variant=getattr(model, "loaded_variant", None),
                version=getattr(model, "loaded_version", None),
                device=getattr(model, "loaded_device", None) or model.device,
                memory_bytes=entry.memory, loaded_at=entry.loaded_at, last_used=entry.last_used,
                expires_at=entry.expires_at, active_calls=getattr(model, "active_calls", 0),
                model_class=type(entry.adapter or model).__name__ if entry.key[2] is not None
                else kind_spec(entry.key[0]).default_class.rpartition(":")[2],
            ))
        return sorted(rows, key=lambda r: (r.name, r.kind))

    def memory_bytes(self) -> int:
        """Bytes held by loaded models, as the budget counts them."""
        return sum(row.memory_bytes for row in self.loaded())

    # -- monitoring ---------------------------------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        """Per model and variant: calls, errors, tokens, tokens/s, latency p50/p95/p99, TTFT, loads."""
        loaded = {(row.name, row.variant) for row in self.loaded()}
        figures = stats.registry().snapshot()
        for row in figures:
            row["loaded"] = (row["model"], row["variant"]) in loaded
        return figures

    def prometheus_text(self) -> str:
        """The figures of `stats` in Prometheus' text format (needs ``prometheus-client``)."""
        from .monitoring.prometheus import exposition

        return exposition(self.loaded)

    def serve_metrics(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve the Prometheus figures on ``http://addr:port/metrics`` from a daemon thread."""
        from .monitoring.prometheus import serve

        return serve(port, addr, self.loaded)

    # -- loading ------------------------------------------------------------------------------

    def get_embedding_model(
        self, name: str | None = None, model_class: type[BaseEmbeddingModel] | None = None,
        *, version: str | None = None, dtype: str | None = None,
    ) -> BaseEmbeddingModel:
        """A loaded embedding model; ``name`` defaults to ``DEFAULT_EMBEDDING_MODEL``, ``version``
        to the active export, ``dtype`` to ``MODEL_DTYPE`` (also as a tag: ``"all-minilm-l6-v2:int8"``)."""
        model: BaseEmbeddingModel = self._adapter(self._entry("embedding", name, model_class, version, dtype))
        return model

    def get_chat_model(
        self, name: str | None = None, model_class: type[BaseLLMModel] | None = None,
        *, version: str | None = None, dtype: str | None = None,
    ) -> BaseLLMModel:
        """A loaded chat model; ``name`` defaults to ``DEFAULT_CHAT_MODEL``, ``version`` to the
        active export, ``dtype`` to ``MODEL_DTYPE`` (also as a tag: ``"smollm2-135m-instruct:int8"``).

        Each precision is its own cached instance, so ``:int8`` and ``:int4`` can serve side by side.
        """
        model: BaseLLMModel = self._adapter(self._entry("chat", name, model_class, version, dtype))
        return model

    def get_runtime(self, kind: str, name: str | None = None, *, version: str | None = None,
                    dtype: str | None = None) -> Managed:
        """A loaded model as the server, Ray and ``ortmodels chat`` use it, without LangChain:
        ortmodels' own runtime (`ChatRuntime`, `EmbeddingRuntime`), or a user's registered class.
        The same cached model (and life cycle) as ``get_chat_model``/``get_embedding_model``."""
        return self._entry(kind, name, None, version, dtype).model

    def _adapter(self, entry: CacheEntry) -> Any:
        """The LangChain object of a cached model, made once (a runtime's face shares its life cycle)."""
        with self._lock:
            if entry.adapter is None:
                entry.adapter = adapter_of(entry.key[0], entry.model)
            return entry.adapter

    def get_reranker(
        self, name: str | None = None, model_class: type[BaseRerankModel] | None = None,
        *, version: str | None = None, dtype: str | None = None,
    ) -> BaseRerankModel:
        """A loaded cross-encoder reranker; ``name`` defaults to ``DEFAULT_RERANK_MODEL``, ``version``
        to the active export, ``dtype`` to ``MODEL_DTYPE`` (also as a tag: ``"name:int8"``). Wrap it in
        `ortmodels.runtime.rerank.OnnxReranker` for LangChain's document compressor."""
        model: BaseRerankModel = self._adapter(self._entry("reranker", name, model_class, version, dtype))
        return model

    def register(self, model_class: type, *, name: str | None = None, architecture: str | None = None) -> None:
        """Build ``name`` (or every model of ``architecture``) with ``model_class`` from now on,
        so ``get_chat_model(name)`` needs no class argument; see `ortmodels.registry`."""
        self._registry.register(model_class, name=name, architecture=architecture)

    def _entry(self, kind: str, name: str | None, model_class: type | None, version: str | None,
               dtype: str | None) -> CacheEntry:
        """The cache entry of a model, made if new, its model loaded."""
        setting = None
        if not name:  # the kind's default: a name that is not there is said to come from its setting
            setting = kind_spec(kind).default_setting
            name = getattr(self._settings, setting)
        name, dtype = split_tag(name, dtype)
        try:
            return self._named_entry(kind, name, model_class, version, dtype)
        except UnknownModelError as exc:
            said = exc.asked_as(name, setting and setting_name(setting), kind)
            if said is exc:
                raise
            raise said from None

    def _named_entry(self, kind: str, name: str, model_class: type | None, version: str | None,
                     dtype: str | None) -> CacheEntry:
        if version is not None:
            versions.check_version_id(version)
        if model_class is None:
            model_class = self._registry.lookup(kind, name, lambda: self._architecture(name))
        if model_class is not None and is_loaded_class(kind_spec(kind).default_class, model_class):
            model_class = None  # ortmodels' own class, named explicitly: the same cached object
        key = _CacheKey(kind, name, model_class, version, dtype)
        with self._lock:
            entry = self._entries.get(key) or self._aliases.get(key) or self._same_variant(key)
            if entry is None:
                model = construct_model(self._store, self._settings, kind, name, model_class, version, dtype)  # type: ignore[arg-type]
                model.set_listener(self)
                entry = self._entries[key] = CacheEntry(key, model)
        entry.model.load()  # the model's own lock: concurrent callers wait for one load
        return entry

    def _same_variant(self, key: _CacheKey) -> CacheEntry | None:
        """The entry of ortmodels' own class that already holds the precision ``key`` asks for,
        kept as ``key``'s alias: the ``MODEL_DTYPE`` entry (dtype ``None``) that chose it, or,
        for that entry, the one asked for by the precision it would choose. Called under the lock."""
        if key.model_class is not None:  # a user's class: its own dtype handling, its own instances
            return None
        if key.dtype is not None:
            wanted, others = key.dtype, [e for k, e in self._entries.items() if k == key._replace(dtype=None)
                                         and e.loaded and getattr(e.model, "loaded_variant", None) == key.dtype]
        elif not any(k._replace(dtype=None) == key for k in self._entries):
            return None  # no precision of it asked for by name: nothing to share (and no manifest read)
        else:
            from .engine.session import resolve_device  # onnxruntime: imported when a model loads anyway

            try:
                info = self._store.info(key.name, key.version)
                wanted = info.variant_for(key.kind, resolve_device(self._settings.model_device), None,
                                          self._settings.model_dtype)
            except OrtModelsError:  # not loadable as asked: the model's own construction says why
                return None
            others = [e for k, e in self._entries.items() if k == key._replace(dtype=wanted)]
        if not others:
            return None
        logger.debug("%s:%s is the loaded %s instance", key.name, wanted, key.kind)
        self._aliases[key] = others[0]
        return others[0]

    def _architecture(self, name: str) -> str | None:
        try:
            return self._store.info(name).architecture
        except OrtModelsError:  # not in the store: a registered class may load it from elsewhere
            return None

    # -- the cache policy, driven by the models' own life cycle (the ModelListener interface) --

    def _entry_of(self, model: Any) -> CacheEntry | None:
        """The entry of the model a life cycle tells of (a runtime, or the face it is under)."""
        life = getattr(model, "life_cycle", model)
        return next((e for e in self._entries.values() if getattr(e.model, "life_cycle", e.model) is life), None)

    def _make_room(self, keep: CacheEntry, incoming: int) -> None:
        """Unload idle models, least recently used first, until ``incoming`` more bytes fit.

        A model that is busy (or being loaded or unloaded by another thread) is skipped,
        never waited for: two threads making room at once cannot wait on each other.
        """
        with self._lock:
            victims = cache.victims_for_budget(
                list(self._entries.values()), self._settings.model_memory_budget, incoming, keep
            )
        for victim in victims:
            if victim.model.unload_if_idle():
                logger.info("Unloaded %s to stay within MODEL_MEMORY_BUDGET", victim.key[1])

    def model_loading(self, model: Any) -> None:
        """Called by a managed model before it loads: wait out a rollback of its name (it would
        load from the link being switched), then make room for it within the budget."""
        with self._lock:
            entry = self._entry_of(model)
            if entry is not None and entry.key.version is None and self._switching[entry.key.name]:
                self._switched.wait_for(lambda: not self._switching[entry.key.name])
                model.life_cycle.forget_choice()  # chosen from the link that was switched
        if self._settings.model_memory_budget <= 0:
            return
        if entry is None:
            return
        # what it held last time, else the files of the variant its load will open (chosen once)
        incoming = model.last_memory_bytes or model.life_cycle.expected_bytes()
        self._make_room(entry, incoming)

    def model_loaded(self, model: Any) -> None:
        """Called by a managed model after every load, including a reload on its next use."""
        with self._lock:
            entry = self._entry_of(model)
            if entry is None:
                return
            entry.loaded_at = time.time()
            entry.touch(self._settings.model_keep_alive)
        self._make_room(entry, 0)
        self._schedule()
        self._publisher.publish()
        logger.info("Loaded %s model %s", entry.key[0], entry.key[1])

    def model_unloaded(self, model: Any) -> None:
        with self._lock:
            entry = self._entry_of(model)
            if entry is not None:
                entry.loaded_at = None
                entry.expires_at = None
        return_freed_memory()
        self._publisher.publish()

    def model_used(self, model: Any) -> None:
        """Called by a managed model after each call: LRU time and keep-alive expiry."""
        with self._lock:
            entry = self._entry_of(model)
            if entry is None:
                return
            entry.touch(self._settings.model_keep_alive)
        self._schedule()  # keep-alive 0 too: unloaded by the keep-alive thread, not the caller
        self._publisher.publish(soon=True)

    def _schedule(self) -> None:
        if self._settings.model_keep_alive >= 0:
            self._keep_alive.wake()

    # -- unloading ----------------------------------------------------------------------------

    def unload(self, name: str, timeout: float | None = None) -> bool:
        """Unload every cached instance of ``name`` (after their running calls); ``True`` if one was loaded.
        A tag (``"name:int8"``) unloads that precision's instances only: those asked for by it,
        and those ``MODEL_DTYPE=auto`` chose it for.

        ``timeout`` (default ``MODEL_UNLOAD_TIMEOUT``) bounds the wait for running calls; past
        it, `ModelBusyError` names the calls that hold the model.
        """
        name, dtype = split_tag(name)
        _check_timeout(timeout)
        with self._lock:
            models = [e.model for k, e in self._entries.items() if k[1] == name and e.loaded
                      and (dtype is None or dtype in (k.dtype, getattr(e.model, "loaded_variant", None)))]
        self._unload_each(models, timeout)
        return bool(models)

    def unload_all(self, timeout: float | None = None) -> None:
        """Unload every model (each after its running calls finish, within ``timeout``)."""
        _check_timeout(timeout)
        with self._lock:
            models = [e.model for e in self._entries.values()]
        self._unload_each(models, timeout)

    def _unload_each(self, models: list[Any], timeout: float | None) -> None:
        """Unload each model; one that stays busy does not keep the others loaded."""
        if timeout is None and self._settings.model_unload_timeout >= 0:
            timeout = self._settings.model_unload_timeout
        busy: ModelBusyError | None = None
        for model in models:
            try:
                model.unload(timeout=timeout)
            except ModelBusyError as exc:
                busy = busy or exc
        if busy is not None:
            raise busy


def _check_timeout(timeout: object) -> None:
    """A wait's bound is seconds (>= 0) or ``None``: refused before anything is unloaded."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout >= 0):
        raise ConfigurationError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}.")
