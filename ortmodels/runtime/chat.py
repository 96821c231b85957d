"""`OnnxChatModel`: a LangChain chat model that runs an exported decoder on ONNX Runtime.

messages → the checkpoint's chat template → token ids → decode loop with KV cache →
text pieces streamed as they become whole characters. `_generate` is built from
`_stream`, so streaming and invoking can never disagree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Annotated, Any

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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..base import BaseLLMModel
from ..config import Settings, load_settings
from ..engine import DecoderSession, Engine, Finished, Request, SamplingParams
from ..engine.chat_template import ChatTemplate
from ..engine.constraints import GrammarCompiler
from ..engine.prompt_tokens import PromptTokenizer
from ..engine.sampling import TokenLogprob
from ..engine.session import output_width
from ..engine.tokenizer import (
    check_unicode,
    check_vocabulary,
    highest_id,
    load_tokenizer,
    max_token_chars,
)
from ..engine.toolcalls import FORMATS, detect_format
from ..errors import ChatInputError, ModelFileError, ModelNotLoadedError
from ..store.manifest import ChatSpec
from ..store.names import validate_model_name
from .messages import check_stop, keep_tail, to_template_messages
from .structured import (
    OUTPUT_OPTIONS,
    OutputPlan,
    format_tools,
    logprobs_of,
    normalize_tool_choice,
    structured_output,
    tool_call_chunks,
)
from .variant import open_variant

logger = logging.getLogger(__name__)

_DEFAULT_MAX_TOKENS = 512


# Generation options: one bounded type each, shared by the model's fields and per-call checks.
# Non-finite values are refused: an infinite temperature or penalty samples uniformly.
MaxTokens = Annotated[int | None, Field(ge=1, le=1 << 24)]
Temperature = Annotated[float | None, Field(ge=0.0, allow_inf_nan=False)]
TopP = Annotated[float | None, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
TopK = Annotated[int | None, Field(ge=0)]
RepetitionPenalty = Annotated[float | None, Field(gt=0.0, allow_inf_nan=False)]
Seed = Annotated[int | None, Field(ge=0, lt=1 << 64)]


class CallOptions(BaseModel):
    """Generation options, checked with the same bounds whether set on the model or per call."""

    model_config = ConfigDict(extra="forbid", strict=False)

    max_tokens: MaxTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    repetition_penalty: RepetitionPenalty = None
    seed: Seed = None


def find_chat_template(export_folder: Path, checkpoint: Path) -> ChatTemplate | ModelFileError:
    """The export's chat template, else one added to the checkpoint folder since the export (no
    re-export needed), else the error that says where it belongs."""
    for folder in (export_folder, checkpoint):
        try:
            return ChatTemplate.from_folder(folder)
        except ModelFileError:
            continue
    return ModelFileError(
        checkpoint / "chat_template.jinja",
        "No chat template: this checkpoint has neither chat_template.jinja nor a chat_template in "
        "tokenizer_config.json",
        "Add the model's chat template as chat_template.jinja next to config.json (no re-export needed), "
        "or use plain-text completion (/v1/completions)",
    )


def _logprob_entry(tokenizer: Any, logprob: TokenLogprob) -> dict[str, Any]:
    """One token's log-probability as OpenAI writes it (-9999.0 for a token the grammar banned)."""
    def entry(token_id: int, value: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        return {"token": text, "bytes": list(text.encode("utf-8")), "logprob": max(value, -9999.0)}

    return {**entry(logprob.token_id, logprob.logprob),
            "top_logprobs": [entry(token, value) for token, value in logprob.top]}


class _Loaded:
    """Everything `_load` opens, replaced as a whole so a reader never sees half of it."""

    def __init__(self, engine: Engine, tokenizer: Any, template: ChatTemplate | ModelFileError,
                 spec: ChatSpec, variant: str, device: str, grammars: GrammarCompiler) -> None:
        self.engine, self.tokenizer, self._template = engine, tokenizer, template
        self.spec, self.variant, self.device = spec, variant, device
        self.grammars = grammars
        self.prompt_tokens = PromptTokenizer(tokenizer)
        """Chat prompts (only the template makes control tokens), text, and raw prompts as ids."""
        source = template.source if isinstance(template, ChatTemplate) else ""
        self.tool_format = FORMATS[spec.tool_format or detect_format(source)]
        self.prompt_chars = spec.context_length * max_token_chars(tokenizer)
        """More characters than this cannot fit in the context, whatever they say."""

    @property
    def template(self) -> ChatTemplate:
        """The chat template, or the error that says where to put one (plain-text completion
        works without it)."""
        if isinstance(self._template, ModelFileError):
            raise self._template
        return self._template


class OnnxChatModel(BaseLLMModel):
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
    """

    max_tokens: MaxTokens = None
    """Most tokens to generate (default: the checkpoint's ``max_new_tokens``, else 512, within the context)."""

    temperature: Temperature = None
    """0 is greedy; default from ``generation_config.json`` (greedy unless it samples)."""

    top_p: TopP = None
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches this."""

    top_k: TopK = None
    """Sample among the k likeliest tokens only (0: no limit)."""

    repetition_penalty: RepetitionPenalty = None
    """Above 1 discourages repeating tokens already in the prompt or answer."""

    seed: Seed = None
    """Seed for sampling, for repeatable answers."""

    stop: list[str] | None = None
    """Strings that end the answer; they are not included in it (one string is one stop string)."""

    truncate_prompt: bool = False
    """Drop the oldest prompt tokens when prompt + max_tokens exceed the context, instead of failing."""

    settings: Settings | None = Field(default=None, exclude=True, repr=False)
    """Settings for threads and file checks (``None``: read the environment at load); the
    manager passes its own."""

    _state: _Loaded | None = PrivateAttr(default=None)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: object) -> object:
        return None if value is None else check_stop(value)

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
        opened = open_variant(Path(self.model_path_), "chat", self.device, self.dtype, settings)  # type: ignore[arg-type]
        tokenizer = load_tokenizer(opened.folder / "tokenizer.json")
        decoder = DecoderSession(opened.session, opened.device)
        spec: ChatSpec = opened.info.manifest.chat  # type: ignore[union-attr]
        special = {f"eos_token_ids[{i}]": t for i, t in enumerate(spec.eos_token_ids)}
        check_vocabulary(opened.folder, tokenizer, output_width(opened.session, "logits"),
                         {**special, "bos_token_id": spec.bos_token_id})
        template = find_chat_template(opened.folder, Path(self.model_path_))
        engine = Engine(
            decoder, tokenizer, max_batch=settings.model_max_batch, kv_cache_bytes=settings.model_kv_cache,
            prompt_cache_bytes=settings.model_prompt_cache, context_length=spec.context_length,
            speculative=settings.speculates(opened.variant),
        )
        grammars = GrammarCompiler(opened.folder / "tokenizer.json",
                                   output_width(opened.session, "logits") or highest_id(tokenizer) + 1,
                                   spec.eos_token_ids)
        self._state = _Loaded(engine, tokenizer, template, spec, opened.variant, opened.device, grammars)
        logger.info("Loaded chat model %s (%s on %s, %s KV cache: %d bytes per token)", opened.info.name,
                    opened.variant, opened.device, opened.kv_dtype, engine.kv_bytes_per_token)

    def _unload(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.engine.close()  # unload waits for running calls, so nothing is cut off here

    def memory_bytes(self) -> int:
        """The variant's weights plus what the engine holds now: KV slots and the prompt cache."""
        state = self._state
        engine_bytes = state.engine.memory_bytes() if state is not None else 0
        return super().memory_bytes() + engine_bytes

    @property
    def loaded(self) -> _Loaded:
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

    # -- prompt -----------------------------------------------------------------------------

    def render_prompt(self, messages: list[BaseMessage]) -> str:
        """The exact text the model sees, rendered by the checkpoint's own chat template."""
        self._ensure_loaded()
        return self.loaded.template.render(to_template_messages(messages), add_generation_prompt=True)

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
        loaded = self.loaded
        output = {k: v for k, v in kwargs.items() if k in OUTPUT_OPTIONS}
        if tools:
            output["tools"] = tools
        plan = OutputPlan.from_options(output, loaded.tool_format, loaded.grammars, loaded.tokenizer)
        converted = plan.messages(to_template_messages(self._convert_input(messages).to_messages(),
                                                       loaded.tool_format))
        return self._prompt_tokens(loaded, converted, plan.template_vars)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None,
                                     **kwargs: Any) -> int:
        """How many prompt tokens a call with these messages runs (its ``usage`` input tokens),
        tools and the chat template's markup included."""
        return len(self.prompt_token_ids(messages, tools, **kwargs))

    def _prompt_ids(self, loaded: _Loaded, converted: list[dict[str, Any]], max_tokens: int | None,
                    template_vars: dict[str, Any] | None = None) -> tuple[list[int], int]:
        """Prompt token ids and the number of tokens to generate, checked against the context."""
        return self._fit_context(loaded, self._prompt_tokens(loaded, converted, template_vars), max_tokens)

    def _prompt_tokens(self, loaded: _Loaded, converted: list[dict[str, Any]],
                       template_vars: dict[str, Any] | None = None) -> list[int]:
        """The rendered conversation's ids: the caller's text is escaped before rendering, so the
        template's markup is the only source of special tokens (`PromptTokenizer`)."""
        context = loaded.spec.context_length
        bound = loaded.prompt_chars
        if sum(len(m["content"]) for m in converted) > bound:  # decided before any tokenizing
            if not self.truncate_prompt:
                raise ChatInputError(
                    f"The conversation has {sum(len(m['content']) for m in converted):,} characters; the "
                    f"context of {context} tokens holds at most {bound:,} with this tokenizer. Shorten "
                    "the conversation, or set truncate_prompt=True to drop the oldest text."
                )
            converted = keep_tail(converted, bound)
        escape = loaded.prompt_tokens.escape
        prompt = loaded.template.render(escape(converted), add_generation_prompt=True, max_chars=2 * bound,
                                        **escape(template_vars or {}))
        if len(prompt) > bound:
            if not self.truncate_prompt:
                raise ChatInputError(
                    f"The rendered prompt has {len(prompt):,} characters, more than the context of "
                    f"{context} tokens can hold. Shorten the conversation, or set truncate_prompt=True."
                )
            prompt = prompt[-bound:]
        return loaded.prompt_tokens.encode_chat(prompt)

    def _fit_context(self, loaded: _Loaded, ids: list[int], max_tokens: int | None) -> tuple[list[int], int]:
        """Prompt ids and tokens to generate within the context: the overflow is refused, naming
        it in tokens, or (``truncate_prompt``) the oldest tokens are dropped."""
        context = loaded.spec.context_length
        if max_tokens is None:  # not asked for: as many as fit, up to the default
            default = int(loaded.spec.generation.get("max_new_tokens") or _DEFAULT_MAX_TOKENS)
            max_tokens = max(1, min(default, context - len(ids)))
        overflow = len(ids) + max_tokens - context
        if overflow > 0:
            if max_tokens >= context:
                raise ChatInputError(
                    f"max_tokens ({max_tokens}) alone fills the context of {context} tokens; lower it."
                )
            if not self.truncate_prompt:
                raise ChatInputError(
                    f"Prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds the context of "
                    f"{context} tokens by {overflow}. Shorten the conversation, lower max_tokens, or "
                    "set truncate_prompt=True to drop the oldest tokens."
                )
            ids = ids[overflow:]
        return ids, max_tokens

    # -- generation -------------------------------------------------------------------------

    def _options(
        self, loaded: _Loaded, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[SamplingParams, int | None, tuple[str, ...]]:
        given = {name: getattr(self, name) for name in CallOptions.model_fields}
        given.update({k: v for k, v in kwargs.items() if v is not None})
        try:
            checked = CallOptions(**given)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = error["loc"][0] if error["loc"] else "?"
            if error["type"] == "extra_forbidden":
                raise ChatInputError(
                    f"Unknown generation option: {name}. Options: {', '.join(CallOptions.model_fields)}, stop."
                ) from None
            raise ChatInputError(f"Bad generation option {name}={error.get('input')!r}: {error['msg']}.") from None
        defaults = loaded.spec.generation

        def pick(name: str, default: Any) -> Any:
            for value in (getattr(checked, name), defaults.get(name)):
                if value is not None:
                    return value
            return default

        if checked.temperature is not None:
            temperature = float(checked.temperature)
        elif defaults.get("do_sample"):  # as in transformers: the config samples only if it says so
            temperature = float(defaults.get("temperature", 1.0))
        else:
            temperature = 0.0
        params = SamplingParams(
            temperature=temperature,
            top_p=float(pick("top_p", 1.0)),
            top_k=int(pick("top_k", 50)),  # transformers' default when sampling
            repetition_penalty=float(pick("repetition_penalty", 1.0)),
            seed=pick("seed", None),
        )
        stops = tuple(s for s in [*(self.stop or []), *check_stop(stop)] if s)
        return params, checked.max_tokens, stops

    def _request(self, messages: list[BaseMessage], stop: Any,
                 kwargs: dict[str, Any]) -> tuple[_Loaded, Request, OutputPlan]:
        """The engine request for a conversation: options checked, tools or a response format
        turned into a grammar, prompt rendered and tokenized."""
        self._ensure_loaded()
        loaded = self.loaded  # one consistent set even if another thread unloads meanwhile
        kwargs = dict(kwargs)  # the caller's dict stays as it was
        output = {k: kwargs.pop(k) for k in OUTPUT_OPTIONS if k in kwargs}
        params, asked_max_tokens, stops = self._options(loaded, stop, kwargs)
        plan = OutputPlan.from_options(output, loaded.tool_format, loaded.grammars, loaded.tokenizer)
        plan.stop = stops
        converted = plan.messages(to_template_messages(messages, loaded.tool_format))
        prompt_ids, max_tokens = self._prompt_ids(loaded, converted, asked_max_tokens, plan.template_vars)
        request = Request(prompt_ids, params, max_tokens=max_tokens, stop=stops,
                          eos_token_ids=loaded.spec.eos_token_ids, processor=plan.processor,
                          logprobs=logprobs_of(output))
        return loaded, request, plan

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The engine's events for this conversation as LangChain chunks; other callers' requests
        share its decode steps. Closing the stream early cancels the request at once."""
        started, first = time.perf_counter(), None
        loaded, request, plan = self._request(messages, stop, kwargs)
        text: list[str] = []
        for event in loaded.engine.generate(request):
            if first is None and not isinstance(event, Finished) and event.token_ids:
                first = time.perf_counter() - started
            for chunk in self._to_chunks(event, loaded, plan, text, first):
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
        started = time.perf_counter()
        prepared = await asyncio.get_running_loop().run_in_executor(None, self._request, messages, stop, kwargs)
        async with aclosing(self._achunks(started, *prepared)) as chunks:
            async for chunk in chunks:
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _achunks(self, started: float, loaded: _Loaded, request: Request,
                       plan: OutputPlan) -> AsyncIterator[ChatGenerationChunk]:
        """A request's engine events as chunks, on the event loop (chat and plain text alike);
        closing it cancels the request."""
        first: float | None = None
        text: list[str] = []
        async for event in loaded.engine.agenerate(request):
            if first is None and not isinstance(event, Finished) and event.token_ids:
                first = time.perf_counter() - started
            for chunk in self._to_chunks(event, loaded, plan, text, first):
                yield chunk

    # -- plain text, without the chat template ----------------------------------------------

    def astream_text(self, prompt: str, *, stop: Any = None, **options: Any) -> AsyncIterator[AIMessageChunk]:
        """Continue ``prompt`` as it is, without the chat template (OpenAI's ``/v1/completions``).

        The same engine, options, stop strings and call guard as `astream`; the last chunk
        carries ``usage_metadata`` and ``response_metadata["finish_reason"]``. Closing the
        iterator (or cancelling its task) cancels the request.
        """
        return self._aguarded_iter(self._astream_text(prompt, stop, options))

    def _text_request(self, prompt: str, stop: Any, kwargs: dict[str, Any]) -> tuple[_Loaded, Request]:
        if not isinstance(prompt, str) or not prompt:
            raise ChatInputError("The prompt must be a non-empty string.")
        try:
            check_unicode(prompt, "The prompt")
        except ValueError as exc:
            raise ChatInputError(str(exc)) from None
        self._ensure_loaded()
        loaded = self.loaded
        params, asked_max_tokens, stops = self._options(loaded, stop, kwargs)
        if len(prompt) > loaded.prompt_chars:
            if not self.truncate_prompt:
                raise ChatInputError(
                    f"The prompt has {len(prompt):,} characters, more than the context of "
                    f"{loaded.spec.context_length} tokens can hold. Shorten it, or set truncate_prompt=True."
                )
            prompt = prompt[-loaded.prompt_chars:]
        ids = loaded.prompt_tokens.encode_raw(prompt)  # the caller's whole prompt: its special tokens, a BOS
        ids, max_tokens = self._fit_context(loaded, ids, asked_max_tokens)
        return loaded, Request(ids, params, max_tokens=max_tokens, stop=stops,
                               eos_token_ids=loaded.spec.eos_token_ids)

    async def _astream_text(self, prompt: str, stop: Any, kwargs: dict[str, Any]) -> AsyncIterator[AIMessageChunk]:
        started = time.perf_counter()
        loaded, request = await asyncio.get_running_loop().run_in_executor(
            None, self._text_request, prompt, stop, kwargs
        )
        async with aclosing(self._achunks(started, loaded, request, OutputPlan())) as chunks:
            async for chunk in chunks:
                yield chunk.message  # type: ignore[misc]

    def _to_chunks(self, event: Any, loaded: _Loaded, plan: OutputPlan, text: list[str],
                   first_token_s: float | None) -> list[ChatGenerationChunk]:
        """One engine event as LangChain chunks (the one mapping, for sync and async streams).

        With tools offered, the text is held until the end and read as content plus calls:
        a call arrives whole, as ``tool_call_chunks`` that merge into ``AIMessage.tool_calls``.
        """
        if not isinstance(event, Finished):
            if plan.tool_format is not None:
                text.append(event.text)
                return []
            if not event.text and not event.logprobs:
                return []
            metadata = {"logprobs": {"content": [_logprob_entry(loaded.tokenizer, lp) for lp in event.logprobs]}} \
                if event.logprobs else {}
            return [ChatGenerationChunk(message=AIMessageChunk(content=event.text, response_metadata=metadata))]
        chunks = []
        reason = event.reason
        if plan.tool_format is not None:
            content, calls, reason = plan.finish("".join(text), reason)
            if content or calls:
                chunks.append(ChatGenerationChunk(message=AIMessageChunk(
                    content=content, tool_call_chunks=tool_call_chunks(calls))))
        usage = UsageMetadata(
            input_tokens=event.prompt_tokens, output_tokens=event.completion_tokens,
            total_tokens=event.prompt_tokens + event.completion_tokens,
            input_token_details={"cache_read": event.cached_tokens},
        )
        first = first_token_s if first_token_s is not None else event.time_to_first_token_s
        chunks.append(ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata={"finish_reason": reason, "model_name": self.model_name,
                                   "variant": loaded.variant, "device": loaded.device,
                                   "time_to_first_token_s": first},
                chunk_position="last",
            ),
            generation_info={"finish_reason": reason},
        ))
        return chunks

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
