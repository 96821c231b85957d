"""Anthropic's Messages API bodies (``/v1/messages``, ``/v1/messages/count_tokens``) and its error shape.

Requests refuse unknown fields, as Anthropic does. Fields Anthropic knows but ortmodels cannot
honour are declared and listed in the model's ``UNSUPPORTED_FIELDS`` with the values that change nothing
(``mcp_servers``, ``container``, ...); the route's body parser reads that table as it reads the OpenAI one (`protocol.unsupported_field`).
The sampling options are `ortmodels.runtime.options`' own fields (the body inherits them);
this module adds Anthropic's spellings (``stop_sequences``, a required ``max_tokens``) and shapes
(system blocks, content blocks, tools with ``input_schema``, ``tool_choice`` objects). Content
blocks stay dicts here: `serve.messages` reads them, so an image block's 400 names the block.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ChatInputError
from ..runtime.options import MaxTokens, PromptOptions, SamplingOptions, check_stop
from .errors import ApiError
from .protocol import neutral


class _Open(BaseModel):
    """Nested objects whose extra keys (``cache_control``, newer optional fields) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class Tool(_Open):
    """A client tool: ``{name, description, input_schema}``; Anthropic's server tools are refused."""

    type: str | None = None
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str | None = None
    input_schema: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _client_tool(cls, kind: str | None) -> str | None:
        if kind not in (None, "custom"):
            raise ChatInputError(f"{kind!r} is one of Anthropic's server tools, which this server does not run; "
                                 "give client tools: {'name': ..., 'description': ..., 'input_schema': {...}}")
        return kind


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ChatInputError("tool_choice {'type': 'tool'} needs the tool's name: {'type': 'tool', 'name': ...}")
        return self


class OutputFormat(_Open):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Open):
    """Structured output: ``{"format": {"type": "json_schema", "schema": {...}}}`` (a grammar here)."""

    format: OutputFormat | None = None
    effort: str | None = None


class Thinking(_Open):
    """``thinking``: a reasoning model's ``<think>`` switched on (``enabled`` with a
    ``budget_tokens`` cap, or ``adaptive``: no cap) or off (``disabled``); its reasoning comes
    back as ``thinking`` blocks. A model that does not reason writes none either way."""

    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _budget(self) -> Thinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ChatInputError("thinking {'type': 'enabled'} needs budget_tokens: the most tokens to reason for.")
        return self

    def options(self) -> dict[str, Any]:
        """The chat service's reasoning options."""
        if self.type == "disabled":
            return {"enable_thinking": False}
        return {"enable_thinking": True, **({"reasoning_budget": self.budget_tokens}
                                            if self.budget_tokens is not None else {})}


class CountTokensRequest(BaseModel):
    """``/v1/messages/count_tokens``: what shapes the prompt, nothing of the answer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: Field → the values that ask for nothing ortmodels lacks; anything else is a 400 naming it.
    UNSUPPORTED_FIELDS: ClassVar[dict[str, tuple[Any, ...]]] = {
        "mcp_servers": neutral([]),
        "container": neutral(),
        "context_management": neutral(),
        "diagnostics": neutral(),
        "speed": neutral("standard"),
    }

    model: str | None = None
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    cache_control: dict[str, Any] | None = None
    """Accepted and left to the server: its prompt cache keeps every prefix it can, unasked."""
    thinking: Thinking | None = None
    # Anthropic's, not supported: see UNSUPPORTED_FIELDS
    mcp_servers: list[dict[str, Any]] | None = None
    container: str | dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    speed: str | None = None
    # Anthropic's account fields: nothing to do with them here
    user_profile_id: str | None = None
    workspace_id: str | None = None
    inference_geo: str | None = None

    @field_validator("output_config")
    @classmethod
    def _no_effort(cls, config: OutputConfig | None) -> OutputConfig | None:
        if config is not None and config.effort is not None:
            raise ChatInputError(f"output_config.effort={config.effort!r} is not supported by this server (its "
                                 "models do not reason at an effort level); leave it out")
        return config


class MessagesRequest(SamplingOptions, PromptOptions, CountTokensRequest):
    """``/v1/messages``: the prompt's fields, the sampling options, and the answer's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: MaxTokens = Field()
    """Required, as Anthropic requires it."""
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    metadata: dict[str, Any] | None = None
    service_tier: Literal["auto", "standard_only"] | None = None

    @field_validator("max_tokens")
    @classmethod
    def _given(cls, value: int | None) -> int:
        if value is None:
            raise ChatInputError("max_tokens is required: the most tokens to generate, e.g. 1024")
        return value

    @field_validator("stop_sequences")
    @classmethod
    def _stop(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [s for s in check_stop(value, "stop_sequences") if s]


#: HTTP status → Anthropic's error type.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
          504: "timeout_error"}


def error_body(error: ApiError) -> dict[str, Any]:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}`` for an error of the server's."""
    kind = _TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status, headers=error.headers)
