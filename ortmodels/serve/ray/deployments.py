"""The Ray Serve application: one ingress with the server's routes, one deployment per model.

`build_app` returns the application for ``serve.run`` (and ``serve run
ortmodels.serve.ray:app``): an `Ingress` whose FastAPI app is `create_app`'s, the same
routes as ``ortmodels serve``, given a `RayCatalog`; and a `ModelServer` deployment per
model id, each replica a `ModelManager` with that model loaded. A replica's CPU share and
``MODEL_THREADS`` come from `plan`, so the replicas of one model never ask for more
threads than the cluster has cores.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle

from ...config import load_settings
from ...errors import ConfigurationError, ModelFileError
from ...manager import ModelManager
from ...runtime.events import ChatEvent
from ...runtime.options import ChatOptions
from ...runtime.tokens import Tokens
from ..app import DEFAULT_MAX_QUEUE, create_app
from ..models import Catalog, ModelId
from ..protocols import EmbeddingModel, RerankModel, TokenizingModel, as_chat_model, as_tokenizing
from .remote import RayCatalog
from .routing import ROUTER_PATH

logger = logging.getLogger(__name__)

APP_NAME = "ortmodels"
#: Settings a replica takes from the process that builds the app (``MODEL_THREADS`` is set by `plan`).
_PASSED_ON = ("LOCAL_MODELS_DIR", "DEFAULT_", "MODEL_")


@dataclass(frozen=True)
class Plan:
    """How many replicas each model gets, and what each may use."""

    replicas: int | None
    """Fixed replicas per model; ``None`` with ``autoscale``."""
    autoscale: tuple[int, int] | None
    """``(min, max)`` replicas per model, scaled on ongoing requests."""
    num_cpus: float
    """Ray's logical CPUs one model replica reserves."""
    threads: int
    """ONNX Runtime threads per replica (``MODEL_THREADS``)."""
    target_ongoing_requests: int

    def options(self) -> dict[str, Any]:
        """The `serve.deployment` options of a model deployment."""
        scaling: dict[str, Any]
        if self.autoscale is not None:
            low, high = self.autoscale
            scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                              "target_ongoing_requests": self.target_ongoing_requests}}
        else:
            scaling = {"num_replicas": self.replicas}
        return scaling | {"ray_actor_options": {"num_cpus": self.num_cpus}}


def plan(cpus: float, models: int, replicas: int | None = 1, autoscale: tuple[int, int] | None = None,
         threads: int | None = None, target_ongoing_requests: int = 4) -> Plan:
    """Share ``cpus`` (the cluster's) between ``models`` deployments of ``replicas`` each (or
    up to ``autoscale``'s max): every replica reserves an equal share of Ray's CPUs, and gets
    ``cpus / replicas`` ONNX Runtime threads (at least 1) unless ``threads`` is given."""
    if autoscale is not None:
        low, high = autoscale
        if not 0 <= low <= high or high < 1:
            raise ConfigurationError(f"--autoscale {low}:{high}: give MIN:MAX with 0 <= MIN <= MAX and MAX >= 1.")
        most = high
    else:
        if replicas is None or replicas < 1:
            raise ConfigurationError(f"--replicas {replicas}: give 1 or more.")
        most = replicas
    share = math.floor(1000 * cpus / (most * max(models, 1))) / 1000
    if share <= 0:
        raise ConfigurationError(f"{cpus} CPUs cannot hold {most} replicas of {models} models.")
    return Plan(replicas if autoscale is None else None, autoscale, share,
                threads or max(1, int(cpus // most)), target_ongoing_requests)


def _deployment_name(model_id: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_-]", "-", model_id)


def _environment(threads: int) -> dict[str, str]:
    passed = {k: v for k, v in os.environ.items() if k.startswith(_PASSED_ON)}
    passed["LOCAL_MODELS_DIR"] = str(load_settings().local_models_dir.resolve())
    passed["MODEL_THREADS"] = str(threads)
    cache_dir = load_settings().model_prompt_cache_dir
    if cache_dir is not None:  # a replica's working directory is not this process's
        passed["MODEL_PROMPT_CACHE_DIR"] = str(cache_dir.resolve())
    return passed


class ModelServer:
    """One replica of one model: a `ModelManager` that has loaded it before the replica is
    ready, and the calls the ingress forwards to it."""

    def __init__(self, model_id: str, env: dict[str, str]) -> None:
        os.environ.update(env)  # a replica is its own process: these are its settings
        self.model_id = model_id
        self.catalog = Catalog(ModelManager())
        self.entry: ModelId = self.catalog.check([model_id])[0]
        self.catalog.load([model_id])
        self.model = self.catalog.used[self.entry.id]
        logger.info("Replica ready: %s with %s threads", model_id, env.get("MODEL_THREADS"))

    def ready(self) -> str:
        return self.entry.id

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: the model unloads, which writes its prompt
        cache to ``MODEL_PROMPT_CACHE_DIR`` (if set) for the replica that comes next."""
        catalog = getattr(self, "catalog", None)
        if catalog is None or getattr(self, "_stopped", False) or sys.is_finalizing():
            return  # __init__ failed; done already (Serve calls it, then the collector); the teardown
        self._stopped = True
        try:
            catalog.manager.unload_all(10.0)
        except Exception as exc:  # noqa: BLE001 - the replica is ending anyway
            logger.warning("Unload at replica shutdown: %s", exc)

    def _model(self, model_id: str) -> object:
        if model_id != self.entry.id:
            raise ConfigurationError(f"This replica serves {self.entry.id}, not {model_id}.")
        return self.model

    async def achat_events(self, model_id: str, messages: list[dict[str, Any]],
                             options: ChatOptions) -> AsyncIterator[ChatEvent]:
        async with aclosing(as_chat_model(self._model(model_id)).achat_events(messages, options)) as events:
            async for item in events:
                yield item

    async def atext_events(self, model_id: str, prompt: str, options: ChatOptions) -> AsyncIterator[ChatEvent]:
        async with aclosing(as_chat_model(self._model(model_id)).atext_events(prompt, options)) as events:
            async for item in events:
                yield item

    async def aembed_counted(self, model_id: str, texts: list[str],
                             options: dict[str, Any] | None = None) -> tuple[list[list[float]], int]:
        return await cast(EmbeddingModel, self._model(model_id)).aembed_counted(texts, options)

    async def arerank_counted(self, model_id: str, query: str, documents: list[str],
                              top_n: int | None) -> tuple[list[tuple[int, float]], int]:
        return await cast(RerankModel, self._model(model_id)).arerank_counted(query, documents, top_n)

    def _tokenizing(self, model_id: str) -> TokenizingModel:
        return as_tokenizing(self._model(model_id), model_id)

    async def atokenize(self, model_id: str, text: str, add_special: bool, with_pieces: bool) -> Tokens:
        return await self._tokenizing(model_id).atokenize(text, add_special, with_pieces)

    async def achat_tokens(self, model_id: str, messages: list[dict[str, Any]], options: ChatOptions | None,
                           with_pieces: bool) -> Tokens:
        return await self._tokenizing(model_id).achat_tokens(messages, options, with_pieces)

    async def adetokenize(self, model_id: str, ids: list[int]) -> str:
        return await self._tokenizing(model_id).adetokenize(ids)

    def check_health(self) -> None:
        """Serve calls this every few seconds: the model's files must still be on this node's disk
        (a missing file fails the check, and Serve replaces the replica); the reason is logged."""
        entry = self.entry
        info = self.catalog.manager.get_model_info(entry.name)
        variants = info.variants
        chosen = [variants[entry.dtype]] if entry.dtype in variants else list(variants.values())
        if not chosen:
            problem = ModelFileError(info.onnx_path, "has no exported variant on this replica's disk",
                                     f"export {entry.name} on every node, or mount LOCAL_MODELS_DIR")
            logger.error("Health check failed for %s: %s", entry.id, problem)
            raise problem
        for variant in chosen:
            for name in variant.files:
                path = info.onnx_path / variant.path / name
                if not path.is_file():
                    problem = ModelFileError(path, "is missing on this replica's disk",
                                             f"restore the export of {entry.name} in LOCAL_MODELS_DIR on this node")
                    logger.error("Health check failed for %s: %s", entry.id, problem)
                    raise problem


@serve.ingress()
class Ingress:
    """The HTTP entry: `create_app`'s routes over a `RayCatalog` of the model deployments."""

    def __init__(self, handles: dict[str, DeploymentHandle], env: dict[str, str], api_key: str | None,
                 max_queue: int) -> None:
        os.environ.update(env)  # the store is read here too: for ids and 404s
        self._handles, self._api_key, self._max_queue = handles, api_key, max_queue

    def __serve_build_asgi_app__(self) -> Any:
        catalog = RayCatalog(ModelManager(), self._handles)
        return create_app(models=list(self._handles), api_key=self._api_key, max_queue=self._max_queue,
                          catalog=catalog)


def _routing(entry: ModelId) -> dict[str, Any]:
    """A chat deployment's request router: by prompt prefix unless ``MODEL_RAY_ROUTING=load``."""
    settings = load_settings()
    if entry.kind != "chat" or settings.model_ray_routing != "prefix":
        return {}
    return {"request_router_config": RequestRouterConfig(
        request_router_class=ROUTER_PATH, request_router_kwargs={"imbalance": settings.model_ray_routing_imbalance})}


def _cluster_cpus() -> float:
    if ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 1.0))
    return float(os.cpu_count() or 1)


def build_app(models: Sequence[str] | str | None = None, replicas: int | None = 1,
              autoscale: tuple[int, int] | str | None = None, threads: int | None = None,
              api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE, cpus: float | None = None,
              target_ongoing_requests: int = 4, ingress_replicas: int = 1,
              health_check_period_s: float = 10.0) -> Application:
    """The ortmodels application for ``serve.run``.

    ``models``: ids to serve, one deployment each (default: ``DEFAULT_CHAT_MODEL`` and
    ``DEFAULT_EMBEDDING_MODEL`` where exported); ``replicas`` per model, or ``autoscale``
    ``(min, max)`` (or ``"MIN:MAX"``) on ongoing requests; ``threads``: ``MODEL_THREADS`` per
    replica (default: the cluster's CPUs over the replicas); ``cpus``: the cluster's CPUs
    (default: Ray's count, or this machine's before ``ray.init``).
    """
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if isinstance(autoscale, str):
        low, sep, high = autoscale.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ConfigurationError(f"--autoscale {autoscale!r}: give MIN:MAX, e.g. 1:4.")
        autoscale = (int(low), int(high))
    catalog = Catalog(ModelManager())
    entries = catalog.check(list(models) if models else catalog.defaults())
    if not entries:
        raise ConfigurationError("No model to serve: export one, or name them with --models.")
    chosen = plan(cpus or _cluster_cpus(), len(entries), replicas, autoscale, threads, target_ongoing_requests)
    env = _environment(chosen.threads)
    handles = {}
    for entry in entries:
        deployment = serve.deployment(ModelServer).options(
            name=_deployment_name(entry.id), max_ongoing_requests=max_queue,
            health_check_period_s=health_check_period_s, **chosen.options(), **_routing(entry))
        handles[entry.id] = deployment.bind(entry.id, env)
    logger.info("Ray Serve app: %s; %s", ", ".join(handles), chosen)
    ingress = serve.deployment(Ingress).options(
        name="ingress", num_replicas=ingress_replicas, max_ongoing_requests=max_queue,
        ray_actor_options={"num_cpus": 0})
    return ingress.bind(handles, env, api_key, max_queue)
