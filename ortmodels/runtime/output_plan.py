"""What one call's output is held to, without LangChain: tools, tool choice, response formats.

`OutputPlan.from_options` turns a call's ``tools`` / ``tool_choice`` / ``response_format``
(OpenAI's shapes) into what the engine needs (a grammar processor, the messages and template
variables the tool format wants) and `OutputPlan.finish` turns the answer's text back into
content and tool calls. The chat service uses it for every front end; the server's protocol
refuses the same tools the same way (`check_tools`). ``logprobs`` with tools is refused by
`options.ChatOptions` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.constraints import (
    Grammar,
    GrammarCompiler,
    GrammarProcessor,
    close_objects,
    lark_from_gbnf,
)
from ..engine.toolcalls import ToolCall, ToolFormat
from ..errors import ChatInputError, GrammarError, StructuredOutputError


def normalize_tool_choice(choice: Any, tools: Sequence[dict[str, Any]]) -> str:
    """``auto``, ``required``, ``none`` or a bound tool's name, from any spelling LangChain and
    OpenAI use (``any``, ``True``, ``{"type": "function", "function": {"name": ...}}``)."""
    names = [t["function"]["name"] for t in tools]
    if choice is None:
        return "auto" if tools else "none"
    if choice is True or choice == "any":
        choice = "required"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if choice == "required" and not tools:  # a call is required, of no tool: refused as OpenAI's API does
        raise StructuredOutputError("tool_choice requires a tool call, but no tools are bound: give tools "
                                    "(bind_tools, or tools=[...]) or leave tool_choice out.", "tool_choice")
    if choice in ("auto", "required", "none"):
        return choice
    if isinstance(choice, str) and choice in names:
        return choice
    raise StructuredOutputError(
        f"tool_choice={choice!r} names no bound tool; bound tools: {', '.join(names) or 'none'} "
        "(or use 'auto', 'required' or 'none').", "tool_choice"
    )


def check_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``tools`` as a call offers them, once every one can be called and told apart: each name
    is one tool's (with two of one name, a call could not say which it meant, and the first
    would silently win)."""
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        name = check_tool(index, tool)
        if name in seen:
            raise ChatInputError(f"Two tools are named {name!r}: give each tool its own name.")
        seen.add(name)
    return tools


def check_tool(index: int, tool: Any) -> str:
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


def _tools_processor(compiler: GrammarCompiler, grammar: Grammar, trigger: int | None,
                     tools: list[dict[str, Any]]) -> GrammarProcessor:
    """The calls' grammar processor. A grammar the compiler refuses is an error about ``tools``
    that names the tool whose parameters it cannot use (each checked alone, on this path only):
    the format's combined grammar is not what the caller wrote."""
    try:
        return compiler.processor(grammar, trigger)
    except GrammarError as exc:
        for tool in tools:
            function = tool["function"]
            try:
                compiler.check(Grammar("json_schema", function["parameters"],
                                       f"parameters of tool {function['name']!r}"))
            except GrammarError as named:
                raise GrammarError(str(named), param="tools") from None
        raise GrammarError(str(exc), param="tools") from None


def grammar_of(response_format: Any) -> Grammar | None:
    """The grammar a ``response_format`` asks for: OpenAI's ``json_object`` / ``json_schema``,
    and ``regex`` / ``lark`` / ``gbnf`` (llama.cpp's, read as Lark) for a pattern or a grammar of
    your own."""
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
        spec = response_format.get("json_schema")
        # the schema in ``schema`` (OpenAI's), or the dict itself; OpenAI's wrapper without a schema holds none
        bare = isinstance(spec, dict) and "schema" not in spec and set(spec) <= {"name", "description", "strict"}
        schema = spec.get("schema", spec) if isinstance(spec, dict) and not bare else None
        if not isinstance(schema, dict):
            raise ChatInputError("response_format json_schema needs {'json_schema': {'schema': {...}}}.")
        # closed objects with strict=False too: LangChain's ChatOpenAI sends it for every dict schema,
        # and a small model given extra keys invents them until max_tokens; a schema opens its own
        return Grammar("json_schema", close_objects(schema))
    if kind in ("regex", "lark", "gbnf"):
        source = response_format.get(kind)
        if not isinstance(source, str):
            raise ChatInputError(f"response_format {kind} needs {{'type': '{kind}', '{kind}': '...'}}.")
        return Grammar("lark", lark_from_gbnf(source)) if kind == "gbnf" else Grammar(kind, source)
    raise ChatInputError(
        f"Unknown response_format type {kind!r}: use text, json_object, json_schema, regex, lark or gbnf.")


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
        tools = check_tools(list(options.get("tools") or []))
        tools = [{**t, "function": {**t["function"], "parameters": close_objects(
            t["function"].get("parameters") or {"type": "object", "properties": {}})}} for t in tools]
        choice = normalize_tool_choice(options.get("tool_choice"), tools)
        parallel = bool(options.get("parallel_tool_calls", False))
        grammar = grammar_of(options.get("response_format"))
        if tools and choice != "none":
            if grammar is not None:
                raise ChatInputError("Give tools or a response_format, not both, in one call (or tool_choice "
                                     "'none' to answer in the format).")  # no param: each API names it its own way
            special = special_tokens(tokenizer)
            plan = fmt.plan(tools, choice, parallel, special)
            trigger = tokenizer.token_to_id(plan.trigger) if plan.trigger in special else None
            if plan.trigger and trigger is None:  # no single trigger token: constrain from the start
                plan = fmt.plan(tools, "required", parallel, special)
            processor = _tools_processor(compiler, plan.grammar, trigger, tools) if plan.grammar else None
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
        call is whole (or cut by ``max_tokens``, reason ``length``: the cut call is dropped,
        the whole ones before it kept).
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
