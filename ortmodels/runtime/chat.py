"""`OnnxChatModel`: a LangChain chat model that runs an exported decoder on ONNX Runtime.

LangChain's side only, over a `ChatRuntime` (which loads the model and owns its `ChatService`
and life cycle): the model's options as fields, LangChain messages and call options mapped
to the service's, and the service's events mapped to chunks. `_generate` is built from
`_stream`, so streaming and invoking can never disagree. The server, Ray and ``ortmodels
chat`` use the runtime itself, without LangChain.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import (
    BaseChatModel,
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
from ..config import Settings
from ..engine import EngineGauges
from ..errors import ChatInputError
from ..lifecycle import LifeCycle
from .chat_runtime import ChatRuntime, merge_options, over_defaults
from .events import ChatEvent, ReasoningDelta, TextDelta, ToolCalls
from .messages import to_service_messages
from .options import ChatOptions, ModelOptions, check_stop
from .service import ChatService, Prepared, find_chat_template
from .structured import (
    format_tools,
    normalize_tool_choice,
    structured_output,
    tool_call_chunks,
)
from .variant import model_place

logger = logging.getLogger(__name__)

__all__ = ["ChatRuntime", "ChatService", "OnnxChatModel", "find_chat_template"]

#: LangChain's standard parameters for a chat model's client (`langchain-tests` passes them):
#: accepted and unused, since nothing here goes over a network.
CLIENT_PARAMETERS = ("timeout", "max_retries", "api_key")


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

    Reasoning: a reasoning model's ``<think>`` block arrives apart from the answer, in
    ``additional_kwargs["reasoning_content"]`` (as ``ChatOllama(reasoning=True)`` gives it);
    ``enable_thinking`` and ``reasoning_budget`` switch and bound it.
    """

    model_config = ConfigDict(extra="forbid")

    streaming: bool = False
    """LangChain's switch (as ``ChatOpenAI(streaming=True)``), which LangChain reads to stream
    under ``invoke``; either way callbacks get each token as it comes (``invoke`` streams here)."""

    settings: Settings | None = Field(default=None, exclude=True, repr=False)
    """Settings for threads and file checks (``None``: read the environment at load); the
    manager passes its own."""

    _runtime: ChatRuntime = PrivateAttr()
    _named_by: str | None = PrivateAttr(default=None)

    @property
    def named_by(self) -> str | None:
        """The setting this model's name came from (``DEFAULT_CHAT_MODEL``), when none was given."""
        return self._named_by

    def _new_life_cycle(self) -> LifeCycle:
        """Made on its own (a user's subclass too), this model makes its runtime, whose life cycle
        runs this model's ``_load``; `over` then hands the face of a manager's runtime that one's."""
        self._runtime = ChatRuntime(model_path=self.model_path_ or ".", defaults=self, front=self, owner=self)
        return self._runtime.life_cycle

    def _load(self) -> None:
        self._runtime._load()

    def _unload(self) -> None:
        self._runtime._unload()

    @classmethod
    def over(cls, runtime: ChatRuntime) -> OnnxChatModel:
        """The LangChain face of a runtime the manager caches: one life cycle, one service; the
        runtime then reads its model options (and the fields it loads with) from this object."""
        model = cls(model_name=runtime.model_name, model_path=runtime.model_path, device=runtime.device,
                    dtype=runtime.dtype, version=runtime.version, settings=runtime.settings)
        model._runtime, model._life = runtime, runtime.life_cycle
        runtime.defaults = runtime.front = model
        return model

    @model_validator(mode="before")
    @classmethod
    def _known_keywords(cls, data: Any) -> Any:
        """A misspelt option (``max_token=3``) is refused, as a call's own is, not left at its
        default; LangChain's standard client parameters (``timeout``, ``max_retries``,
        ``api_key``), which a model with no network has no use for, are taken and dropped."""
        if not isinstance(data, dict):
            return data
        known = {*cls.model_fields, *(f.alias for f in cls.model_fields.values() if f.alias)}
        unknown = [str(key) for key in data if key not in known and key not in CLIENT_PARAMETERS]
        if unknown:  # the options named are this class's own, not LangChain's (callbacks, tags, ...)
            options = sorted(field.alias or name for name, field in cls.model_fields.items()
                             if name not in BaseChatModel.model_fields)
            raise ChatInputError(f"Unknown option{'s' if len(unknown) > 1 else ''} for {cls.__name__}: "
                                 f"{', '.join(unknown)}. Options: {', '.join(options)}.")
        return {key: value for key, value in data.items() if key not in CLIENT_PARAMETERS}

    @model_validator(mode="after")
    def _resolve_folder(self) -> OnnxChatModel:
        self.model_name, self.model_path_, self._named_by = model_place(
            self.model_name, self.model_path_, ChatRuntime.default_setting, self.settings)
        self._runtime.follow(self)
        return self

    @property
    def _llm_type(self) -> str:
        return "ortmodels-onnx-chat"

    @property
    def runtime(self) -> ChatRuntime:
        """The LangChain-free model under this adapter (what the server and the CLI use)."""
        return self._runtime

    def memory_bytes(self) -> int:
        """The variant's weights plus what the engine holds now: KV slots and the prompt cache."""
        return self._runtime.memory_bytes()

    @property
    def loaded(self) -> ChatService:
        """The loaded model's chat service (engine, tokenizer, template, spec)."""
        return self._runtime.loaded

    @property
    def variant(self) -> str | None:
        return self._runtime.variant

    @property
    def kv_bytes_per_token(self) -> int | None:
        """KV cache bytes one token takes in the loaded graph (``MODEL_KV_DTYPE`` halves it with fp16);
        sliding-window layers, which hold their window only, are not counted (`Engine.kv_bytes_per_token`)."""
        return self._runtime.kv_bytes_per_token

    def engine_gauges(self) -> EngineGauges | None:
        """The engine's figures now (``/metrics``); ``None`` while not loaded."""
        return self._runtime.engine_gauges()

    # -- options and prompts ----------------------------------------------------------------

    def options_over_defaults(self, stop: Any = None, **kwargs: Any) -> ChatOptions:
        """A call's options: its keyword arguments (any `ChatOptions` field; ``None`` leaves the
        model's own; tools in any form `bind_tools` takes) over this object's fields (a
        model_copy's own too), ``stop`` added to the model's, checked once."""
        tools = kwargs.get("tools")
        if tools and not all(isinstance(t, dict) and "function" in t for t in tools):
            kwargs["tools"] = format_tools(tools)
        return merge_options(self, stop, kwargs)

    def with_defaults(self, options: ChatOptions) -> ChatOptions:
        """``options`` (a server's, a replica's) over this model's own defaults: only the options
        the caller set."""
        return over_defaults(self, options)

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
        offered as `bind_tools` offers them): with ``truncate_prompt`` (and ``max_tokens``), once
        its oldest tokens are dropped to fit; without, the whole prompt, which fails a call when
        it does not fit."""
        self._ensure_loaded()
        options = self.options_over_defaults(**kwargs, **({"tools": tools} if tools else {}))
        return self.loaded.prompt_ids(to_service_messages(self._convert_input(messages).to_messages()), options)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None,
                                     **kwargs: Any) -> int:
        """How many prompt tokens a call with these messages runs (its ``usage`` input tokens),
        tools and the chat template's markup included."""
        return len(self.prompt_token_ids(messages, tools, **kwargs))

    def _langchain_call(self, messages: list[BaseMessage], stop: Any,
                        kwargs: dict[str, Any]) -> Callable[[ChatService], Prepared]:
        return lambda service: service.prepare(to_service_messages(messages), self.options_over_defaults(stop, **kwargs))

    # -- the service's events (the runtime's, under this model's call guard) -------------------

    def achat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> AsyncIterator[ChatEvent]:
        """The service's events for a conversation of message dicts, over this model's defaults
        (see `ChatRuntime.achat_events`)."""
        return self._aguarded_iter(self._runtime.aevents(lambda s: s.prepare(messages, self.with_defaults(options))))

    def atext_events(self, prompt: str, options: ChatOptions) -> AsyncIterator[ChatEvent]:
        """`achat_events` for a plain prompt, without the chat template (``/v1/completions``)."""
        return self._aguarded_iter(self._runtime.aevents(lambda s: s.prepare_text(prompt, self.with_defaults(options))))

    def chat_events(self, messages: list[dict[str, Any]], options: ChatOptions) -> Iterator[ChatEvent]:
        """`achat_events` for a caller without an event loop."""
        return self._guarded_iter(self._runtime.events(lambda s: s.prepare(messages, self.with_defaults(options))))

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
        for event in self._runtime.events(self._langchain_call(messages, stop, kwargs)):
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
        async with aclosing(self._runtime.aevents(self._langchain_call(messages, stop, kwargs))) as events:
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
        events = self._runtime.aevents(lambda s: s.prepare_text(prompt, self.options_over_defaults(stop, **options)))
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
        if isinstance(event, ReasoningDelta):  # as ChatOllama(reasoning=True) carries it
            return ChatGenerationChunk(message=AIMessageChunk(content="",
                                                              additional_kwargs={"reasoning_content": event.text}))
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
