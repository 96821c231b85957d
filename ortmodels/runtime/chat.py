"""`OnnxChatModel`: a LangChain chat model that runs an exported decoder on ONNX Runtime.

messages → the checkpoint's chat template → token ids → decode loop with KV cache →
text pieces streamed as they become whole characters. `_generate` is built from
`_stream`, so streaming and invoking can never disagree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from ..base import BaseLLMModel
from ..config import load_settings
from ..engine.decoder import DecoderSession, DecoderState
from ..engine.detokenizer import TextAssembler
from ..engine.sampling import SamplingParams, choose_token
from ..errors import ModelNotLoadedError, OrtModelsError
from ..manifest import ChatSpec
from ..names import validate_model_name
from .chat_template import ChatTemplate
from .tokenization import load_tokenizer
from .variant import open_variant

logger = logging.getLogger(__name__)

#: Message classes and their chunk subclasses (a streamed reply fed back as history).
_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"), (HumanMessage, "user"), (AIMessage, "assistant"), (ToolMessage, "tool"),
)
_TEMPLATE_ROLES = frozenset({"system", "user", "assistant", "tool"})
_DEFAULT_MAX_TOKENS = 512
_CALL_OPTIONS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed"})  # CallOptions
_NONE = np.zeros(0, dtype=np.int64)


class ChatInputError(OrtModelsError, ValueError):
    """The conversation cannot be sent to the model as it is (empty, unknown role, too long)."""


def to_template_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the ``{"role", "content"}`` dicts chat templates expect."""
    if not messages:
        raise ChatInputError("No messages: pass at least one message, e.g. [HumanMessage('Hi')].")
    converted = []
    for index, message in enumerate(messages):
        role = message.role if isinstance(message, ChatMessage) else next(
            (name for cls, name in _ROLES if isinstance(message, cls)), None
        )
        if role not in _TEMPLATE_ROLES:
            raise ChatInputError(
                f"Message {index} has role {getattr(message, 'role', message.type)!r}; chat "
                f"templates know {', '.join(sorted(_TEMPLATE_ROLES))}."
            )
        if isinstance(message.content, list):
            kinds = {b.get("type") for b in message.content if isinstance(b, dict)} - {"text"}
            if kinds:
                raise ChatInputError(
                    f"Message {index} has {', '.join(sorted(map(str, kinds)))} content; this model reads text only."
                )
        converted.append({"role": role, "content": message.text})
    return converted


# Generation options: one bounded type each, shared by the model's fields and per-call checks.
MaxTokens = Annotated[int | None, Field(ge=1)]
Temperature = Annotated[float | None, Field(ge=0.0)]
TopP = Annotated[float | None, Field(gt=0.0, le=1.0)]
TopK = Annotated[int | None, Field(ge=0)]
RepetitionPenalty = Annotated[float | None, Field(gt=0.0)]


class CallOptions(BaseModel):
    """Generation options, checked with the same bounds whether set on the model or per call."""

    max_tokens: MaxTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    repetition_penalty: RepetitionPenalty = None
    seed: int | None = None


class _Loaded:
    """Everything `_load` opens, replaced as a whole so a reader never sees half of it."""

    def __init__(self, decoder: DecoderSession, tokenizer: Any, template: ChatTemplate,
                 spec: ChatSpec, variant: str, device: str) -> None:
        self.decoder, self.tokenizer, self.template = decoder, tokenizer, template
        self.spec, self.variant, self.device = spec, variant, device


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

    seed: int | None = None
    """Seed for sampling, for repeatable answers."""

    stop: list[str] | None = None
    """Strings that end the answer; they are not included in it."""

    truncate_prompt: bool = False
    """Drop the oldest prompt tokens when prompt + max_tokens exceed the context, instead of failing."""

    _state: _Loaded | None = PrivateAttr(default=None)

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
        settings = load_settings()
        opened = open_variant(Path(self.model_path_), "chat", self.device, self.dtype, settings)  # type: ignore[arg-type]
        self._state = _Loaded(
            DecoderSession(opened.session, opened.device), load_tokenizer(opened.folder / "tokenizer.json"),
            ChatTemplate.from_folder(opened.folder), opened.info.manifest.chat,  # type: ignore[union-attr]
            opened.variant, opened.device,
        )
        logger.info("Loaded chat model %s (%s on %s)", opened.info.name, opened.variant, opened.device)

    def _unload(self) -> None:
        self._state = None

    @property
    def loaded(self) -> _Loaded:
        state = self._state
        if state is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
        return state

    @property
    def variant(self) -> str | None:
        return self._state.variant if self._state else None

    # -- prompt -----------------------------------------------------------------------------

    def render_prompt(self, messages: list[BaseMessage]) -> str:
        """The exact text the model sees, rendered by the checkpoint's own chat template."""
        self._ensure_loaded()
        return self.loaded.template.render(to_template_messages(messages), add_generation_prompt=True)

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` by the model's own tokenizer (LangChain's default would use GPT-2's)."""
        self._ensure_loaded()
        return self.loaded.tokenizer.encode(text, add_special_tokens=False).ids

    def _prompt_ids(self, loaded: _Loaded, messages: list[BaseMessage], max_tokens: int | None) -> tuple[list[int], int]:
        """Prompt token ids and the number of tokens to generate, checked against the context."""
        prompt = loaded.template.render(to_template_messages(messages), add_generation_prompt=True)
        ids = loaded.tokenizer.encode(prompt, add_special_tokens=False).ids
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
        unknown = set(kwargs) - _CALL_OPTIONS
        if unknown:
            raise ChatInputError(f"Unknown generation option(s): {', '.join(sorted(unknown))}.")
        given = {name: getattr(self, name) for name in _CALL_OPTIONS}
        given.update({k: v for k, v in kwargs.items() if v is not None})
        try:
            checked = CallOptions(**given)
        except ValidationError as exc:
            raise ChatInputError(f"Bad generation option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}.") from None
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
        stops = tuple(s for s in [*(self.stop or []), *(stop or [])] if s)
        return params, checked.max_tokens, stops

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        started = time.perf_counter()
        self._ensure_loaded()
        loaded = self.loaded  # one consistent set even if another thread unloads meanwhile
        params, asked_max_tokens, stops = self._options(loaded, stop, kwargs)
        prompt_ids, max_tokens = self._prompt_ids(loaded, messages, asked_max_tokens)
        eos = set(loaded.spec.eos_token_ids)
        rng = np.random.default_rng(params.seed)
        assembler = TextAssembler(lambda ids: loaded.tokenizer.decode(ids, skip_special_tokens=True), stops)
        state = DecoderState()
        logits = loaded.decoder.forward(state, prompt_ids)
        generated = 0
        first_token_s: float | None = None
        finish_reason = "length"
        while generated < max_tokens:
            seen = np.asarray(state.tokens, dtype=np.int64) if params.repetition_penalty != 1.0 else _NONE
            token = choose_token(logits, params, seen, rng)
            if first_token_s is None:
                first_token_s = time.perf_counter() - started
            if token in eos:
                finish_reason = "stop"
                break
            generated += 1
            piece = assembler.add(token)
            if piece:
                yield self._chunk(piece, run_manager)
            if assembler.stopped:
                finish_reason = "stop"
                break
            if generated < max_tokens:
                logits = loaded.decoder.forward(state, [token])
        tail = assembler.flush()
        if tail:
            yield self._chunk(tail, run_manager)
        usage = UsageMetadata(input_tokens=len(prompt_ids), output_tokens=generated,
                              total_tokens=len(prompt_ids) + generated)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata={"finish_reason": finish_reason, "model_name": self.model_name,
                                   "variant": loaded.variant, "device": loaded.device,
                                   "time_to_first_token_s": first_token_s},
                chunk_position="last",
            ),
            generation_info={"finish_reason": finish_reason},
        )

    @staticmethod
    def _chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="ortmodels", ls_model_name=kwargs.get("model") or self.model_name or "",
            ls_model_type="chat",
        )
        if (temperature := kwargs.get("temperature", self.temperature)) is not None:
            params["ls_temperature"] = temperature
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := stop or self.stop:
            params["ls_stop"] = stops
        return params
