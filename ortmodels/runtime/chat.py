"""`OnnxChatModel`: a LangChain chat model that runs an exported decoder on ONNX Runtime.

LangChain's side only: the model's options as fields, loading (which builds the
`ChatService`), LangChain messages and call options mapped to the service's, and the
service's events mapped to chunks. `_generate` is built from `_stream`, so streaming and
invoking can never disagree. The server and Ray call the service's events directly
(`achat_events`, `atext_events`), under the same call guard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import (
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ..base import BaseLLMModel
from ..config import Settings, load_settings
from ..engine import DecoderSession, Engine, EngineGauges
from ..engine.constraints import GrammarCompiler
from ..engine.session import output_width
from ..engine.tokenizer import check_vocabulary
from ..errors import ChatTemplateError, ModelNotLoadedError
from ..store.manifest import ChatSpec
from ..store.names import validate_model_name
from .events import ChatEvent, TextDelta, ToolCalls
from .messages import to_service_messages
from .options import (
    OUTPUT_OPTIONS,
    ChatOptions,
    ModelOptions,
    check_stop,
    unknown_option,
)
from .service import ChatService, Prepared, find_chat_template
from .structured import (
    format_tools,
    normalize_tool_choice,
    structured_output,
    tool_call_chunks,
)
from .variant import open_variant, read_chat_files

logger = logging.getLogger(__name__)

#: What a call may set as a keyword argument (``stop`` is LangChain's own parameter).
CALL_OPTIONS = frozenset(ChatOptions.model_fields) - {"stop"}

__all__ = ["ChatService", "OnnxChatModel", "find_chat_template"]


class OnnxChatModel(BaseLLMModel, ModelOptions):
    """Chat with a decoder exported by ``ortmodels export`` (Llama, Qwen2, Mistral, Phi-3, Gemma, ...).

    Setup:
        ``ortmodels samples && ortmodels export smollm2-135m-instruct --dtype fp32,int4``

    Instantiate:
        ``OnnxChatModel(model_name="smollm2-135m-instruct")`` (found in ``LOCAL_MODELS_DIR``),
        ``OnnxChatModel(model_path="models/smollm2-135m-instruct", dtype="int4")``, or
        ``ModelManager().get_chat_model()``.

    Invoke:
        ``chat.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])``

    Stream:
        ``for chunk in chat.stream("Tell me a story"): print(chunk.content, end="")``

    Options: the fields of `ortmodels.runtime.options.ModelOptions`, each a default that a
    call's own keyword argument replaces (``stop`` strings are added to the model's).
    """

    model_config = ConfigDict(extra="ignore")

    settings: Settings | None = Field(default=None, exclude=True, repr=False)
    """Settings for threads and file checks (``None``: read the environment at load); the
    manager passes its own."""

    _state: ChatService | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve_folder(self) -> OnnxChatModel:
        if self.model_path_ is None:
            settings = load_settings()
            self.model_name = validate_model_name(self.model_name or settings.default_chat_model)
            self.model_path_ = settings.local_models_dir / self.model_name
        elif self.model_name is None:
            self.model_name = Path(self.model_path_).name
        return self

    @property
    def _llm_type(self) -> str:
        return "ortmodels-onnx-chat"

    # -- life cycle -------------------------------------------------------------------------

    def _load(self) -> None:
        settings = self.settings or load_settings()
        checkpoint = Path(self.model_path_)  # type: ignore[arg-type]
        opened = open_variant(checkpoint, "chat", self.device, self.dtype, settings,
                              beside=lambda folder: read_chat_files(folder, checkpoint))
        tokenizer, (top_id, token_chars), template = opened.beside
        decoder = DecoderSession(opened.session, opened.device)
        spec: ChatSpec = opened.info.manifest.chat  # type: ignore[union-attr]
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
        grammars = GrammarCompiler(opened.folder / "tokenizer.json",
                                   output_width(opened.session, "logits") or top_id + 1,
                                   spec.eos_token_ids)
        self._state = ChatService(engine, tokenizer, template, spec, opened.variant, opened.device, grammars,
                                  token_chars)
        logger.info("Loaded chat model %s (%s on %s, %s KV cache: %d bytes per token)", opened.info.name,
                    opened.variant, opened.device, opened.kv_dtype, engine.kv_bytes_per_token)

    def _unload(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.close()  # unload waits for running calls, so nothing is cut off here

    def memory_bytes(self) -> int:
        """The variant's weights plus what the engine holds now: KV slots and the prompt cache."""
        state = self._state
        engine_bytes = state.engine.memory_bytes() if state is not None else 0
        return super().memory_bytes() + engine_bytes

    @property
    def loaded(self) -> ChatService:
        """The loaded model's chat service (engine, tokenizer, template, spec)."""
        state = self._state
        if state is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
        return state

    @property
    def variant(self) -> str | None:
        return self._state.variant if self._state else None

    @property
    def kv_bytes_per_token(self) -> int | None:
        """KV cache bytes one token takes in the loaded graph (``MODEL_KV_DTYPE`` halves it with fp16)."""
        return self._state.engine.kv_bytes_per_token if self._state else None

    def engine_gauges(self) -> EngineGauges | None:
        """The engine's figures now (``/metrics``); ``None`` while not loaded."""
        state = self._state
        return state.engine.gauges() if state is not None else None

    # -- options and prompts ----------------------------------------------------------------

    def options_over_defaults(self, stop: Any = None, **kwargs: Any) -> ChatOptions:
        """A call's options: its keyword arguments (any `ChatOptions` field; ``None`` leaves the
        model's own) over the model's fields, ``stop`` added to the model's, checked once."""
        given: dict[str, Any] = {name: getattr(self, name) for name in ModelOptions.model_fields}
        for name, value in kwargs.items():
            if value is None:  # not given: the model's own
                continue
            if name not in CALL_OPTIONS:
                raise unknown_option(name)
            given[name] = value
        tools = given.get("tools")
        if tools and not all(isinstance(t, dict) and "function" in t for t in tools):
            given["tools"] = format_tools(tools)
        given["stop"] = [*(self.stop or []), *check_stop(stop)]
        return ChatOptions.checked(**given)

    def with_defaults(self, options: ChatOptions) -> ChatOptions:
        """``options`` (a server's, a replica's) over the model's own defaults, merged as
        `options_over_defaults` merges a LangChain call's: only the options the caller set."""
        return self.options_over_defaults(options.stop, **options.model_dump(exclude_unset=True, exclude={"stop"}))

    def render_prompt(self, messages: list[BaseMessage]) -> str:
        """The exact text the model sees, rendered by the checkpoint's own chat template."""
        self._ensure_loaded()
        return self.loaded.render(to_service_messages(messages))

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as text, by the model's own tokenizer (LangChain's default would
        use GPT-2's): a special token's text such as ``<|im_end|>`` is plain text here, as it is
        in a message; no BOS is added."""
        self._ensure_loaded()
        return self.loaded.prompt_tokens.encode_text(text)

    def prompt_token_ids(self, messages: Any, tools: Sequence[Any] | None = None, **kwargs: Any) -> list[int]:
        """The prompt ids the engine runs for this conversation (``tools`` and ``tool_choice``
        offered as `bind_tools` offers them), before the context check: a prompt that does not
        fit fails the call, or with ``truncate_prompt`` loses its oldest tokens."""
        self._ensure_loaded()
        output = {k: v for k, v in kwargs.items() if k in OUTPUT_OPTIONS}
        if tools:
            output["tools"] = tools
        options = self.options_over_defaults(**output)
        return self.loaded.prompt_ids(to_service_messages(self._convert_input(messages).to_messages()), options)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None,
                                     **kwargs: Any) -> int:
        """How many prompt tokens a call with these messages runs (its ``usage`` input tokens),
        tools and the chat template's markup included."""
        return len(self.prompt_token_ids(messages, tools, **kwargs))

    def _prepared(self, prepare: Callable[[ChatService], Prepared]) -> tuple[ChatService, Prepared]:
        """A call prepared on one consistent service, even if another thread unloads meanwhile."""
        self._ensure_loaded()
        service = self.loaded
        return service, prepare(service)

    def _langchain_call(self, messages: list[BaseMessage], stop: Any,
                        kwargs: dict[str, Any]) -> Callable[[ChatService], Prepared]:
        return lambda service: service.prepare(to_service_messages(messages), self.options_over_defaults(stop, **kwargs))

    # -- the service's events, for the server and Ray ------------------------------------------

    def achat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> AsyncIterator[ChatEvent]:
        """The service's events for a conversation of message dicts, under the call guard (the
        model loaded for the call, the call timed into the stats). Closing the iterator (or
        cancelling its task) cancels the request."""
        return self._aguarded_iter(self._aevents(lambda s: s.prepare(messages, self.with_defaults(options))))

    def atext_events(self, prompt: str, options: ChatOptions) -> AsyncIterator[ChatEvent]:
        """`achat_events` for a plain prompt, without the chat template (``/v1/completions``)."""
        return self._aguarded_iter(self._aevents(lambda s: s.prepare_text(prompt, self.with_defaults(options))))

    def chat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> Iterator[ChatEvent]:
        """`achat_events` for a caller without an event loop (``ortmodels chat``)."""
        return self._guarded_iter(self._events(lambda s: s.prepare(messages, self.with_defaults(options))))

    def _events(self, prepare: Callable[[ChatService], Prepared]) -> Iterator[ChatEvent]:
        service, call = self._prepared(prepare)
        yield from service.stream(call)

    async def _aevents(self, prepare: Callable[[ChatService], Prepared]) -> AsyncIterator[ChatEvent]:
        service, call = await asyncio.get_running_loop().run_in_executor(None, self._prepared, prepare)
        async with aclosing(service.astream(call)) as events:
            async for event in events:
                yield event

    # -- LangChain ----------------------------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The service's events for this conversation as LangChain chunks; other callers' requests
        share its decode steps. Closing the stream early cancels the request at once."""
        service, prepared = self._prepared(self._langchain_call(messages, stop, kwargs))
        for event in service.stream(prepared):
            chunk = self._to_chunk(event)
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """As `_stream`, on the event loop: a cancelled task cancels its request."""
        call = self._langchain_call(messages, stop, kwargs)
        service, prepared = await asyncio.get_running_loop().run_in_executor(None, self._prepared, call)
        async with aclosing(service.astream(prepared)) as events:
            async for event in events:
                chunk = self._to_chunk(event)
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def astream_text(self, prompt: str, *, stop: Any = None, **options: Any) -> AsyncIterator[AIMessageChunk]:
        """Continue ``prompt`` as it is, without the chat template (OpenAI's ``/v1/completions``).

        The same engine, options, stop strings and call guard as `astream`; the last chunk
        carries ``usage_metadata`` and ``response_metadata["finish_reason"]``. Closing the
        iterator (or cancelling its task) cancels the request.
        """
        events = self._aevents(lambda s: s.prepare_text(prompt, self.options_over_defaults(stop, **options)))
        return self._aguarded_iter(self._text_chunks(events))

    async def _text_chunks(self, events: AsyncIterator[ChatEvent]) -> AsyncIterator[AIMessageChunk]:
        async with aclosing(events) as opened:  # type: ignore[type-var]
            async for event in opened:
                yield self._to_chunk(event).message  # type: ignore[misc]

    def _to_chunk(self, event: ChatEvent) -> ChatGenerationChunk:
        """One service event as a LangChain chunk (the one mapping, for every stream): a tool
        call arrives whole, as ``tool_call_chunks`` that merge into ``AIMessage.tool_calls``;
        the last chunk carries the usage and why the answer ended."""
        if isinstance(event, TextDelta):
            metadata = {"logprobs": {"content": [lp.openai() for lp in event.logprobs]}} if event.logprobs else {}
            return ChatGenerationChunk(message=AIMessageChunk(content=event.text, response_metadata=metadata))
        if isinstance(event, ToolCalls):
            return ChatGenerationChunk(message=AIMessageChunk(content=event.content,
                                                              tool_call_chunks=tool_call_chunks(event.calls)))
        usage = event.usage
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=UsageMetadata(
                    input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens, input_token_details={"cache_read": usage.cached_tokens},
                ),
                response_metadata={"finish_reason": event.reason, "model_name": self.model_name,
                                   "variant": event.variant, "device": event.device,
                                   "time_to_first_token_s": event.time_to_first_token_s},
                chunk_position="last",
            ),
            generation_info={"finish_reason": event.reason},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop=stop, run_manager=run_manager, **kwargs))

    # -- tools and structured output ---------------------------------------------------------

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, parallel_tool_calls: bool | None = None,
                   **kwargs: Any) -> Runnable[Any, AIMessage]:
        """Offer ``tools`` (pydantic classes, functions, LangChain tools or OpenAI dicts).

        ``tool_choice``: ``"auto"`` (the model decides), ``"any"``/``"required"`` (a call to
        some tool), ``"none"``, or a tool's name (a call to that one). Calls are constrained by
        a grammar, so they always parse and name a bound tool with valid arguments.
        """
        formatted = format_tools(tools)
        choice = normalize_tool_choice(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(self, schema: Any = None, *, method: str = "json_schema",
                               include_raw: bool = False, strict: bool | None = None,
                               **kwargs: Any) -> Runnable[Any, Any]:
        """Answers parsed into ``schema`` (pydantic class, TypedDict or JSON schema dict).

        ``method``: ``"json_schema"`` (the answer is constrained to the schema),
        ``"function_calling"`` (through a forced tool call) or ``"json_mode"`` (any JSON
        object). An answer cut by ``max_tokens`` is an error that says so, never half an object.
        """
        return structured_output(self, schema, method, include_raw, strict, kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="ortmodels", ls_model_name=kwargs.get("model") or self.model_name or "",
            ls_model_type="chat",
        )
        if (temperature := kwargs.get("temperature", self.temperature)) is not None:
            params["ls_temperature"] = temperature
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := check_stop(stop) or self.stop:
            params["ls_stop"] = stops
        return params
