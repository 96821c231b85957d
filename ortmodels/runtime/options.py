"""`ChatOptions`: every generation option once, with its bound and what it does.

The chat service reads them, the LangChain adapter takes the model-level ones as its fields
(and every one per call), and the server's protocol takes the sampling and log-probability
ones as its own fields, adding only OpenAI's spellings (``max_completion_tokens``) and
OpenAI's shapes for tools and response formats. Non-finite numbers are refused: an infinite
temperature or penalty samples uniformly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..engine.dry import MAX_BREAKER_CHARS
from ..engine.tokenizer import check_unicode
from ..errors import ChatInputError

#: The most stop strings one call may give (each is looked for after every token).
MAX_STOP_STRINGS = 16


def check_stop(stop: object, where: str = "stop") -> list[str]:
    """Stop strings as a list: one string is one stop string (as LangChain's other models take it)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise ChatInputError(f"{where} must be a string or a list of strings, not {type(stop).__name__}.")
    if len(stop) > MAX_STOP_STRINGS:
        raise ChatInputError(f"{where} has {len(stop)} strings; give at most {MAX_STOP_STRINGS}.")
    for index, item in enumerate(stop):
        if not isinstance(item, str):
            raise ChatInputError(
                f"{where}[{index}] is {type(item).__name__} {item!r:.40}; stop strings must be strings, "
                "e.g. stop=['\\n\\n']."
            )
        try:
            check_unicode(item, f"{where}[{index}]")
        except ValueError as exc:
            raise ChatInputError(str(exc)) from None
    return list(stop)


#: The most tokens one answer may ask for (a bound, not a default).
MAX_TOKENS_BOUND = 1 << 24


#: The most DRY sequence breakers one call may give (each costs a scan of the vocabulary, once).
MAX_BREAKERS = 32


MaxTokens = Annotated[int | None, Field(ge=1, le=MAX_TOKENS_BOUND, strict=True)]
"""A token count to generate (OpenAI spells it ``max_tokens`` and ``max_completion_tokens``)."""


class SamplingOptions(BaseModel):
    """How tokens are chosen and how many: per call, or as a model's defaults."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: MaxTokens = Field(
        default=None, description=(
            "Most tokens to generate (default: the checkpoint's ``max_new_tokens``, else 512, within the "
            'context).'
        ))

    temperature: float | None = Field(
        default=None, strict=True, ge=0.0, le=2.0, allow_inf_nan=False, description=(
            '0 is greedy; default from ``generation_config.json`` (greedy unless it samples). At most 2, as '
            'OpenAI bounds it: above that an answer is noise.'
        ))

    top_p: float | None = Field(
        default=None, strict=True, gt=0.0, le=1.0, allow_inf_nan=False, description=(
            'Nucleus sampling: keep the smallest set of tokens whose probability reaches this.'
        ))

    top_k: int | None = Field(default=None, strict=True, ge=0,
                              description='Sample among the k likeliest tokens only (0: no limit).')

    repetition_penalty: float | None = Field(
        default=None, strict=True, gt=0.0, allow_inf_nan=False, description=(
            'Above 1 discourages repeating tokens already in the prompt or answer.'
        ))

    seed: int | None = Field(default=None, strict=True, ge=0, lt=1 << 64,
                             description='Seed for sampling, for repeatable answers.')

    dry_multiplier: float | None = Field(
        default=None, strict=True, ge=0.0, allow_inf_nan=False, description=(
            'DRY ("don\'t repeat yourself", llama.cpp\'s sampler): a token that would extend a repeat of '
            'earlier text loses ``dry_multiplier * dry_base ** (length - dry_allowed_length)`` from its '
            'logit. 0 (the default) is off, also for structured output (benchmarks/bench_dry.py: it ends most '
            "of the sample's loops but changes answers that were valid); 0.8 is llama.cpp's usual setting."
        ))

    dry_base: float | None = Field(
        default=None, strict=True, ge=1.0, allow_inf_nan=False, description=(
            "How fast DRY's penalty grows with the repeat's length (default 1.75)."
        ))

    dry_allowed_length: int | None = Field(
        default=None, strict=True, ge=0, le=MAX_TOKENS_BOUND, description=(
            'A repeat may grow to this many tokens before DRY penalizes the token that would extend it '
            '(default 2).'
        ))

    dry_penalty_last_n: int | None = Field(
        default=None, strict=True, ge=-1, le=MAX_TOKENS_BOUND, description=(
            'How many of the last tokens (prompt included) DRY searches for repeats: -1 (the default) the '
            'whole context, 0 off.'
        ))

    dry_sequence_breakers: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_BREAKERS, description=(
            'Strings that end a repeat for DRY, matched against token text as llama.cpp matches them (default '
            '``["\\n", ":", "\\"", "*"]``): at least one, each 1 to 40 characters.'
        ))

    @field_validator("dry_sequence_breakers")
    @classmethod
    def _breakers(cls, value: list[str] | None) -> list[str] | None:
        for index, item in enumerate(value or ()):
            if not 1 <= len(item) <= MAX_BREAKER_CHARS:
                raise ChatInputError(
                    f"dry_sequence_breakers[{index}] has {len(item)} characters; a sequence breaker has 1 to "
                    f"{MAX_BREAKER_CHARS}, e.g. [\"\\n\", \":\"].")
            try:
                check_unicode(item, f"dry_sequence_breakers[{index}]")
            except ValueError as exc:
                raise ChatInputError(str(exc)) from None
        return value


LOGPROBS_WITH_TOOLS = (
    "logprobs cannot be given with tools: an answer with tools is read as a whole into content and "
    "tool calls, with no tokens to attach log-probabilities to. Leave out logprobs / top_logprobs, "
    "or the tools (or set tool_choice='none')."
)


def check_logprobs_with_tools(asked: bool, tools: object, tool_choice: object) -> None:
    """The one rule between log-probabilities (``asked``) and tools (`LOGPROBS_WITH_TOOLS`)."""
    if asked and tools and tool_choice != "none":
        raise ChatInputError(LOGPROBS_WITH_TOOLS)


class LogprobOptions(BaseModel):
    """Log-probabilities of the answer's tokens (not with tools: a tool answer is read whole)."""

    model_config = ConfigDict(extra="forbid")

    logprobs: bool | None = Field(default=None, strict=True, description="Give each generated token's log-probability.")

    top_logprobs: int | None = Field(
        default=None, ge=0, le=20, strict=True, description=(
            'With each token, this many likeliest alternatives and theirs (implies ``logprobs``).'
        ))


class StopOptions(BaseModel):
    """Where the answer ends early (the server's protocol takes this field as it is)."""

    model_config = ConfigDict(extra="forbid")

    stop: list[str] | None = Field(
        default=None, description=(
            'Strings that end the answer; they are not included in it (one string is one stop string; at most '
            '16; an empty one, which would end every answer at once, is dropped).'
        ))

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: object) -> object:
        return None if value is None else [s for s in check_stop(value) if s]


class ReasoningOptions(BaseModel):
    """Reasoning models' ``<think>`` (a model whose template has none ignores them)."""

    model_config = ConfigDict(extra="forbid")

    enable_thinking: bool | None = Field(
        default=None, strict=True, description=(
            "The chat template's ``enable_thinking`` (Qwen3's switch; the server also takes it in "
            "``chat_template_kwargs``): False asks the model not to reason, True to reason; default: the "
            "template's own (Qwen3 reasons). With it False, a block the prompt still opens is closed at once."
        ))

    reasoning_budget: int | None = Field(
        default=None, strict=True, ge=-1, le=MAX_TOKENS_BOUND, description=(
            "Most reasoning tokens before the closing ``</think>`` is forced and the answer follows, as "
            "llama-server's ``--reasoning-budget``: -1 (the default) no limit, 0 no reasoning at all. "
            "``max_tokens`` counts reasoning and answer together."
        ))

    def thinking(self) -> bool | None:
        """The ``enable_thinking`` the template gets: a budget of 0 turns thinking off."""
        return False if self.reasoning_budget == 0 else self.enable_thinking

    def budget(self) -> int | None:
        """The reasoning tokens allowed (``None``: no limit); thinking turned off is a budget of 0."""
        if self.thinking() is False:
            return 0
        return None if self.reasoning_budget in (None, -1) else self.reasoning_budget


#: The options that are chat template variables (the server also takes them in ``chat_template_kwargs``).
TEMPLATE_OPTIONS = ("enable_thinking",)

#: OpenAI's ``reasoning_effort`` levels as `ReasoningOptions`: ``none`` and ``minimal`` switch thinking
#: off (as vLLM, Ollama and LiteLLM read them for Qwen3-style templates); ``low`` and ``medium`` think
#: within a reasoning budget (mlx-serve's 512 and 2048 tokens); ``high`` thinks without one.
REASONING_EFFORTS: dict[str, dict[str, Any]] = {
    "none": {"enable_thinking": False, "reasoning_budget": 0},
    "minimal": {"enable_thinking": False, "reasoning_budget": 0},
    "low": {"enable_thinking": True, "reasoning_budget": 512},
    "medium": {"enable_thinking": True, "reasoning_budget": 2048},
    "high": {"enable_thinking": True, "reasoning_budget": -1},
}


def effort_options(effort: object, where: str = "reasoning_effort") -> dict[str, Any]:
    """The `ReasoningOptions` of a ``reasoning_effort`` level (`REASONING_EFFORTS`); a level this
    server cannot give (OpenAI's ``xhigh``, ``max``: more than ``high``'s unbounded reasoning) or
    an unknown one is a `ChatInputError` naming ``where``."""
    if isinstance(effort, str) and effort in REASONING_EFFORTS:
        return dict(REASONING_EFFORTS[effort])
    levels = ", ".join(REASONING_EFFORTS)
    if effort in ("xhigh", "max"):
        raise ChatInputError(f"{where}={effort!r} asks for more than this server gives: 'high' already reasons "
                             f"without a budget. Give one of {levels}, or a reasoning_budget.")
    raise ChatInputError(f"{where}={effort!r:.40} is not a reasoning effort; give one of {levels}.")


class PromptOptions(BaseModel):
    """What happens to a prompt longer than the context: a model's default, a call's option, and a
    field of every server route's body (the overflow's error names it)."""

    truncate_prompt: bool = Field(
        default=False, strict=True, description=(
            'Drop the oldest prompt tokens when prompt + max_tokens exceed the context, instead of failing.'
        ))


class ModelOptions(StopOptions, SamplingOptions, ReasoningOptions, PromptOptions):
    """The options a chat model holds as its defaults (the LangChain adapter's fields)."""


class ChatOptions(ModelOptions, LogprobOptions):
    """One call's options, as the chat service takes them."""

    tools: list[dict[str, Any]] | None = Field(
        default=None, description=(
            'OpenAI function dicts the model may call (see `output_plan.OutputPlan`).'
        ))

    tool_choice: Any = Field(
        default=None, description=(
            "``auto``, ``required``/``any``, ``none`` or a tool's name (any spelling OpenAI or LangChain "
            'uses).'
        ))

    parallel_tool_calls: bool | None = Field(default=None, strict=True,
                                             description='Let one answer call several tools.')

    response_format: dict[str, Any] | None = Field(
        default=None, description=(
            '``{"type": "json_object"}``, ``json_schema``, ``regex``, ``lark`` or ``gbnf`` (llama.cpp\'s '
            'grammars, read as Lark): a grammar the answer follows.'
        ))

    @model_validator(mode="after")
    def _logprobs_without_tools(self) -> ChatOptions:
        check_logprobs_with_tools(self.logprob_alternatives() is not None, self.tools, self.tool_choice)
        return self

    def logprob_alternatives(self) -> int | None:
        """How many alternatives each token's log-probability comes with (``None``: no
        log-probabilities asked for; ``top_logprobs`` alone asks for them)."""
        if not self.logprobs and self.top_logprobs is None:
            return None
        return self.top_logprobs or 0

    @classmethod
    def checked(cls, **given: Any) -> ChatOptions:
        """The options, or the `ChatInputError` that names the first bad one."""
        try:
            return cls(**given)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = error["loc"][0] if error["loc"] else "?"
            if error["type"] == "extra_forbidden":
                raise unknown_option(str(name)) from None
            if isinstance(cause := (error.get("ctx") or {}).get("error"), ChatInputError):
                raise cause from None  # a check of ours (`check_stop`, ...): its own words
            raise ChatInputError(f"Bad generation option {name}={error.get('input')!r}: {error['msg']}.") from None

    def output(self) -> dict[str, Any]:
        """The options that shape the output (tools, a response format, log-probabilities), as given."""
        return {name: value for name in OUTPUT_OPTIONS if (value := getattr(self, name)) is not None}


#: The options a call may carry besides the sampling ones and ``stop``.
OUTPUT_OPTIONS = tuple(name for name in ChatOptions.model_fields if name not in ModelOptions.model_fields)


def unknown_option(name: str) -> ChatInputError:
    known = [*SamplingOptions.model_fields, *(n for n in ChatOptions.model_fields if n not in SamplingOptions.model_fields)]
    return ChatInputError(f"Unknown generation option: {name}. Options: {', '.join(known)}.")
