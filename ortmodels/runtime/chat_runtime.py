"""`ChatRuntime`: one chat model of the store, LangChain-free: its life cycle, the opened
variant and, while loaded, its `ChatService`.

What the manager caches for ortmodels' own chat class and what the server, Ray's replicas
and ``ortmodels chat`` call (`achat_events`, `atext_events`, `chat_events`: message dicts and
`ChatOptions` in, the service's events out), so none of them imports LangChain.
`OnnxChatModel` is the LangChain face of one, sharing its life cycle; it is made only when
LangChain's interface is asked for (``manager.get_chat_model``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..config import Settings, load_settings
from ..engine import DecoderSession, Engine, EngineGauges
from ..engine.constraints import GrammarCompiler
from ..engine.prompt_cache import CacheIdentity
from ..engine.prompt_tokens import PromptTokenizer
from ..engine.session import output_width
from ..engine.tokenizer import check_vocabulary
from ..errors import ChatTemplateError, ModelNotLoadedError, OrtModelsError
from ..lifecycle import LifeCycle, Managed
from . import tokens
from .events import ChatEvent
from .options import ChatOptions, ModelOptions, check_stop, unknown_option
from .service import ChatService, Prepared
from .tokens import Tokens
from .variant import ChoosesVariant, open_variant, read_chat_files

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


#: What a call may set as a keyword argument (``stop`` is added to the model's, not replaced).
CALL_OPTIONS = frozenset(ChatOptions.model_fields) - {"stop"}


def merge_options(defaults: ModelOptions, stop: Any, kwargs: dict[str, Any]) -> ChatOptions:
    """A call's options: its keyword arguments (any `ChatOptions` field; ``None`` leaves the
    model's own) over the model's ``defaults``, ``stop`` added to the model's, checked once."""
    given: dict[str, Any] = {name: getattr(defaults, name) for name in ModelOptions.model_fields}
    for name, value in kwargs.items():
        if value is None:  # not given: the model's own
            continue
        if name not in CALL_OPTIONS:
            raise unknown_option(name)
        given[name] = value
    given["stop"] = [*(defaults.stop or []), *check_stop(stop)]
    return ChatOptions.checked(**given)


def over_defaults(defaults: ModelOptions, options: ChatOptions) -> ChatOptions:
    """``options`` (a server's, a replica's) over a model's ``defaults``, merged as `merge_options`
    merges a LangChain call's: only the options the caller set."""
    return merge_options(defaults, options.stop, options.model_dump(exclude_unset=True, exclude={"stop"}))


class ChatRuntime(ChoosesVariant, Managed):
    """A chat model's life cycle and chat service, without LangChain; thread-safe.

    ``ChatRuntime("smollm2-135m-instruct")`` (found in ``LOCAL_MODELS_DIR``) or
    ``ChatRuntime(model_path=...)``; usually ``ModelManager().get_runtime("chat", name)``.
    """

    kind = "chat"
    default_setting = "default_chat_model"

    def __init__(self, model_name: str | None = None, *, model_path: str | Path | None = None,
                 device: str | None = None, dtype: str | None = None, version: str | None = None,
                 settings: Settings | None = None, defaults: ModelOptions | None = None,
                 front: Any = None, owner: Any = None) -> None:
        self._place(model_name, model_path, device, dtype, version, settings)
        self.defaults: ModelOptions = defaults if defaults is not None else ModelOptions()
        """The model-level options a call's own replace (`OnnxChatModel` is its runtime's)."""
        self.front = front
        """The LangChain face (`OnnxChatModel`) whose fields this runtime loads with, if any."""
        self._service: ChatService | None = None
        self._saved_cache: tuple[Path, CacheIdentity] | None = None
        """Where the prompt cache is saved, and for what (``MODEL_PROMPT_CACHE_DIR`` set)."""
        self._life = LifeCycle(owner or self)
        """Its own, or (``owner``: a LangChain face made on its own, a user's subclass perhaps) the
        face's, whose ``_load`` runs this runtime's."""

    def follow(self, front: Any) -> None:
        """Take the fields a load reads from ``front`` (`OnnxChatModel`'s may be set after it was made)."""
        self.model_name, self.model_path = front.model_name, Path(front.model_path)
        self.named_by = getattr(front, "named_by", None)
        self.device, self.dtype, self.version, self.settings = front.device, front.dtype, front.version, front.settings

    # -- life cycle -------------------------------------------------------------------------

    def _follow_front(self) -> None:
        self.follow(self.front)

    def _load(self) -> None:
        if self.front is not None:
            self.follow(self.front)
        settings = self.settings or load_settings()
        checkpoint = self.model_path
        opened = open_variant(checkpoint, "chat", self.device, self.dtype, settings,
                              beside=lambda folder: read_chat_files(folder, checkpoint))
        tokenizer, (top_id, token_chars), template = opened.beside
        decoder = DecoderSession(opened.session, opened.device)
        spec = opened.chat_spec
        special = {f"eos_token_ids[{i}]": t for i, t in enumerate(spec.eos_token_ids)}
        check_vocabulary(opened.folder, tokenizer, output_width(opened.session, "logits"),
                         {**special, "bos_token_id": spec.bos_token_id}, size=top_id + 1)
        if isinstance(template, ChatTemplateError):
            raise template
        engine = Engine(
            decoder, tokenizer, max_batch=settings.model_max_batch, kv_cache_bytes=settings.model_kv_cache,
            prompt_cache_bytes=settings.model_prompt_cache, context_length=spec.context_length,
            speculative=settings.speculates(opened.variant),
        )
        prompt_tokens = PromptTokenizer(tokenizer)
        grammars = GrammarCompiler(opened.folder / "tokenizer.json",
                                   output_width(opened.session, "logits") or top_id + 1,
                                   spec.eos_token_ids, encode_text=prompt_tokens.encode_text)
        if settings.model_prompt_cache_dir is not None and decoder.past_names:
            kv_heads, head, kv_dtype = decoder.kv_dims
            self._saved_cache = (settings.model_prompt_cache_dir, CacheIdentity(
                opened.info.name, opened.info.version, opened.variant, np.dtype(kv_dtype).name,
                len(decoder.past_names), kv_heads, head))
            engine.prompt_cache.restore(*self._saved_cache)  # before the service is kept: never raises
        self._service = ChatService(engine, tokenizer, template, spec, opened.variant, opened.device, grammars,
                                    token_chars, prompt_tokens)
        logger.info("Loaded chat model %s (%s on %s, %s KV cache: %d bytes per token%s)", opened.info.name,
                    opened.variant, opened.device, opened.kv_dtype, engine.kv_bytes_per_token,
                    f" + {engine.kv_window_bytes} per sequence in sliding-window layers" if engine.kv_window_bytes
                    else "")

    def _unload(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            service.close()  # unload waits for running calls, so nothing is cut off here
            self.save_prompt_cache(service)

    def save_prompt_cache(self, service: ChatService | None = None) -> Path | None:
        """Write the prompt cache to ``MODEL_PROMPT_CACHE_DIR`` (done at unload, and so at a
        server's shutdown); ``None`` when the setting is off or the cache empty. A failed write
        is logged, not raised: the model unloads all the same."""
        service = service or self._service
        if service is None or self._saved_cache is None:
            return None
        try:
            return service.engine.prompt_cache.save(*self._saved_cache)
        except (OSError, OrtModelsError) as exc:
            logger.warning("Could not save the prompt cache to %s: %s", self._saved_cache[0], exc)
            return None

    def memory_bytes(self) -> int:
        """The variant's weights plus what the engine holds now: KV slots and the prompt cache."""
        service = self._service
        return super().memory_bytes() + (service.engine.memory_bytes() if service is not None else 0)

    @property
    def loaded(self) -> ChatService:
        """The loaded model's chat service (engine, tokenizer, template, spec)."""
        service = self._service
        if service is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
        return service

    @property
    def variant(self) -> str | None:
        return self._service.variant if self._service else None

    @property
    def kv_bytes_per_token(self) -> int | None:
        """KV cache bytes one token takes in the loaded graph (``MODEL_KV_DTYPE`` halves it with fp16);
        sliding-window layers, which hold their window only, are not counted (`Engine.kv_bytes_per_token`)."""
        return self._service.engine.kv_bytes_per_token if self._service else None

    def engine_gauges(self) -> EngineGauges | None:
        """The engine's figures now (``/metrics``); ``None`` while not loaded."""
        service = self._service
        return service.engine.gauges() if service is not None else None

    # -- options ------------------------------------------------------------------------------

    def options_over_defaults(self, stop: Any = None, **kwargs: Any) -> ChatOptions:
        """A call's options over this model's defaults (see `merge_options`)."""
        return merge_options(self.defaults, stop, kwargs)

    def with_defaults(self, options: ChatOptions) -> ChatOptions:
        """``options`` (a server's, a replica's) over the model's own defaults (see `over_defaults`)."""
        return over_defaults(self.defaults, options)

    # -- calls --------------------------------------------------------------------------------

    def prepared(self, prepare: Callable[[ChatService], Prepared]) -> tuple[ChatService, Prepared]:
        """A call prepared on one consistent service, even if another thread unloads meanwhile."""
        self._ensure_loaded()
        service = self.loaded
        return service, prepare(service)

    def achat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> AsyncIterator[ChatEvent]:
        """The service's events for a conversation of message dicts, under the call guard (the
        model loaded for the call, the call timed into the stats). Closing the iterator (or
        cancelling its task) cancels the request."""
        return self._aguarded_iter(self.aevents(lambda s: s.prepare(messages, self.with_defaults(options))))

    def atext_events(self, prompt: str, options: ChatOptions) -> AsyncIterator[ChatEvent]:
        """`achat_events` for a plain prompt, without the chat template (``/v1/completions``)."""
        return self._aguarded_iter(self.aevents(lambda s: s.prepare_text(prompt, self.with_defaults(options))))

    def chat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> Iterator[ChatEvent]:
        """`achat_events` for a caller without an event loop (``ortmodels chat``)."""
        return self._guarded_iter(self.events(lambda s: s.prepare(messages, self.with_defaults(options))))

    def events(self, prepare: Callable[[ChatService], Prepared]) -> Iterator[ChatEvent]:
        """The events of the call ``prepare`` builds (no call guard: the caller's)."""
        service, call = self.prepared(prepare)
        yield from service.stream(call)

    async def aevents(self, prepare: Callable[[ChatService], Prepared]) -> AsyncIterator[ChatEvent]:
        """`events` on the event loop: preparing runs off it; a cancelled task cancels the request."""
        service, call = await asyncio.get_running_loop().run_in_executor(None, self.prepared, prepare)
        async with aclosing(service.astream(call)) as events:
            async for event in events:
                yield event

    # -- tokens (llama-server's /tokenize, /detokenize, /apply-template) -----------------------

    def _on_service(self, work: Callable[[ChatService], _T]) -> _T:
        self._ensure_loaded()
        return work(self.loaded)

    async def atokenize(self, text: str, add_special: bool = False, with_pieces: bool = False) -> Tokens:
        """``text``'s token ids as text (no control token made from it), off the event loop."""
        return await asyncio.to_thread(self._on_service, lambda s: tokens.tokenize(s, text, add_special, with_pieces))

    async def achat_tokens(self, messages: list[dict[str, Any]], options: ChatOptions | None = None,
                           with_pieces: bool = False) -> Tokens:
        """The ids and text of the prompt a chat call with ``messages`` and ``options`` (its tools'
        prompt included; before any ``truncate_prompt`` cut) runs, without running it: its token count."""
        given = self.with_defaults(options or ChatOptions())
        return await asyncio.to_thread(self._on_service, lambda s: tokens.chat_tokens(s, messages, given, with_pieces))

    async def adetokenize(self, ids: list[int]) -> str:
        """The text of ``ids``; an id outside the vocabulary is a `ChatInputError` naming the range."""
        return await asyncio.to_thread(self._on_service, lambda s: tokens.detokenize(s, ids))
