"""Tool calls and structured output for the chat adapter: the LangChain side of constraints.

`OutputPlan.from_options` turns a call's ``tools`` / ``tool_choice`` / ``response_format``
into what the engine needs (a grammar processor, the messages and template variables the
tool format wants) and `OutputPlan.finish` turns the answer's text back into content and
tool calls. `structured_output` builds ``with_structured_output``'s runnable the way
LangChain's own integrations do, with a parser that says when an answer was cut.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
)
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.runnables import (
    Runnable,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
)
from langchain_core.utils.function_calling import (
    convert_to_json_schema,
    convert_to_openai_tool,
)
from langchain_core.utils.pydantic import is_basemodel_subclass

from ..engine.constraints import (
    Grammar,
    GrammarCompiler,
    GrammarProcessor,
    close_objects,
)
from ..engine.toolcalls import ToolCall, ToolFormat
from ..errors import ChatInputError, StructuredOutputError

#: The keyword arguments a call may carry besides the sampling options.
OUTPUT_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs")


LOGPROBS_WITH_TOOLS = (
    "logprobs cannot be given with tools: an answer with tools is read as a whole into content and "
    "tool calls, with no tokens to attach log-probabilities to. Leave out logprobs / top_logprobs, "
    "or the tools (or set tool_choice='none')."
)


def logprobs_of(options: dict[str, Any]) -> int | None:
    """How many alternatives each token's log-probability comes with (``None``: none asked for)."""
    top = options.get("top_logprobs")
    if not options.get("logprobs") and top is None:
        return None
    if top is None:
        return 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise ChatInputError(f"top_logprobs must be a whole number from 0 to 20, not {top!r}.")
    return top


def normalize_tool_choice(choice: Any, tools: Sequence[dict[str, Any]]) -> str:
    """``auto``, ``required``, ``none`` or a bound tool's name, from any spelling LangChain and
    OpenAI use (``any``, ``True``, ``{"type": "function", "function": {"name": ...}}``)."""
    names = [t["function"]["name"] for t in tools]
    if choice is None:
        return "auto" if tools else "none"
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if choice in ("auto", "required", "none"):
        return choice
    if isinstance(choice, str) and choice in names:
        return choice
    raise StructuredOutputError(
        f"tool_choice={choice!r} names no bound tool; bound tools: {', '.join(names) or 'none'} "
        "(or use 'auto', 'required'/'any', 'none')."
    )


def format_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI function dicts from pydantic classes, functions, LangChain tools or dicts, each
    callable (`check_tools` refuses two of one name when a call offers them: LangChain's own
    suite binds a class and its JSON schema, one name twice, and never calls them)."""
    formatted = []
    for tool in tools:
        try:
            formatted.append(convert_to_openai_tool(tool))
        except Exception as exc:  # LangChain raises ValueError/TypeError with its own message
            raise ChatInputError(f"Cannot use {tool!r:.80} as a tool: {exc}") from None
    for index, tool in enumerate(formatted):
        _check_tool(index, tool)
    return formatted


def check_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``tools`` as a call offers them, once every one can be called and told apart: each name
    is one tool's (with two of one name, a call could not say which it meant, and the first
    would silently win)."""
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        name = _check_tool(index, tool)
        if name in seen:
            raise ChatInputError(f"Two tools are named {name!r}: give each tool its own name.")
        seen.add(name)
    return tools


def _check_tool(index: int, tool: Any) -> str:
    """The tool's name, once its arguments are a JSON object: OpenAI's and LangChain's tool
    calls carry a dict, and any other schema would give arguments that no client can send back."""
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise ChatInputError(f"tools[{index}] has no function name: give {{'type': 'function', "
                             "'function': {'name': ..., 'parameters': {...}}}.")
    schema = function.get("parameters")
    if schema is not None:
        kind = schema.get("type", "object") if isinstance(schema, dict) else None
        if kind != "object":
            shown = f"type {kind!r}" if isinstance(schema, dict) else type(schema).__name__
            raise ChatInputError(
                f"The parameters of tool {name!r} are {shown}, not an object schema: a call's arguments are "
                "a JSON object. Wrap the value in one: {'type': 'object', 'properties': {'value': <the "
                "schema>}, 'required': ['value']}."
            )
    return name


def grammar_of(response_format: Any) -> Grammar | None:
    """The grammar a ``response_format`` asks for: OpenAI's ``json_object`` / ``json_schema``,
    and ``regex`` / ``lark`` for a pattern or a grammar of your own."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or "type" not in response_format:
        raise ChatInputError(
            "response_format must be a dict such as {'type': 'json_object'} or "
            "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}."
        )
    kind = response_format["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return Grammar("json_object")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema", spec) if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ChatInputError("response_format json_schema needs {'json_schema': {'schema': {...}}}.")
        strict = spec.get("strict") is not False  # closed objects unless strict=False is asked for
        return Grammar("json_schema", close_objects(schema) if strict else schema)
    if kind in ("regex", "lark"):
        source = response_format.get(kind)
        if not isinstance(source, str):
            raise ChatInputError(f"response_format {kind} needs {{'type': '{kind}', '{kind}': '...'}}.")
        return Grammar(kind, source)
    raise ChatInputError(f"Unknown response_format type {kind!r}: use text, json_object, json_schema, regex or lark.")


@dataclass
class OutputPlan:
    """What one call's output is held to, and how its text is read back."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    choice: str = "none"
    parallel: bool = False
    tool_format: ToolFormat | None = None
    processor: GrammarProcessor | None = None
    template_vars: dict[str, Any] = field(default_factory=dict)
    structured: bool = False
    stop: tuple[str, ...] = ()
    """The call's stop strings: they end free text only (see `finish`)."""

    @classmethod
    def from_options(cls, options: dict[str, Any], fmt: ToolFormat, compiler: GrammarCompiler,
                     tokenizer: Any) -> OutputPlan:
        tools = list(options.get("tools") or [])
        if not all(isinstance(t, dict) and "function" in t for t in tools):
            tools = format_tools(tools)
        check_tools(tools)
        tools = [{**t, "function": {**t["function"], "parameters": close_objects(
            t["function"].get("parameters") or {"type": "object", "properties": {}})}} for t in tools]
        choice = normalize_tool_choice(options.get("tool_choice"), tools)
        parallel = bool(options.get("parallel_tool_calls", False))
        grammar = grammar_of(options.get("response_format"))
        if tools and choice != "none":
            if grammar is not None:
                raise ChatInputError("Give tools or a response_format, not both, in one call.")
            if logprobs_of(options) is not None:
                raise ChatInputError(LOGPROBS_WITH_TOOLS)
            special = special_tokens(tokenizer)
            plan = fmt.plan(tools, choice, parallel, special)
            trigger = tokenizer.token_to_id(plan.trigger) if plan.trigger in special else None
            if plan.trigger and trigger is None:  # no single trigger token: constrain from the start
                plan = fmt.plan(tools, "required", parallel, special)
            processor = compiler.processor(plan.grammar, trigger) if plan.grammar else None
            return cls(tools, choice, parallel, fmt, processor, structured=True)
        processor = compiler.processor(grammar) if grammar is not None else None
        return cls(tools, choice, parallel, None, processor, structured=grammar is not None)

    def messages(self, converted: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation with the tools added the way the format wants (and its template variables)."""
        if self.tool_format is None:
            return converted
        messages, self.template_vars = self.tool_format.prompt(converted, self.tools, self.choice, self.parallel)
        return messages

    def finish(self, text: str, reason: str) -> tuple[str, list[ToolCall], str]:
        """The answer's content and tool calls (none when no tools were offered), and why it ended.

        Stop strings end free text only: the engine does not cut what a grammar holds, so a
        call is whole (or cut by ``max_tokens``, reason ``length``, and then no call at all).
        The free-text answer a format wraps (the generic format's ``{"response": ...}``) is
        cut here at its first stop string, reason ``stop``. The format's wrapper is never
        content: a held answer the format cannot read (cut by ``max_tokens``) has no content.
        """
        if self.tool_format is None:
            return text, [], reason
        names = {t["function"]["name"] for t in self.tools}
        content, calls = self.tool_format.parse(text, self.tools)
        calls = [c for c in calls if c.name in names]
        if not calls and content == text and self.processor is not None and self.processor.trigger_token is None:
            content = ""  # held from the first token, so the whole text is the format's, cut before its end
        hits = [i for s in self.stop if (i := content.find(s)) >= 0]
        if hits:
            content = content[:min(hits)]
            reason = "stop" if reason == "length" else reason
        if calls and reason == "stop":
            reason = "tool_calls"
        return content, calls, reason


def special_tokens(tokenizer: Any) -> frozenset[str]:
    """The texts of the tokenizer's special (added) tokens, such as ``<tool_call>`` in Qwen2.5's."""
    return frozenset(t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special)


def tool_call_chunks(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"name": c.name, "args": json.dumps(c.arguments, ensure_ascii=False), "id": c.id, "index": i,
             "type": "tool_call_chunk"} for i, c in enumerate(calls)]


def _check_whole(message: BaseMessage) -> BaseMessage:
    """Refuse to parse an answer that ``max_tokens`` cut: half an object is never presented as valid."""
    if isinstance(message, AIMessage) and message.response_metadata.get("finish_reason") == "length":
        from langchain_core.exceptions import OutputParserException

        raise OutputParserException(
            "The structured answer was cut at max_tokens before it was complete; raise max_tokens.",
            llm_output=message.text,
        )
    return message


def structured_output(model: Any, schema: Any, method: str, include_raw: bool, strict: bool | None,
                      kwargs: dict[str, Any]) -> Runnable:
    """``with_structured_output`` for an ortmodels chat model (``json_schema`` by default)."""
    if kwargs:
        raise ChatInputError(f"with_structured_output got unknown arguments: {', '.join(kwargs)}.")
    if schema is None:
        raise ChatInputError("with_structured_output needs a schema: a pydantic class, TypedDict or JSON schema dict.")
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    if method == "function_calling":
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name, ls_structured_output_format={
            "kwargs": {"method": method, "strict": strict}, "schema": tool})
        parser: Runnable = (PydanticToolsParser(tools=[schema], first_tool_only=True) if is_pydantic
                            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
    elif method == "json_mode":
        llm = model.bind(response_format={"type": "json_object"}, ls_structured_output_format={
            "kwargs": {"method": method}, "schema": schema})
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    elif method == "json_schema":
        json_schema = convert_to_json_schema(schema)
        llm = model.bind(response_format={"type": "json_schema", "json_schema": {
            "name": json_schema.get("title", "output"), "schema": json_schema}},
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": json_schema})
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    else:
        raise ChatInputError(
            f"Unknown method {method!r} for with_structured_output: use json_schema, function_calling or json_mode."
        )
    parser = RunnableLambda(_check_whole) | parser
    if include_raw:
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
    return llm | parser
