"""A pydantic class that refers to itself (a tree) constrains its nested parts too, as a tool
and as ``with_structured_output``'s schema: LangChain's conversion writes ``{}`` (any JSON)
where the reference recurs, which let the model put anything inside ``children``."""

from __future__ import annotations

from pydantic import BaseModel
from tokenizers import Tokenizer

from ortmodels.engine.constraints import Grammar, GrammarCompiler
from ortmodels.engine.toolcalls import FORMATS
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.runtime.structured import format_tools, recursive_schema

from .conftest import CHAT_SAMPLE, SAMPLES_DIR
from .test_constraints import _allowed, _feed, compiler, tokenizer  # noqa: F401 (fixtures)


class Node(BaseModel):
    """A tree node."""

    name: str
    children: list[Node] = []


class Reply(BaseModel):
    """A comment and the replies under it, through a second class."""

    text: str
    thread: Thread | None = None


class Thread(BaseModel):
    replies: list[Reply]


class Flat(BaseModel):
    city: str


def _pieces(processor: object, tokenizer: Tokenizer) -> set[str]:
    return {tokenizer.decode([int(t)]).strip() for t in _allowed(processor)} - {""}


def test_only_self_referring_classes_get_their_own_schema() -> None:
    tree = recursive_schema(Node)
    assert tree is not None and tree["type"] == "object" and "$defs" in tree
    assert tree["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert recursive_schema(Reply) is not None  # Reply -> Thread -> Reply
    assert recursive_schema(Flat) is None and recursive_schema({"type": "object"}) is None


def test_a_recursive_tool_constrains_its_nested_calls(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    tools = format_tools([Node])
    assert tools[0]["function"]["name"] == "Node" and tools[0]["function"]["description"] == "A tree node."
    processor = compiler.processor(FORMATS["generic"].plan(tools, "required", False).grammar)
    _feed(processor, tokenizer, '{"tool_call": {"name": "Node", "arguments": {"name": "r", "children": [')
    assert _pieces(processor, tokenizer) and all(p.startswith(("{", "]")) for p in _pieces(processor, tokenizer))
    _feed(processor, tokenizer, '{"name": "a", "children": [{')
    assert all(p.startswith('"') for p in _pieces(processor, tokenizer))  # a key, of Node's, two levels down
    _feed(processor, tokenizer, '"name": "b"}]}]}}}')


def test_a_recursive_structured_output_schema_constrains_its_nested_parts(compiler: GrammarCompiler,
                                                                          tokenizer: Tokenizer) -> None:
    chat = OnnxChatModel(model_path=SAMPLES_DIR / CHAT_SAMPLE)  # not loaded: binding needs no model
    runnable = chat.with_structured_output(Node, method="json_schema")
    schema = runnable.first.kwargs["response_format"]["json_schema"]["schema"]  # type: ignore[attr-defined]
    assert schema["title"] == "Node" and "$defs" in schema
    processor = compiler.processor(Grammar("json_schema", schema))
    _feed(processor, tokenizer, '{"name": "r", "children": [')
    assert all(p.startswith(("{", "]")) for p in _pieces(processor, tokenizer))
    _feed(processor, tokenizer, '{"name": "a", "children": []}]}')
