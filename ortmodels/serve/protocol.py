"""OpenAI's request and response bodies, as much of them as ortmodels serves.

Requests refuse unknown top-level fields, as OpenAI does (``extra="forbid"``). Fields that
OpenAI knows but ortmodels cannot honour are declared and listed in ``UNSUPPORTED`` with the
values that change nothing: a client that sends the neutral value (``presence_penalty=0``)
is served, one that asks for more gets a 400 that names the field, never a silent ignore.
Numbers are strict (``"0.5"`` is not a temperature). The generation options are
`ortmodels.runtime.options`' own fields, bounds and descriptions (the request models inherit
them); this module adds only OpenAI's spellings (``max_completion_tokens``) and shapes (tools,
response formats, messages).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..runtime.options import (
    LogprobOptions,
    MaxTokens,
    PromptOptions,
    ReasoningOptions,
    SamplingOptions,
    StopOptions,
    check_logprobs_with_tools,
)
from ..runtime.output_plan import check_tools


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    """Nested objects whose extra keys OpenAI tolerates (or that clients add): ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


# -- shared pieces -----------------------------------------------------------------------------

Penalty = Annotated[float | None, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]


class StreamOptions(_Open):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _Sampling(StopOptions, SamplingOptions, PromptOptions):
    """Options both generation endpoints take: `SamplingOptions`' (``top_k`` and
    ``repetition_penalty`` as vLLM and llama.cpp take them, through ``extra_body``), ``stop``,
    ``truncate_prompt``, and OpenAI's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    user: str | None = None
    # OpenAI's, not supported: see UNSUPPORTED
    frequency_penalty: Penalty = None
    presence_penalty: Penalty = None
    logit_bias: dict[str, Any] | None = None
    service_tier: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None


def neutral(*values: Any) -> tuple[Any, ...]:
    """The values of a field that ask for nothing: ``None`` (left out) and ``values``."""
    return (None, *values)


#: Field → the values that ask for nothing ortmodels lacks; anything else is a 400 naming it.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": neutral(1),
    "frequency_penalty": neutral(0, 0.0),
    "presence_penalty": neutral(0, 0.0),
    "logit_bias": neutral({}),
    "best_of": neutral(1),
    "echo": neutral(False),
    "suffix": neutral(""),
    "modalities": neutral(["text"]),
    "audio": neutral(),
    "prediction": neutral(),
    "functions": neutral([]),
    "function_call": neutral("none", "auto"),
    "web_search_options": neutral(),
}


def unsupported_field(request: BaseModel) -> str | None:
    """The first field whose value asks for something ortmodels does not do (a body's own table,
    ``UNSUPPORTED_FIELDS``, where its class declares one)."""
    table: dict[str, tuple[Any, ...]] = getattr(type(request), "UNSUPPORTED_FIELDS", UNSUPPORTED)
    for name, neutral in table.items():
        if name in type(request).model_fields and getattr(request, name) not in neutral:
            return name
    return None


# -- chat completions --------------------------------------------------------------------------

class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    function_call: Any = None
    audio: Any = None
    annotations: list[Any] | None = None
    """An earlier answer's URL citations, as the ``openai`` client dumps its message: taken and not shown."""
    reasoning_content: str | None = None
    """An earlier answer's reasoning, as this server sent it: taken and not shown to the model
    (as Qwen3's template drops earlier turns' reasoning)."""


class FunctionSpec(_Open):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class JsonSchemaSpec(_Open):
    name: str = "output"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StructuredOutputs(_Strict):
    """vLLM's ``structured_outputs``: one of these holds the answer (each a ``response_format`` of
    the chat service: ``regex``, ``lark``, ``json_schema``, ``json_object``)."""

    regex: str | None = None
    """A regular expression the whole answer matches (``"(yes|no)"``)."""
    choice: Annotated[list[str] | None, Field(min_length=1)] = None
    """The answer is exactly one of these strings."""
    grammar: str | None = None
    """A Lark grammar (llguidance's dialect; llama.cpp's GBNF is read too) the answer follows."""
    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    """A JSON schema (an object, or the same as a JSON string) the answer validates against."""
    json_object: bool | None = None
    """True: any JSON object."""


class GrammarFields(BaseModel):
    """The grammars both generation endpoints take in the body, besides ``response_format``:
    vLLM's ``structured_outputs`` and llama.cpp's ``grammar`` and ``json_schema``; at most one
    per request (`ortmodels.serve.grammar` maps each onto the chat service's ``response_format``)."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    structured_outputs: StructuredOutputs | None = None
    """vLLM's: ``{"regex": ...}``, ``{"choice": [...]}``, ``{"grammar": <Lark>}`` or ``{"json": <schema>}``."""
    grammar: str | None = None
    """llama.cpp's: a GBNF grammar (``root ::= "yes" | "no"``) the answer follows."""
    json_schema: dict[str, Any] | None = None
    """llama.cpp's: a JSON schema the answer validates against."""


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: dict[str, str]


class _ChatFields(GrammarFields, _Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: MaxTokens = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    """OpenAI's level (``none``, ``minimal``, ``low``, ``medium``, ``high``), read as the
    `ReasoningOptions` of `ortmodels.runtime.options.REASONING_EFFORTS`."""
    chat_template_kwargs: dict[str, Any] | None = None
    """Variables for the chat template, as vLLM and llama-server take them: ``enable_thinking``."""


class ChatCompletionRequest(LogprobOptions, ReasoningOptions, _ChatFields):
    """The chat body: `LogprobOptions`' fields come last, so ``logprobs`` is checked knowing the tools."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("tools")
    @classmethod
    def _callable_tools(cls, tools: list[Tool] | None) -> list[Tool] | None:
        """Refused here as the chat model refuses them: parameters that are not an object
        schema (the calls' arguments could not be sent back), two tools of one name."""
        if tools:
            check_tools([tool.model_dump(exclude_none=True) for tool in tools])
        return tools

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs_with_tools(cls, logprobs: bool | None, info: ValidationInfo) -> bool | None:
        """The options model's rule, checked here too so that the 400 names ``logprobs``."""
        check_logprobs_with_tools(bool(logprobs), info.data.get("tools"), info.data.get("tool_choice"))
        return logprobs


# -- completions -------------------------------------------------------------------------------

class CompletionRequest(GrammarFields, _Sampling):
    """``max_tokens`` left out is OpenAI's 16 here (`serve.completions`)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    logprobs: Annotated[int | None, Field(ge=0, le=5)] = None
    best_of: int | None = None


# -- embeddings --------------------------------------------------------------------------------

class EmbeddingRequest(_Strict):
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int | None, Field(ge=1)] = None
    """Fewer than the model's own: the first ones, renormalised; for Matryoshka-trained models
    (or with ``matryoshka: true``), else a 400 naming the model's size."""
    user: str | None = None
    # ortmodels' (and Jina/Cohere/TEI-style) additions, through the client's extra_body:
    input_type: Literal["query", "document"] | None = None
    """Embed the inputs with the model's query or document prompt (sentence-transformers'
    ``encode_query`` / ``encode_document``); left out: its plain ``encode``."""
    prompt_name: Annotated[str | None, Field(max_length=100)] = None
    """One of the model's prompts by name (wins over ``input_type``); an unknown one is a 400
    that lists them."""
    matryoshka: bool | None = None
    """True: cut to ``dimensions`` although the model's card declares no Matryoshka training."""


# -- responses ---------------------------------------------------------------------------------

class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ResponseToolCall(BaseModel):
    index: int | None = None
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ResponseToolCall] | None = None
    reasoning_content: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ortmodels"
    kind: str
    """``chat``, ``embedding`` or ``reranker`` (ortmodels' addition)."""
    exported: bool = True
    loaded: bool = False


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
