"""OpenAI's Responses API body (``POST /v1/responses``), as much of it as ortmodels serves.

As `protocol`'s bodies: unknown top-level fields are refused, numbers are strict, the
generation options are `ortmodels.runtime.options`' own (``temperature``, ``top_p`` and,
through ``extra_body``, ``top_k``, ``seed``, DRY, ``stop``, ``enable_thinking``,
``reasoning_budget``); this module adds only the Responses
API's spellings (``max_output_tokens``) and shapes (flat function tools, ``text.format``).
``reasoning.effort`` is read as chat's ``reasoning_effort``. Fields the API knows but ortmodels
cannot honour (background runs, built-in tools, reasoning summaries, ...) are refused by name (`ResponsesRequest.UNSUPPORTED_FIELDS`), never
silently ignored. Input items are read by `ortmodels.serve.responses`, which names the item a
mistake is in.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import ChatInputError
from ..runtime.options import MaxTokens, PromptOptions, ReasoningOptions, SamplingOptions, StopOptions
from ..runtime.output_plan import check_tools
from .protocol import FunctionSpec, StreamOptions, neutral

#: The tool types of OpenAI's Responses API that run on OpenAI's side (refused by name).
BUILT_IN_TOOLS = ("web_search", "web_search_preview", "file_search", "computer_use_preview", "computer",
                  "code_interpreter", "image_generation", "mcp", "local_shell", "shell", "apply_patch")


class FunctionTool(FunctionSpec):
    """A function tool as the Responses API spells it: flat, ``{"type": "function", "name", ...}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"] = "function"

    def as_chat(self) -> dict[str, Any]:
        """The tool in the chat service's (OpenAI Chat Completions') shape."""
        return {"type": "function", "function": self.model_dump(exclude={"type"}, exclude_none=True)}


def _function_tool(index: int, tool: dict[str, Any]) -> FunctionTool:
    kind = tool.get("type")
    if kind != "function":
        what = ("a built-in tool, which runs on OpenAI's side" if kind in BUILT_IN_TOOLS else
                "a custom tool, whose free-form input this server does not take" if kind == "custom" else
                "not a tool type")
        raise ChatInputError(f"tools[{index}] has type {kind!r:.40}: {what}; this server runs function tools only "
                             "({'type': 'function', 'name': ..., 'parameters': {...}}).")
    if "function" in tool:
        raise ChatInputError(f"tools[{index}] is in Chat Completions' shape ({{'type': 'function', 'function': "
                             "{...}}); the Responses API takes it flat: {'type': 'function', 'name': ..., "
                             "'description': ..., 'parameters': {...}}.")
    try:
        return FunctionTool.model_validate(tool)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ChatInputError(f"tools[{index}].{where}: {error['msg']}") from None


class TextFormat(BaseModel):
    """``text.format``: ``text``, ``json_object``, or ``json_schema`` with its fields flat beside the type."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(max_length=64)] = "output"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    def response_format(self) -> dict[str, Any] | None:
        """The chat service's ``response_format`` (``None`` for plain text)."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        if self.schema_ is None:
            raise ChatInputError("text.format json_schema needs its schema beside the type: {'type': "
                                 "'json_schema', 'name': ..., 'schema': {...}}.")
        spec: dict[str, Any] = {"name": self.name, "schema": self.schema_}
        if self.strict is not None:
            spec["strict"] = self.strict
        return {"type": "json_schema", "json_schema": spec}

    def echo(self) -> dict[str, Any]:
        """The format as the response object carries it."""
        if self.type != "json_schema":
            return {"type": self.type}
        return self.model_dump(by_alias=True, exclude_none=True)


class ReasoningConfig(BaseModel):
    """``reasoning``: ``effort`` (chat's ``reasoning_effort`` levels); a reasoning model's text comes
    back whole as a ``reasoning`` item's ``reasoning_text``, so no summary is made (``auto`` or none)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    effort: str | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None
    mode: str | None = None

    @model_validator(mode="after")
    def _what_is_served(self) -> ReasoningConfig:
        for name in ("summary", "generate_summary"):
            if getattr(self, name) not in (None, "auto"):
                raise ChatInputError(f"reasoning.{name}={getattr(self, name)!r} is not served: this server's models "
                                     "write their reasoning out whole (a reasoning item's reasoning_text), no summary "
                                     "is made; leave it out or give 'auto'")
        if self.context == "all_turns":
            raise ChatInputError("reasoning.context='all_turns' is not served: earlier turns' reasoning is left out of "
                                 "the prompt, as the models' templates leave it; give 'auto' or 'current_turn'")
        if self.mode not in (None, "standard"):
            raise ChatInputError(f"reasoning.mode={self.mode!r:.40} is not served; leave it out or give 'standard'")
        return self

    def echo(self) -> dict[str, Any]:
        """The settings as the response object carries them."""
        return {"effort": self.effort, "summary": self.summary or self.generate_summary}


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None

    @field_validator("verbosity")
    @classmethod
    def _medium_only(cls, value: str | None) -> str | None:
        if value not in (None, "medium"):
            raise ChatInputError(f"verbosity={value!r} is not supported by this server (the model writes as it "
                                 "writes); leave it out")
        return value


class ResponsesRequest(ReasoningOptions, StopOptions, SamplingOptions, PromptOptions):
    """The body of ``POST /v1/responses``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: Field → the values that ask for nothing ortmodels lacks; anything else is a 400 naming it.
    UNSUPPORTED_FIELDS: ClassVar[dict[str, tuple[Any, ...]]] = {
        "background": neutral(False),
        "include": neutral([]),
        "prompt": neutral(),
        "conversation": neutral(),
        "top_logprobs": neutral(0),
        "max_tool_calls": neutral(),
        "service_tier": neutral("auto", "default"),
        "context_management": neutral([]),
        "prompt_cache_retention": neutral("in_memory"),
    }

    model: str | None = None
    input: str | list[dict[str, Any]]
    """A user message's text, or items: messages, ``function_call`` and ``function_call_output``."""
    instructions: str | None = None
    """A system message before the conversation (this request's only: earlier ones are not carried on)."""
    max_output_tokens: MaxTokens = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    """``effort``: a reasoning model's thinking switched and budgeted as chat's ``reasoning_effort``."""
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    store: bool | None = True
    previous_response_id: Annotated[str | None, Field(max_length=200)] = None
    metadata: Annotated[dict[str, str] | None, Field(max_length=16)] = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    """Accepted and unused: the prompt cache finds a shared start by itself."""
    truncation: Literal["auto", "disabled"] | None = None
    """``auto``: the oldest of the conversation is dropped to fit the context (``truncate_prompt``)."""
    # the Responses API's, not supported: see UNSUPPORTED_FIELDS
    background: bool | None = None
    include: list[str] | None = None
    prompt: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    service_tier: str | None = None
    context_management: list[Any] | None = None
    prompt_cache_retention: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        """Strings that UTF-8 can carry: a response echoes some of them (instructions, tools, metadata)."""
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ChatInputError(f"The body has a string that is not valid Unicode ({exc.object[exc.start:exc.end]!r}, "
                                 "a lone surrogate): send UTF-8 text.") from None
        except (TypeError, ValueError):
            pass  # not JSON's values: the fields' own checks say what is wrong
        return data

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _output_tokens(cls, value: Any) -> None:
        """Chat's field (inherited with the sampling options), not the Responses API's: refused, not
        taken quietly while the response echoes ``max_output_tokens: null``."""
        raise ChatInputError("the Responses API calls the token limit max_output_tokens: send that instead")

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        """Function tools only, each callable (`check_tools`), in the chat service's shape."""
        if not tools:
            return tools
        return check_tools([_function_tool(i, t).as_chat() for i, t in enumerate(tools)])

    @field_validator("tool_choice")
    @classmethod
    def _named_function(cls, choice: Any, info: ValidationInfo) -> Any:
        if isinstance(choice, dict):
            if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
                raise ChatInputError(f"tool_choice of type {choice.get('type')!r:.40} is not served; give 'auto', "
                                     "'none', 'required' or {'type': 'function', 'name': ...}")
            choice = {"type": "function", "name": choice["name"]}
        if choice not in (None, "none", "auto") and not info.data.get("tools"):
            raise ChatInputError("tool_choice needs tools: give tools, or leave tool_choice out")
        return choice

    def tool_dicts(self) -> list[dict[str, Any]]:
        """The tools as the Responses API echoes them (flat)."""
        return [{"type": "function", **t["function"]} for t in self.tools or []]

    def format(self) -> TextFormat:
        return (self.text.format if self.text else None) or TextFormat(type="text")
