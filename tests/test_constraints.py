"""Grammars in the engine and the tool-call formats, without LangChain (the sample's tokenizer)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from ortmodels.engine.constraints import Grammar, GrammarCompiler, close_objects
from ortmodels.engine.tokenizer import repaired_tokenizer_json
from ortmodels.engine.toolcalls import FORMATS, ToolCall, detect_format
from ortmodels.errors import GrammarError

from .conftest import CHAT_SAMPLE, SAMPLES_DIR

TOKENIZER = SAMPLES_DIR / CHAT_SAMPLE / "tokenizer.json"
VOCAB = 49152
EOS = 2
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER))


@pytest.fixture(scope="module")
def compiler() -> GrammarCompiler:
    return GrammarCompiler(TOKENIZER, VOCAB, [EOS])


def _allowed(processor: object, vocab: int = VOCAB) -> np.ndarray:
    logits = np.zeros(vocab, dtype=np.float32)
    processor.mask(logits)  # type: ignore[attr-defined]
    return np.flatnonzero(np.isfinite(logits))


def _feed(processor: object, tokenizer: Tokenizer, text: str) -> None:
    for token in tokenizer.encode(text, add_special_tokens=False).ids:
        assert token in _allowed(processor), (text, tokenizer.id_to_token(token))
        processor.accept(token)  # type: ignore[attr-defined]


def test_a_schema_allows_exactly_its_json_and_the_end_only_when_complete(compiler: GrammarCompiler,
                                                                         tokenizer: Tokenizer) -> None:
    schema = close_objects({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
                            "required": ["n"]})
    processor = compiler.processor(Grammar("json_schema", schema))
    first = _allowed(processor)
    assert EOS not in first and all(tokenizer.decode([int(t)]).lstrip().startswith("{") for t in first[:50])
    _feed(processor, tokenizer, '{"n": 7')
    assert EOS not in _allowed(processor)
    assert not any(tokenizer.decode([int(t)]).strip().startswith(("1", "2")) for t in _allowed(processor))
    _feed(processor, tokenizer, "}")
    assert processor.complete and _allowed(processor).tolist() == [EOS]


def test_bound_whitespace_and_closed_objects(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    schema = close_objects({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]})
    assert schema["additionalProperties"] is False
    assert close_objects({"type": "object", "properties": {}, "additionalProperties": True})["additionalProperties"]
    processor = compiler.processor(Grammar("json_schema", schema))
    _feed(processor, tokenizer, '{\n  "a": "x"')
    spaces = tokenizer.token_to_id("Ġ" * 16) or tokenizer.encode(" " * 40, add_special_tokens=False).ids[0]
    allowed = set(_allowed(processor).tolist())
    assert tokenizer.token_to_id(",") not in allowed  # no other key may follow: the object is closed
    _feed(processor, tokenizer, "\n" + " " * 8)
    assert spaces not in _allowed(processor) or tokenizer.decode([spaces]).strip()  # no endless blank lines


def test_graph_vocabulary_past_the_tokenizer_is_never_allowed(tokenizer: Tokenizer) -> None:
    wide = GrammarCompiler(TOKENIZER, VOCAB + 64, [EOS])
    processor = wide.processor(Grammar("regex", "[a-z]+"))
    logits = np.zeros(VOCAB + 64, dtype=np.float32)
    processor.mask(logits)
    assert np.isneginf(logits[VOCAB:]).all() and np.isfinite(logits[:VOCAB]).any()


def test_regex_and_lark_grammars(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    processor = compiler.processor(Grammar("regex", r"(yes|no)"))
    _feed(processor, tokenizer, "yes")
    assert _allowed(processor).tolist() == [EOS]
    lark = compiler.processor(Grammar("lark", 'start: "A" | "B" "C"'))
    assert {tokenizer.decode([int(t)]) for t in _allowed(lark)} >= {"A", "B"}


def test_masking_allocates_nothing_vocabulary_sized_per_token(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    processor = compiler.processor(Grammar("json_object"))
    logits = np.zeros(VOCAB, dtype=np.float32)
    processor.mask(logits)  # warm: the first mask builds llguidance's caches
    tracemalloc.start()
    for _ in range(20):
        logits[:] = 0
        processor.mask(logits)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * VOCAB  # bytes: numpy's fixed ufunc buffer, not a float per vocabulary entry (4 * VOCAB)


@pytest.mark.parametrize("schema, word", [
    ({"type": "object", "properties": {"x": {"type": "strin"}}}, "strin"),
    ({"type": "object", "properties": {"x": {"$ref": "#/defs/missing"}}}, "missing"),
])
def test_a_schema_the_compiler_cannot_take_is_named_before_generating(compiler: GrammarCompiler, schema: dict,
                                                                      word: str) -> None:
    with pytest.raises(GrammarError, match=word):
        compiler.processor(Grammar("json_schema", schema))


def test_a_triggered_grammar_waits_for_its_token(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    trigger = tokenizer.token_to_id("<|im_start|>")
    processor = compiler.processor(Grammar("regex", "[0-9]+"), trigger_token=trigger)
    assert len(_allowed(processor)) == VOCAB and not processor.active
    processor.accept(tokenizer.encode("Hello", add_special_tokens=False).ids[0])
    assert not processor.active
    processor.accept(trigger)
    assert processor.active and all(tokenizer.decode([int(t)]).isdigit() for t in _allowed(processor))


def test_the_gguf_decoder_quirk_is_repaired() -> None:
    quirky = {"pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Replace"}, {"type": "ByteLevel", "x": 1}]}}
    assert repaired_tokenizer_json(quirky)["decoder"] == {"type": "ByteLevel", "x": 1}
    assert repaired_tokenizer_json({"decoder": {"type": "ByteLevel"}}) is None
    assert json.loads(TOKENIZER.read_text())["decoder"]["type"] in ("ByteLevel", "Sequence")


# -- tool-call formats ---------------------------------------------------------------------------


def test_formats_are_detected_from_the_template() -> None:
    assert detect_format((SAMPLES_DIR / CHAT_SAMPLE / "chat_template.jinja").read_text()) == "generic"
    assert detect_format("{% for tool in tools %}{{ tool | tojson }}{% endfor %}<tool_call>") == "hermes"
    assert detect_format("{% if tools %}Environment: ipython{% endif %}") == "llama3"


def test_generic_format_round_trip(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    fmt = FORMATS["generic"]
    messages, extra = fmt.prompt([{"role": "user", "content": "Weather in Oslo?"}], [WEATHER, TIME], "required")
    assert extra == {} and messages[0]["role"] == "system" and "get_weather" in messages[0]["content"]
    plan = fmt.plan([WEATHER, TIME], "get_time", parallel=False)
    processor = compiler.processor(plan.grammar)
    _feed(processor, tokenizer, '{"tool_call": {"name": "get_time", "arguments": {"zone": "CET"}}}')
    assert processor.complete
    content, calls = fmt.parse('{"tool_call": {"name": "get_time", "arguments": {"zone": "CET"}}}', [TIME])
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_time", {"zone": "CET"})]
    assert fmt.parse('{"response": "It is sunny."}', [WEATHER]) == ("It is sunny.", [])
    _, many = fmt.parse('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "A"}}, '
                        '{"name": "get_time", "arguments": {"zone": "UTC"}}]}', [WEATHER, TIME])
    assert [c.name for c in many] == ["get_weather", "get_time"]
    history = fmt.history_call("", [ToolCall("get_time", {"zone": "UTC"}, "call_1")])
    assert json.loads(history["content"]) == {"tool_call": {"name": "get_time", "arguments": {"zone": "UTC"}}}
    assert "tool_error" in fmt.history_result("boom", "call_1", "get_time", error=True)["content"]


def test_generic_forced_call_cannot_name_another_tool(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    processor = compiler.processor(FORMATS["generic"].plan([WEATHER, TIME], "get_weather", False).grammar)
    _feed(processor, tokenizer, '{"tool_call": {"name": "get_')
    allowed = {tokenizer.decode([int(t)]) for t in _allowed(processor)}
    assert "weather" in allowed and "time" not in allowed


def test_hermes_format_parses_calls_and_builds_a_lark_grammar(tmp_path: Path) -> None:
    fmt = FORMATS["hermes"]
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}</tool_call>')
    content, calls = fmt.parse(text, [WEATHER, TIME])
    assert content == "Let me check." and [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "UTC"})]
    messages, extra = fmt.prompt([{"role": "user", "content": "hi"}], [WEATHER], "auto")
    assert extra == {"tools": [WEATHER]} and messages == [{"role": "user", "content": "hi"}]
    assert fmt.plan([WEATHER], "auto", False).trigger == "<tool_call>"
    # A tokenizer that has the tags as special tokens, as Qwen2.5's does.
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.add_special_tokens(["<tool_call>", "</tool_call>"])
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    compiler = GrammarCompiler(path, tokenizer.get_vocab_size(), [EOS])
    forced = compiler.processor(fmt.plan([WEATHER], "required", False, frozenset({"<tool_call>", "</tool_call>"})).grammar)
    ids = tokenizer.encode('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
                           add_special_tokens=False).ids
    for token in ids:
        assert token in _allowed(forced, tokenizer.get_vocab_size())
        forced.accept(token)
    assert forced.complete


def test_llama3_format_reads_its_json_call() -> None:
    fmt = FORMATS["llama3"]
    content, calls = fmt.parse('{"name": "get_weather", "parameters": {"city": "Rome"}}', [WEATHER])
    assert content == "" and calls[0].arguments == {"city": "Rome"}
    assert fmt.parse("Just text.", [WEATHER]) == ("Just text.", [])
    assert fmt.plan([WEATHER], "auto", False).grammar is None
    assert "parameters" in json.dumps(fmt.plan([WEATHER], "required", False).grammar.source)


SHIP = {"type": "function", "function": {"name": "ship", "parameters": {
    "type": "object", "properties": {"to": {"$ref": "#/$defs/Address"}, "gift": {"$ref": "#/definitions/Flag"}},
    "required": ["to", "gift"],
    "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    "definitions": {"Flag": {"type": "boolean"}}}}}
TREE = {"type": "function", "function": {"name": "tree", "parameters": {  # "#": the parameters themselves
    "type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}},
                                     "same": {"$ref": "#/properties/v"}}, "required": ["v", "kids", "same"]}}}


@pytest.mark.parametrize(("fmt", "call", "cut", "starts"), [
    ("generic", '{"tool_call": {"name": "ship", "arguments": {"to": {"city": "Oslo"}, "gift": true}}}',
     '"to": ', ("{",)),
    ("generic", '{"tool_call": {"name": "tree", "arguments": {"v": 1, "kids": [{"v": 2, "kids": [], "same": 2}], '
                '"same": 1}}}', '"kids": [', ("{", "]")),
    ("llama3", '{"name": "ship", "parameters": {"to": {"city": "Oslo"}, "gift": false}}', '"gift": ', ("t", "f")),
    ("hermes", '<tool_call>{"name": "ship", "arguments": {"to": {"city": "Oslo"}, "gift": true}}</tool_call>',
     '"to": ', ("{",)),
])
def test_parameters_with_references_constrain_a_call(compiler: GrammarCompiler, tokenizer: Tokenizer, fmt: str,
                                                     call: str, cut: str, starts: tuple[str, ...]) -> None:
    """``$ref`` in a tool's parameters points from their root (``#/$defs/...``, ``#``), as OpenAI's
    and MCP's tool schemas write them; nested in the call's schema, they still resolve."""
    tools = [WEATHER, SHIP, TREE]
    processor = compiler.processor(FORMATS[fmt].plan(tools, "required", False).grammar)
    _feed(processor, tokenizer, call)
    assert processor.complete
    partial = compiler.processor(FORMATS[fmt].plan(tools, "required", False).grammar)
    _feed(partial, tokenizer, call[:call.index(cut) + len(cut)])
    allowed = {tokenizer.decode([int(t)]).strip() for t in _allowed(partial)} - {""}
    assert allowed and all(piece.startswith(starts) for piece in allowed), sorted(allowed)[:20]
    assert "$defs" not in SHIP["function"]["parameters"]["properties"]["to"]  # the caller's tools untouched
    assert set(SHIP["function"]["parameters"]) == {"type", "properties", "required", "$defs", "definitions"}


@pytest.mark.parametrize("grammar", [
    Grammar("regex", r"x<\|im_start\|>y"),
    Grammar("json_schema", {"enum": ["x<|im_end|>"]}),
    Grammar("lark", 'start: "x<|im_start|>y"'),
])
def test_a_control_tokens_text_in_a_grammar_is_written_as_text(compiler: GrammarCompiler, tokenizer: Tokenizer,
                                                               grammar: Grammar) -> None:
    """A literal that spells a control token is text (``<|im_start|>`` here is ids 44, 108, ...),
    never the token: llguidance tokenizes forced text with the tokenizer's own encode, which
    would turn it into the control token and end or derail the answer."""
    processor = compiler.processor(grammar)
    _feed(processor, tokenizer, '"x' if grammar.kind == "json_schema" else "x")
    allowed = set(_allowed(processor).tolist())
    assert allowed and not allowed & {0, 1, 2}, sorted(allowed)[:10]
    _feed(processor, tokenizer, "<|")
    assert not set(_allowed(processor).tolist()) & {0, 1, 2}


def test_a_special_token_a_lark_grammar_names_is_still_that_token(compiler: GrammarCompiler) -> None:
    processor = compiler.processor(Grammar("lark", "start: <|endoftext|>"))  # the end alone is an empty answer
    assert _allowed(processor).tolist() == [0]
