"""A conversation's earlier tool calls and results, as every way in hands them to the template.

Arguments that are not JSON (Python's ``NaN``, ``Infinity``, a datetime) are refused where they
would be written back into a prompt, and read nowhere: a model that writes ``NaN`` has made no
call. A tool result must answer a call an earlier assistant turn made, in-process as on the
server (whose APIs' own, stricter rules answer first, with a 400).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from ortmodels.engine.json_text import NotJsonNumber, loads, non_json_reason
from ortmodels.engine.toolcalls import FORMATS
from ortmodels.errors import ChatInputError
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.runtime.conversation import template_messages
from ortmodels.runtime.messages import to_template_messages

from .conftest import CHAT_SAMPLE, SAMPLES_DIR


def _called(args: dict) -> list[BaseMessage]:
    return [HumanMessage("Weather in Paris?"),
            AIMessage("", tool_calls=[{"name": "get_weather", "args": args, "id": "call_1"}])]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("fmt", ["generic", "hermes", "llama3"])
def test_arguments_that_are_not_json_are_refused_naming_the_message_and_tool(value: float, fmt: str) -> None:
    messages = [*_called({"city": "Paris", "days": [1, value]}), ToolMessage("Sunny", tool_call_id="call_1")]
    with pytest.raises(ChatInputError, match=r"Message 1's call of tool 'get_weather' .*NaN and Infinity"):
        to_template_messages(messages, FORMATS[fmt])


def test_arguments_json_cannot_write_are_refused() -> None:
    messages = [*_called({"when": datetime.date(2026, 12, 5)}), ToolMessage("Sunny", tool_call_id="call_1")]
    with pytest.raises(ChatInputError, match=r"Message 1's call of tool 'get_weather' .*date is not JSON"):
        to_template_messages(messages)


def test_a_result_with_no_call_before_it_is_refused() -> None:
    with pytest.raises(ChatInputError, match=r"Message 1 is a tool result, but no assistant turn with tool calls"):
        to_template_messages([HumanMessage("Hi"), ToolMessage("Sunny", tool_call_id="call_1")])


def test_a_result_of_a_call_no_turn_made_is_refused_naming_the_calls() -> None:
    messages = [*_called({"city": "Paris"}), ToolMessage("Sunny", tool_call_id="call_9")]
    with pytest.raises(ChatInputError, match=r"Message 2 is the result of tool call 'call_9'.*'call_1'"):
        to_template_messages(messages)


@pytest.mark.parametrize("fmt", ["generic", "hermes", "llama3"])
def test_results_of_earlier_calls_and_of_calls_without_ids_are_read(fmt: str) -> None:
    answered = [*_called({"city": "Paris"}), ToolMessage("Sunny", tool_call_id="call_1"),
                HumanMessage("And tomorrow?"), ToolMessage("Rain", tool_call_id="call_1")]
    assert len(to_template_messages(answered, FORMATS[fmt])) == 5
    anonymous = [{"role": "user", "content": "Weather?"},
                 {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {}}]},
                 {"role": "tool", "content": "Sunny", "tool_call_id": "whatever"}]
    assert len(template_messages(anonymous, FORMATS[fmt])) == 3


@pytest.mark.parametrize(("fmt", "text"), [
    ("hermes", '<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>'),
    ("hermes", '<tool_call>{"name": "f", "arguments": "{\\"x\\": Infinity}"}</tool_call>'),
    ("generic", '{"tool_call": {"name": "f", "arguments": {"x": -Infinity}}}'),
    ("llama3", '<|python_tag|>{"name": "f", "parameters": {"x": NaN}}'),
])
def test_a_model_that_writes_nan_made_no_call(fmt: str, text: str) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    _, calls = FORMATS[fmt].parse(text, tools)
    assert calls == []
    _, written = FORMATS[fmt].parse(text.replace("NaN", "1").replace("-Infinity", "1").replace("Infinity", "1"),
                                    tools)
    assert [c.arguments for c in written] == [{"x": 1}]  # the same call with a number is read


@pytest.mark.parametrize(("text", "words"), [
    ("NaN", "is not a JSON number"), ('{"a": [Infinity]}', "is not a JSON number"),
    ('{"a": -Infinity}', "is not a JSON number"), ('{"a": -1e999}', "past the largest number"),
])
def test_loads_refuses_nan_and_the_infinities(text: str, words: str) -> None:
    with pytest.raises(NotJsonNumber, match=words):
        loads(text)
    assert loads('{"a": [1e308, -0.0, "NaN"]}') == {"a": [1e308, -0.0, "NaN"]}


def test_non_json_reason_names_each_cause() -> None:
    looped: list[object] = []
    looped.append(looped)
    assert non_json_reason({"x": [float("inf")]}) == "NaN and Infinity are not JSON numbers"
    assert non_json_reason(looped) == "it is nested too deeply (or refers to itself)"
    assert "datetime is not JSON serializable" in (non_json_reason({"at": datetime.datetime(2026, 12, 5)}) or "")
    assert non_json_reason({"a": [1, 2.5, None, "NaN"]}) is None


@pytest.fixture(scope="module")
def chat() -> Iterator[OnnxChatModel]:
    model = OnnxChatModel(model_path=SAMPLES_DIR / CHAT_SAMPLE, dtype="int4", device="cpu", max_tokens=1)
    yield model
    model.unload()


@pytest.mark.slow
def test_the_sample_refuses_a_result_answering_nothing_before_any_token(chat: OnnxChatModel) -> None:
    with pytest.raises(ChatInputError, match="no assistant turn with tool calls"):
        chat.invoke([HumanMessage("Hi"), ToolMessage("Sunny", tool_call_id="call_1")])
    with pytest.raises(ChatInputError, match="NaN and Infinity"):
        chat.invoke([*_called({"city": float("nan")}), ToolMessage("Sunny", tool_call_id="call_1")])
    reply = chat.invoke([*_called({"city": "Paris"}), ToolMessage("Sunny", tool_call_id="call_1")])
    assert isinstance(reply, AIMessage) and reply.usage_metadata and reply.usage_metadata["output_tokens"] == 1
