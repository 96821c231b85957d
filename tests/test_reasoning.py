"""Reasoning models: ``<think>…</think>`` apart from the answer, ``enable_thinking``, a reasoning
budget, and grammars that start after the reasoning.

The splitter and the gate are checked on their own first (every cut of a tag across deltas).
Then a tiny random Qwen3 with Qwen3-0.6B's real chat template and ``<think>``/``</think>`` as
single tokens is exported once for the module. Random weights never choose to reason, so
every reasoning here is forced through the grammar path, never left to luck: thinking asked
for (``enable_thinking=True``) forces the opening tag, the budget forces the closing one, and
a JSON schema holds the answer after it; a Lark grammar writes a whole block itself. Greedy
decoding makes each answer the same on every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from ortmodels.engine.reasoning import (
    ReasoningGate,
    ReasoningSplitter,
    ThinkTokens,
    detect_reasoning,
    opens_reasoning,
)
from ortmodels.engine.sampling import BannedTokens
from ortmodels.errors import ChatInputError
from tests.tiny_decoders import CHAT_TEMPLATE, QWEN3_TEMPLATE

if TYPE_CHECKING:  # the server tests import their clients when they run
    import openai

    from tests.test_serve import Server

# -- the splitter and the gate, on their own ------------------------------------------------------


def _split(text: str, cuts: list[int], inside: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter("think-tags", inside=inside)
    reasoning, answer = "", ""
    for start, end in zip([0, *cuts], [*cuts, len(text)]):
        r, a = splitter.feed(text[start:end])
        reasoning, answer = reasoning + r, answer + a
    r, a = splitter.flush()
    return reasoning + r, answer + a


@pytest.mark.parametrize(("text", "inside", "expected"), [
    ("<think>\nLet me see.\n</think>\n\nParis.", False, ("Let me see.", "Paris.")),
    ("\nThe prompt opened it.\n</think>\n\nParis.", True, ("The prompt opened it.", "Paris.")),
    ("Paris. A <think> later is answer text.", False, ("", "Paris. A <think> later is answer text.")),
    ("<think>\ncut by max_tokens ", False, ("cut by max_tokens", "")),
    ("cut by max_tokens inside", True, ("cut by max_tokens inside", "")),
    ("  <thin", False, ("", "  <thin")),
])
def test_the_splitter_reads_tags_cut_anywhere_across_deltas(text: str, inside: bool,
                                                           expected: tuple[str, str]) -> None:
    for cut in range(len(text) + 1):  # every cut in two, and one character at a time
        assert _split(text, [cut], inside) == expected, cut
    assert _split(text, list(range(1, len(text))), inside) == expected


def test_the_format_is_read_from_the_template() -> None:
    qwen3 = QWEN3_TEMPLATE.read_text()
    assert detect_reasoning(qwen3) == "think-tags"
    assert detect_reasoning(CHAT_TEMPLATE) == "none"
    assert opens_reasoning("<|Assistant|><think>\n", "think-tags")
    assert not opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n", "think-tags")
    assert not opens_reasoning("<|im_start|>assistant\n", "none")


TAGS = ThinkTokens(open_id=7, close_id=8)


def _choose(gate: ReasoningGate, favourite: int, size: int = 16) -> int:
    """The token a greedy model whose favourite is ``favourite`` writes under ``gate``."""
    logits = np.zeros(size, dtype=np.float32)
    logits[favourite] = 5.0
    gate.mask(logits)
    token = int(np.argmax(logits))
    gate.accept(token)
    return token


def test_the_gate_forces_the_tags_at_the_budget_then_hands_over_to_the_grammar() -> None:
    answer = BannedTokens((3,))  # the "grammar": token 3 is never allowed in the answer
    gate = ReasoningGate(TAGS, inside=False, budget=2, force_open=True, answer=answer, end_ids=(0,))
    chosen = [_choose(gate, favourite) for favourite in (3, 0, 3, 3, 3, 3)]
    # forced open; 0 (the end) banned while reasoning; two free tokens; forced close; the answer, 3 banned
    assert chosen[0] == TAGS.open_id and chosen[1] != 0 and chosen[2] == 3
    assert chosen[3] == TAGS.close_id and chosen[4] != 3 and gate.state == "answer"


def test_the_gate_lets_the_model_choose_to_answer_at_once() -> None:
    gate = ReasoningGate(TAGS, inside=False, budget=None, answer=BannedTokens((3,)))
    assert _choose(gate, TAGS.open_id) == TAGS.open_id and gate.state == "reasoning"
    gate = ReasoningGate(TAGS, inside=False, budget=None, answer=BannedTokens((3,)))
    assert _choose(gate, 3) != 3 and gate.state == "answer"  # the grammar held the first answer token
    gate = ReasoningGate(TAGS, inside=False, budget=0, may_open=False, ban_open=True)
    assert _choose(gate, TAGS.open_id) != TAGS.open_id  # a budget of 0: no reasoning at all


# -- a tiny Qwen3 with its real template -----------------------------------------------------------

NAME = "tiny-qwen3-think"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
          "required": ["city"], "additionalProperties": False}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny reasoning model, exported once (fp32) for the module."""
    from ortmodels.export import export_model
    from ortmodels.store import ModelStore
    from tests.tiny_decoders import build_tiny_decoder

    root = tmp_path_factory.mktemp("think") / "models"
    build_tiny_decoder(root / NAME, "qwen3", thinking_template=QWEN3_TEMPLATE.read_text())
    manifest = export_model(ModelStore(root), NAME, ["fp32"]).manifest
    assert manifest.chat is not None and manifest.chat.reasoning_format == "think-tags"
    return root


@pytest.fixture(scope="module")
def chat(store: Path) -> Iterator[object]:
    from ortmodels.runtime.chat import OnnxChatModel

    model = OnnxChatModel(model_path=store / NAME, dtype="fp32", max_tokens=24)
    model.load()
    yield model
    model.unload()


def _events(chat: object, **options: object) -> tuple[list[object], object]:
    """The service's events for MESSAGES, and the engine request they came from."""
    from ortmodels.runtime.options import ChatOptions

    service = chat.loaded  # type: ignore[attr-defined]
    prepared = service.prepare(MESSAGES, chat.with_defaults(ChatOptions.checked(**options)))  # type: ignore[attr-defined]
    return list(service.stream(prepared)), prepared.request


def _texts(events: list[object]) -> tuple[str, str]:
    from ortmodels.runtime.events import ReasoningDelta, TextDelta

    return ("".join(e.text for e in events if isinstance(e, ReasoningDelta)),
            "".join(e.text for e in events if isinstance(e, TextDelta)))


@pytest.mark.slow
def test_enable_thinking_switches_the_templates_empty_block(chat: object) -> None:
    from ortmodels.runtime.options import ChatOptions

    service = chat.loaded  # type: ignore[attr-defined]
    think = service.think_tokens
    assert think is not None and service.reasoning_format == "think-tags"

    def tail(**options: object) -> str:
        ids = service.prompt_ids(MESSAGES, ChatOptions.checked(**options))
        return service.tokenizer.decode(ids, skip_special_tokens=False)

    assert tail(enable_thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tail(reasoning_budget=0).endswith("<think>\n\n</think>\n\n")  # no budget, no thinking
    for on in ({"enable_thinking": True}, {}):  # Qwen3's default: thinking on, the model opens the block
        assert tail(**on).endswith("<|im_start|>assistant\n")
    off = service.prompt_ids(MESSAGES, ChatOptions.checked(enable_thinking=False))
    assert off.count(think.open_id) == 1 and off.count(think.close_id) == 1  # each tag one token


@pytest.mark.slow
def test_an_older_manifest_without_the_field_reads_the_template(chat: object) -> None:
    from ortmodels.runtime.service import ChatService
    from ortmodels.store.manifest import ChatSpec

    loaded = chat.loaded  # type: ignore[attr-defined]
    older = ChatSpec.model_validate({k: v for k, v in loaded.spec.model_dump().items() if k != "reasoning_format"})
    assert older.reasoning_format is None
    service = ChatService(loaded.engine, loaded.tokenizer, loaded.template, older, loaded.variant, loaded.device,
                          loaded.grammars)
    assert service.reasoning_format == "think-tags" and service.think_tokens == loaded.think_tokens


@pytest.mark.slow
def test_thinking_off_reports_no_reasoning(chat: object) -> None:
    """vllm#19839 and ollama#13154: with thinking off the whole answer is content; the
    template's own empty block is prompt, never reasoning."""
    from ortmodels.runtime.events import ReasoningDelta

    events, request = _events(chat, enable_thinking=False, max_tokens=12)
    reasoning, answer = _texts(events)
    assert not any(isinstance(e, ReasoningDelta) for e in events) and reasoning == ""
    assert events[-1].usage.reasoning_tokens == 0
    assert answer.strip() and request.generated[0] != chat.loaded.think_tokens.open_id  # type: ignore[attr-defined]


@pytest.mark.slow
def test_the_budget_cuts_the_reasoning_and_the_answer_follows(chat: object) -> None:
    think = chat.loaded.think_tokens  # type: ignore[attr-defined]
    events, request = _events(chat, enable_thinking=True, reasoning_budget=3, max_tokens=24)
    generated = request.generated
    assert generated[0] == think.open_id  # thinking on: the block opened
    close = generated.index(think.close_id)
    assert close <= 1 + 3  # at most 3 reasoning tokens, then the closing tag
    reasoning, answer = _texts(events)
    assert reasoning and "<think>" not in reasoning + answer and "</think>" not in reasoning + answer
    assert len(generated) > close + 1  # the answer came after the cut
    assert events[-1].usage.reasoning_tokens == close + 1  # the block, its two tags included


@pytest.mark.slow
def test_max_tokens_counts_reasoning_and_answer(chat: object) -> None:
    from ortmodels.runtime.events import Finished

    events, request = _events(chat, enable_thinking=True, max_tokens=4)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason == "length"
    assert finished.usage.completion_tokens == len(request.generated) == 4 == finished.usage.reasoning_tokens
    reasoning, answer = _texts(events)
    # all four went to the reasoning: none left for an answer (the random model's three reasoning
    # tokens are bytes of one unfinished character, which a cut answer leaves out: no text)
    assert answer == "" and "<think>" not in reasoning


class _Script:
    """A logits processor that makes the model write exactly ``ids`` (the engine's own path otherwise)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.done = ids, 0

    def mask(self, logits: np.ndarray) -> None:
        wanted = logits[self.ids[self.done]]
        logits[:] = -np.inf
        logits[self.ids[self.done]] = wanted

    def accept(self, token_id: int) -> None:
        self.done += 1


@pytest.mark.slow
@pytest.mark.parametrize("stop", [None, "</think>\n\nX"])
def test_reasoning_tokens_are_counted_by_the_token_when_the_tags_come_in_pieces(chat: object, stop: str | None) -> None:
    """Both tags written as plain tokens (``<``, ``t``, ``h``...), not the single ones; with a stop
    string the closing tag and the blanks after it begin, their text is released tokens late.
    ``reasoning_tokens`` is still the output's tokens through the closing tag's last piece."""
    from ortmodels.runtime.options import ChatOptions

    service = chat.loaded  # type: ignore[attr-defined]
    pieces = ["<", "think", ">", "\n", "Paris", " is", " it", "</", "think", ">", "\n\n", "Paris", "."]
    encoded = [service.tokenizer.encode(piece, add_special_tokens=False).ids for piece in pieces]
    script = [token for ids in encoded for token in ids]
    through_close = sum(len(ids) for ids in encoded[:10])
    think = service.think_tokens
    assert think.open_id not in script and think.close_id not in script and len(encoded[1]) > 1
    options = ChatOptions.checked(max_tokens=len(script), stop=[stop] if stop else None)
    prepared = service.prepare(MESSAGES, chat.with_defaults(options))  # type: ignore[attr-defined]
    assert not prepared.inside
    prepared.request.processor = _Script(script)
    events = list(service.stream(prepared))
    assert prepared.request.generated == script
    assert _texts(events) == ("Paris is it", "Paris.")
    assert events[-1].usage.reasoning_tokens == through_close


@pytest.mark.slow
def test_structured_output_validates_after_the_reasoning(chat: object) -> None:
    import jsonschema

    events, request = _events(chat, enable_thinking=True, reasoning_budget=4, response_format=JSON_FORMAT,
                              max_tokens=64)
    reasoning, answer = _texts(events)
    assert reasoning and request.generated[0] == chat.loaded.think_tokens.open_id  # type: ignore[attr-defined]
    jsonschema.validate(json.loads(answer), SCHEMA)


@pytest.mark.slow
def test_a_forced_tool_call_comes_after_the_reasoning(chat: object) -> None:
    """Qwen3's template offers the tools (Hermes ``<tool_call>``); the call's grammar is armed at
    the closing tag."""
    from ortmodels.runtime.events import Finished, ToolCalls

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 6}}, "required": ["city"]}}}]
    events, request = _events(chat, enable_thinking=True, reasoning_budget=3, tools=tools,
                              tool_choice="get_weather", max_tokens=128)
    reasoning, _ = _texts(events)
    calls = [e for e in events if isinstance(e, ToolCalls)]
    assert reasoning and request.generated[0] == chat.loaded.think_tokens.open_id  # type: ignore[attr-defined]
    assert len(calls) == 1 and [c.name for c in calls[0].calls] == ["get_weather"]
    assert "<think>" not in calls[0].content and "</think>" not in calls[0].content
    assert isinstance(events[-1], Finished) and events[-1].reason == "tool_calls"


@pytest.mark.slow
def test_a_grammar_that_writes_the_block_itself_is_split_even_with_thinking_off(chat: object) -> None:
    """"Nothing is parsed as reasoning unless the model writes the tags": here a Lark grammar
    makes it write them, after the template's empty block."""
    lark = {"type": "lark", "lark": 'start: <think> "\\nweighing it\\n" </think> "\\n\\nParis"'}
    events, _ = _events(chat, enable_thinking=False, response_format=lark)
    assert _texts(events) == ("weighing it", "Paris")


@pytest.mark.slow
def test_langchain_carries_the_reasoning_in_additional_kwargs(chat: object) -> None:
    from langchain_core.messages import AIMessage
    from pydantic import BaseModel, Field

    thinking = chat.bind(enable_thinking=True, reasoning_budget=3)  # type: ignore[attr-defined]
    whole = thinking.invoke("What is the capital of France?")
    assert isinstance(whole, AIMessage) and whole.additional_kwargs["reasoning_content"]
    assert "<think>" not in whole.content and "</think>" not in whole.content
    chunks = list(thinking.stream("What is the capital of France?"))
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed += chunk
    assert streamed.additional_kwargs["reasoning_content"] == whole.additional_kwargs["reasoning_content"]
    assert streamed.content == whole.content
    first_content = next(i for i, c in enumerate(chunks) if c.content)
    assert all(not c.additional_kwargs for c in chunks[first_content:])  # the reasoning came first

    off = chat.invoke("What is the capital of France?", enable_thinking=False)  # type: ignore[attr-defined]
    assert "reasoning_content" not in off.additional_kwargs and off.content

    class City(BaseModel):
        city: str = Field(max_length=12)

    # thinking on as the model's own default (its fields), the schema held after the reasoning
    thinker = chat.model_copy(update={"enable_thinking": True, "reasoning_budget": 3, "max_tokens": 48})  # type: ignore[attr-defined]
    raw = thinker.with_structured_output(City, include_raw=True).invoke("What is the capital of France?")
    assert raw["parsing_error"] is None and isinstance(raw["parsed"], City)
    assert raw["raw"].additional_kwargs["reasoning_content"]


def test_an_earlier_turns_reasoning_blocks_are_left_out_of_the_prompt(chat: object) -> None:
    """A transcript with reasoning blocks (LangChain's ``output_version="v1"``, Anthropic's
    ``thinking``) continues; the reasoning is not shown again, as with ``reasoning_content``."""
    from langchain_core.messages import AIMessage, HumanMessage

    def history(answer: AIMessage) -> list:
        return [HumanMessage("What is 2 + 2?"), answer, HumanMessage("And 3 + 3?")]

    plain = chat.prompt_token_ids(history(AIMessage("4")))  # type: ignore[attr-defined]
    for blocks in ([{"type": "reasoning", "reasoning": "Two and two."}, {"type": "text", "text": "4"}],
                   [{"type": "thinking", "thinking": "Two and two.", "signature": ""}, {"type": "text", "text": "4"}]):
        assert chat.prompt_token_ids(history(AIMessage(content=blocks))) == plain  # type: ignore[attr-defined]
    with pytest.raises(ChatInputError, match="reasoning content"):  # a user's turn has no reasoning to leave out
        chat.prompt_token_ids([HumanMessage(content=[{"type": "reasoning", "reasoning": "x"}])])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``ortmodels serve`` of the tiny reasoning model for the module's server tests."""
    from tests.test_serve import _start, _stop

    running = _start(tmp_path_factory.mktemp("serve-think"), "--models", NAME, models_dir=store)
    yield running
    _stop(running)


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


@pytest.mark.slow
def test_the_server_sends_reasoning_content_whole_and_streamed(server: Server, client: openai.OpenAI) -> None:
    import httpx
    import jsonschema

    thinking = {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_budget": 4}
    asked = dict(model=NAME, messages=MESSAGES, max_tokens=64, temperature=0,
                 response_format=JSON_FORMAT, extra_body=thinking)
    whole = client.chat.completions.create(**asked).choices[0].message
    reasoning = (whole.model_extra or {}).get("reasoning_content")
    assert reasoning and "</think>" not in reasoning and "<think>" not in (whole.content or "")
    jsonschema.validate(json.loads(whole.content), SCHEMA)

    deltas = [c.choices[0].delta for c in client.chat.completions.create(**asked, stream=True) if c.choices]
    thought = [(d.model_extra or {}).get("reasoning_content") or "" for d in deltas]
    content = [d.content or "" for d in deltas]
    assert "".join(thought) == reasoning and "".join(content) == whole.content
    last_thought = max(i for i, t in enumerate(thought) if t)
    assert all(not c for c in content[:last_thought + 1])  # the reasoning arrived before the answer

    off = dict(model=NAME, messages=MESSAGES, max_tokens=12, extra_body={
        "chat_template_kwargs": {"enable_thinking": False}})
    answer = client.chat.completions.create(**off).choices[0].message
    assert "reasoning_content" not in (answer.model_extra or {}) and answer.content
    for chunk in client.chat.completions.create(**off, stream=True):
        assert all("reasoning_content" not in (c.delta.model_extra or {}) for c in chunk.choices)

    for fields, named in [({"chat_template_kwargs": {"thinking_mode": "on"}}, "enable_thinking"),
                          ({"chat_template_kwargs": {"enable_thinking": "maybe"}}, "enable_thinking"),
                          ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
                          ({"enable_thinking": True, "chat_template_kwargs": {"enable_thinking": False}},
                           "disagree"),
                          ({"reasoning_budget": -2}, "reasoning_budget"),
                          ({"reasoning_budget": "4"}, "reasoning_budget")]:
        bad = httpx.post(f"{server.v1}/chat/completions", timeout=60,
                         json={"model": NAME, "messages": MESSAGES, "max_tokens": 4, **fields})
        assert bad.status_code == 400 and named in bad.text, (fields, bad.text)

    # Anthropic's Messages API: ``thinking`` switches it, the reasoning comes back as thinking blocks
    anthropic = pytest.importorskip("anthropic")
    claude = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    think = dict(model=NAME, max_tokens=24, messages=MESSAGES, thinking={"type": "enabled", "budget_tokens": 4})
    message = claude.messages.create(**think)
    kinds = [block.type for block in message.content]
    assert kinds[0] == "thinking" and message.content[0].thinking and "text" in kinds, kinds
    with claude.messages.stream(**think) as stream:
        events = list(stream)
        final = stream.get_final_message()
    thought = "".join(e.delta.thinking for e in events
                      if e.type == "content_block_delta" and e.delta.type == "thinking_delta")
    assert thought == final.content[0].thinking == message.content[0].thinking
    plain = claude.messages.create(model=NAME, max_tokens=8, messages=MESSAGES, thinking={"type": "disabled"})
    assert all(block.type != "thinking" for block in plain.content) and plain.content
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        claude.messages.create(model=NAME, max_tokens=8, messages=MESSAGES, thinking={"type": "enabled"})


def _reasoning_of(message: Any) -> str | None:
    return (message.model_extra or {}).get("reasoning_content")


@pytest.mark.slow
def test_reasoning_effort_switches_and_budgets_the_thinking(server: Server, client: openai.OpenAI) -> None:
    """Chat's ``reasoning_effort``: ``none`` / ``minimal`` switch thinking off, ``low`` on (the
    opening tag forced: random weights never choose it) within its budget; ``xhigh`` is named."""
    import httpx
    import openai

    def ask(effort: str, **extra: object) -> Any:
        return client.chat.completions.create(
            model=NAME, messages=MESSAGES, max_tokens=16, temperature=0, reasoning_effort=effort,
            extra_body=extra or None).choices[0].message

    for off in ("none", "minimal"):
        answer = ask(off)
        assert _reasoning_of(answer) is None and answer.content, off
    low = ask("low")
    assert _reasoning_of(low) and not low.content  # low's budget (512) outlasts max_tokens: all reasoning
    budgeted = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=16, temperature=0,
                                              reasoning_effort="low", extra_body={"reasoning_budget": 3})
    assert _reasoning_of(budgeted.choices[0].message) and budgeted.choices[0].message.content  # the budget refines
    details = budgeted.usage.completion_tokens_details
    assert details is not None and 2 < details.reasoning_tokens <= 5 < budgeted.usage.completion_tokens
    with pytest.raises(openai.BadRequestError) as beyond:
        ask("xhigh")
    assert beyond.value.body["param"] == "reasoning_effort" and "'high' already" in beyond.value.body["message"]
    for fields in ({"reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": True}},
                   {"reasoning_effort": "high", "reasoning_budget": 0}):
        bad = httpx.post(f"{server.v1}/chat/completions", timeout=60,
                         json={"model": NAME, "messages": MESSAGES, "max_tokens": 4, **fields})
        assert bad.status_code == 400 and "give one of them" in bad.text, (fields, bad.text)
        assert bad.json()["error"]["param"] == "reasoning_effort"


@pytest.mark.slow
def test_the_token_count_follows_the_template_switches(server: Server, client: openai.OpenAI) -> None:
    """``/tokenize`` with ``messages`` reads ``chat_template_kwargs`` and ``reasoning_effort`` as
    chat does: Qwen3's empty block for thinking off is counted, as the completion's prompt_tokens."""
    import httpx

    counts = {}
    for name, fields in {"off": {"chat_template_kwargs": {"enable_thinking": False}},
                         "none": {"reasoning_effort": "none"}, "on": {"chat_template_kwargs": {"enable_thinking": True}},
                         "default": {}}.items():
        counted = httpx.post(f"{server.url}/tokenize", json={"model": NAME, "messages": MESSAGES, **fields},
                             timeout=60)
        assert counted.status_code == 200, counted.text
        counts[name] = counted.json()["count"]
        chat = {k: v for k, v in fields.items() if k == "reasoning_effort"}
        answer = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=1, **chat,
                                                extra_body={k: v for k, v in fields.items() if k != "reasoning_effort"})
        assert counts[name] == answer.usage.prompt_tokens, name
    assert counts["off"] == counts["none"] > counts["on"] == counts["default"]  # "<think>\n\n</think>\n\n"


@pytest.mark.slow
def test_responses_give_the_reasoning_as_its_own_item_whole_and_streamed(server: Server, client: openai.OpenAI) -> None:
    """``/v1/responses``: a ``reasoning`` item (its text as ``reasoning_text`` content) before the
    message, and ``response.reasoning_text.delta`` events before the answer's; ``reasoning.effort``
    switches it; every event read by the client's own models."""
    import jsonschema

    from tests.test_serve_responses import _events

    body = {"model": NAME, "input": MESSAGES[0]["content"], "max_output_tokens": 64, "temperature": 0,
            "reasoning": {"effort": "low"}, "text": {"format": {"type": "json_schema", "name": "answer",
                                                                "schema": SCHEMA}}}
    asked = {**body, "extra_body": {"reasoning_budget": 4}}  # the client's spelling of an ortmodels field
    whole = client.responses.create(**asked)
    reasoning, message = whole.output
    assert reasoning.type == "reasoning" and reasoning.status == "completed" and reasoning.summary == []
    thought = reasoning.content[0].text
    assert reasoning.content[0].type == "reasoning_text" and thought and "<think>" not in thought + whole.output_text
    assert message.type == "message" and whole.reasoning.effort == "low"
    assert 2 < whole.usage.output_tokens_details.reasoning_tokens < whole.usage.output_tokens  # the tags, <= 4 between
    jsonschema.validate(json.loads(whole.output_text), SCHEMA)

    events = _events(server, {**body, "reasoning_budget": 4})  # each payload read by the client's own model
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.reasoning_text.delta"]
    texts = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(d.delta for d in deltas) == thought and "".join(t.delta for t in texts) == whole.output_text
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert {d.output_index for d in deltas} == {0} and {t.output_index for t in texts} == {1}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.status == "completed" and [i.type for i in final.output] == ["reasoning", "message"]
    with client.responses.stream(**asked) as stream:
        accumulated = stream.get_final_response()  # the client's own accumulator takes every event
    assert accumulated.output_text == whole.output_text and accumulated.output[0].content[0].text == thought

    plain = client.responses.create(model=NAME, input=MESSAGES[0]["content"], max_output_tokens=12,
                                    reasoning={"effort": "none"})
    assert [item.type for item in plain.output] == ["message"] and plain.output_text
    # the reasoning is not carried into the next turn's prompt (as Qwen3's template drops it)
    later = client.responses.create(model=NAME, input="And Spain?", previous_response_id=whole.id,
                                    max_output_tokens=1, reasoning={"effort": "none"})
    assert later.status in ("completed", "incomplete")


@pytest.mark.slow
def test_ortmodels_chat_writes_the_reasoning_apart_and_takes_think_switches(store: Path) -> None:
    """``ortmodels chat``: the answer alone on stdout, the reasoning on stderr; ``--think``
    forces the block open, ``--no-think`` leaves none."""
    from tests.test_cli import ortmodels

    thinking = ortmodels("chat", NAME, "What is the capital of France?", "--max-tokens", "12", "--temperature", "0",
                         "--think", models_dir=store)
    assert thinking.returncode == 0, thinking.stderr
    assert thinking.stderr.strip() and "<think>" not in thinking.stdout and "</think>" not in thinking.stderr
    plain = ortmodels("chat", NAME, "What is the capital of France?", "--max-tokens", "12", "--temperature", "0",
                      "--no-think", models_dir=store)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() and not plain.stderr.strip()
