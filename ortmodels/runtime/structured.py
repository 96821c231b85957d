"""Tool calls and structured output for the LangChain adapter: its tools and parsers.

`format_tools` turns what LangChain takes as a tool (pydantic classes, functions, LangChain
tools, dicts) into OpenAI function dicts for `output_plan.OutputPlan`, the LangChain-free
plan the chat service follows. `structured_output` builds ``with_structured_output``'s
runnable the way LangChain's own integrations do, with a parser that says when an answer
was cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
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
    RunnableGenerator,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
)
from langchain_core.utils.function_calling import (
    convert_to_json_schema,
    convert_to_openai_tool,
)
from langchain_core.utils.pydantic import is_basemodel_subclass

from ..engine.toolcalls import ToolCall
from ..errors import ChatInputError
from .events import arguments_json
from .output_plan import OutputPlan, check_tool, normalize_tool_choice

__all__ = ["OutputPlan", "format_tools", "normalize_tool_choice", "structured_output", "tool_call_chunks"]


def format_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI function dicts from pydantic classes, functions, LangChain tools or dicts, each
    callable (`check_tools` refuses two of one name when a call offers them: LangChain's own
    suite binds a class and its JSON schema, one name twice, and never calls them)."""
    formatted = []
    for tool in tools:
        try:
            converted = convert_to_openai_tool(tool)
        except Exception as exc:  # LangChain raises ValueError/TypeError with its own message
            raise ChatInputError(f"Cannot use {tool!r:.80} as a tool: {exc}") from None
        recursive = recursive_schema(tool)
        if recursive is not None:
            parameters = {k: v for k, v in recursive.items() if k not in ("title", "description")}
            converted = {**converted, "function": {**converted["function"], "parameters": parameters}}
        formatted.append(converted)
    for index, tool in enumerate(formatted):
        check_tool(index, tool)
    return formatted


def recursive_schema(schema: Any) -> dict[str, Any] | None:
    """A pydantic class's own JSON schema, its root written out, when a part of it refers back to
    itself (a tree, a thread of replies); None for any other schema. LangChain's conversion
    inlines every reference and writes ``{}`` (any JSON) where one recurs, which would leave
    the nested parts of a call or an answer unconstrained; the grammar reads ``$defs`` itself."""
    if not (isinstance(schema, type) and is_basemodel_subclass(schema) and hasattr(schema, "model_json_schema")):
        return None
    own = schema.model_json_schema()
    defs = own.get("$defs")
    if not isinstance(defs, dict) or not _cyclic(defs):
        return None
    name = _definition_named(own.get("$ref"))
    if name in defs:  # the class itself is a definition
        return {**defs[name], "$defs": defs}
    return own


def _definition_named(ref: object) -> str | None:
    """The definition a local ``$ref`` points into (``#/$defs/NAME``, or a path under it)."""
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return ref.removeprefix("#/$defs/").split("/", 1)[0]
    return None


def _cyclic(defs: dict[str, Any]) -> bool:
    """Whether the definitions refer to one another (or one to itself) in a loop."""
    edges = {name: _references(body) for name, body in defs.items()}
    done: set[str] = set()

    def loops(name: str, path: set[str]) -> bool:
        if name in path:
            return True
        if name in done or name not in edges:
            return False
        found = any(loops(target, path | {name}) for target in edges[name])
        done.add(name)
        return found

    return any(loops(name, set()) for name in edges)


def _references(node: Any) -> set[str]:
    """The ``#/$defs/NAME`` names a schema part refers to."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = _definition_named(item.get("$ref"))
            if name is not None:
                found.add(name)
            stack.extend(value for key, value in item.items() if key != "$defs")
        elif isinstance(item, list):
            stack.extend(item)
    return found


def tool_call_chunks(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [{"name": c.name, "args": arguments_json(c), "id": c.id, "index": i,
             "type": "tool_call_chunk"} for i, c in enumerate(calls)]


def _refuse_if_cut(message: BaseMessage, text: str) -> None:
    """Refuse an answer that ``max_tokens`` cut: half an object is never presented as valid."""
    if isinstance(message, AIMessage) and message.response_metadata.get("finish_reason") == "length":
        from langchain_core.exceptions import OutputParserException

        raise OutputParserException(
            "The structured answer was cut at max_tokens before it was complete; raise max_tokens.",
            llm_output=text,
        )


def _whole(messages: Iterator[BaseMessage]) -> Iterator[BaseMessage]:
    """The answer passed on as it streams (the parser after it gives partial objects, as
    LangChain's do), refused at its end if ``max_tokens`` cut it; a whole message is one item."""
    text = []
    for message in messages:
        text.append(message.text)
        yield message
        _refuse_if_cut(message, "".join(text))


async def _awhole(messages: AsyncIterator[BaseMessage]) -> AsyncIterator[BaseMessage]:
    """`_whole` on the event loop."""
    text = []
    async for message in messages:
        text.append(message.text)
        yield message
        _refuse_if_cut(message, "".join(text))


def _titled(schema: Any) -> Any:
    """A JSON schema dict without the ``title`` LangChain names the answer or its tool by, named
    ``output`` (LangChain refuses it untitled); anything else as it is."""
    if isinstance(schema, dict) and not {"title", "name", "function"} & set(schema):
        return {"title": "output", **schema}
    return schema


def _plain_answer_schema(schema: Any) -> bool:
    """A JSON schema dict whose answer is not an object (a string, a list, an enum, ``anyOf``):
    LangChain's conversions keep only an object's ``properties``, so they would make it
    ``{"title": ...}``, which admits any JSON."""
    return (isinstance(schema, dict) and not {"function", "parameters"} & set(schema)
            and "properties" not in schema and schema.get("type") != "object")


def _converted(convert: Callable[[Any], dict[str, Any]], schema: Any) -> dict[str, Any]:
    """LangChain's conversion of a schema; what it cannot convert is a `ChatInputError` naming the fix."""
    try:
        return convert(schema)
    except (ValueError, TypeError) as exc:
        raise ChatInputError(f"with_structured_output cannot read the schema ({exc}); give a pydantic class, a "
                             "TypedDict or a JSON schema dict.") from None


def _validated_call(schema: type) -> Runnable:
    """The call's arguments as ``schema``; arguments that do not validate are an
    `OutputParserException`, as the other methods' parsers give (`PydanticToolsParser` lets
    pydantic's own error through)."""
    from langchain_core.exceptions import OutputParserException
    from pydantic import ValidationError

    tools_parser = PydanticToolsParser(tools=[schema], first_tool_only=True)

    def parse(message: BaseMessage) -> Any:
        try:
            return tools_parser.invoke(message)
        except ValidationError as exc:
            raise OutputParserException(f"The call's arguments are not a valid {schema.__name__}: {exc}",
                                        llm_output=message.text) from exc

    return RunnableLambda(parse)


def structured_output(model: Any, schema: Any, method: str, include_raw: bool, strict: bool | None,
                      kwargs: dict[str, Any]) -> Runnable:
    """``with_structured_output`` for an ortmodels chat model (``json_schema`` by default)."""
    if kwargs:
        raise ChatInputError(f"with_structured_output got unknown arguments: {', '.join(kwargs)}.")
    if schema is None and method != "json_mode":  # json_mode: any JSON object, as ChatOpenAI's
        raise ChatInputError("with_structured_output needs a schema: a pydantic class, TypedDict or JSON schema "
                             "dict (or method='json_mode' for any JSON object).")
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    schema = _titled(schema)
    if method == "function_calling":
        if _plain_answer_schema(schema):
            raise ChatInputError(
                f"method='function_calling' needs an object schema (a tool's arguments are a JSON object), not "
                f"{ {k: v for k, v in schema.items() if k != 'title'} }; use method='json_schema' for this answer.")
        tool = _converted(convert_to_openai_tool, schema)
        name = tool["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name, ls_structured_output_format={
            "kwargs": {"method": method, "strict": strict}, "schema": tool})
        parser: Runnable = (_validated_call(schema) if is_pydantic
                            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
    elif method == "json_mode":
        llm = model.bind(response_format={"type": "json_object"}, ls_structured_output_format={
            "kwargs": {"method": method}, "schema": schema})
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    elif method == "json_schema":
        json_schema = schema if _plain_answer_schema(schema) else _converted(convert_to_json_schema, schema)
        recursive = recursive_schema(schema)
        if recursive is not None:
            json_schema = {**recursive, "title": json_schema.get("title", "output")}
        llm = model.bind(response_format={"type": "json_schema", "json_schema": {
            "name": json_schema.get("title", "output"), "schema": json_schema}},
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": json_schema})
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    else:
        raise ChatInputError(
            f"Unknown method {method!r} for with_structured_output: use json_schema, function_calling or json_mode."
        )
    parser = RunnableGenerator(_whole, _awhole) | parser
    if include_raw:
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
    return llm | parser
