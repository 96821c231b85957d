"""What a call's output is held to, on the real sample through LangChain objects:

- a grammar that admits no output is a one-line `GrammarError` before any token;
- tools whose parameters are not an object schema, or two tools of one name, are refused;
- ``logprobs`` with tools is refused by name, never silently empty;
- stop strings end free text only: a forced call, a structured answer or a ``response_format``
  ends where its grammar ends, and the format's JSON wrapper never reaches ``content``.
"""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from ortmodels.engine.constraints import Grammar
from ortmodels.engine.request import Finished, Request, TextDelta
from ortmodels.engine.toolcalls import FORMATS
from ortmodels.errors import ChatInputError, GrammarError
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.runtime.structured import OutputPlan

from .conftest import CHAT_SAMPLE, SAMPLES_DIR

pytestmark = pytest.mark.slow


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"Sunny in {city}"


class City(BaseModel):
    """A city named in the text."""

    city: str


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
GREETING = [SystemMessage("Only call a tool when asked about the weather. Otherwise answer with a response."),
            HumanMessage("Say hello.")]


@pytest.fixture(scope="module")
def chat() -> OnnxChatModel:
    return OnnxChatModel(model_path=SAMPLES_DIR / CHAT_SAMPLE, dtype="int8", device="cpu", max_tokens=48).load()


def _work(chat: OnnxChatModel) -> tuple[int, int]:
    engine = chat.loaded.engine
    return engine.prefilled_tokens, engine.decoded_tokens


# -- a grammar that admits no output ----------------------------------------------------------

@pytest.mark.parametrize("response_format", [
    {"type": "regex", "regex": "[^\\s\\S]"},
    {"type": "lark", "lark": "start: start"},
    {"type": "regex", "regex": "a[^\\s\\S]"},
])
def test_a_grammar_that_admits_nothing_is_one_line_before_any_token(chat: OnnxChatModel,
                                                                    response_format: dict) -> None:
    before = _work(chat)
    with pytest.raises(GrammarError) as caught:
        chat.invoke("Hi", response_format=response_format)
    message = str(caught.value)
    assert "\n" not in message and "admits no output" in message and response_format["type"] in message
    assert _work(chat) == before  # refused before the engine ran anything


@pytest.mark.parametrize("response_format", [
    {"type": "regex", "regex": ""}, {"type": "lark", "lark": 'start: ""'},
])
def test_a_grammar_that_admits_only_the_empty_answer_is_refused_too(chat: OnnxChatModel,
                                                                   response_format: dict) -> None:
    before = _work(chat)
    with pytest.raises(GrammarError, match=f"The {response_format['type']} grammar admits only the empty answer"):
        chat.invoke("Hi", response_format=response_format)
    assert _work(chat) == before
    optional = chat.invoke("Say x.", max_tokens=4, response_format={"type": "lark", "lark": 'start: "x"?'})
    assert optional.content in ("", "x")  # empty allowed, but not the only answer: taken


def test_a_grammar_that_dead_ends_mid_answer_fails_in_one_line(chat: OnnxChatModel) -> None:
    """What no compile-time check can see (a dead end after some text) still fails in one line."""
    with pytest.raises(GrammarError) as caught:
        chat.invoke("Say yes.", response_format={"type": "lark", "lark": 'start: "Yes" /[^\\s\\S]/'})
    message = str(caught.value)
    assert "\n" not in message and "allows no text after" in message and "<state>" not in message


# -- tools that cannot be called, or told apart -----------------------------------------------

@pytest.mark.parametrize("parameters", [{"type": "array", "items": {"type": "string"}}, {"type": "integer"},
                                        {"type": ["object", "null"]}, "a string"])
def test_tool_parameters_that_are_not_an_object_schema_are_refused(chat: OnnxChatModel, parameters: object) -> None:
    tool = {"type": "function", "function": {"name": "count", "parameters": parameters}}
    with pytest.raises(ChatInputError, match=r"parameters of tool 'count' .*not an object schema"):
        chat.bind_tools([tool], tool_choice="any")
    with pytest.raises(ChatInputError, match=r"parameters of tool 'count' .*not an object schema"):
        chat.invoke("Count.", tools=[tool], tool_choice="required")


def test_two_tools_of_one_name_are_refused_when_called(chat: OnnxChatModel) -> None:
    """Binding them is allowed (LangChain's standard suite binds a class and its schema, one name
    twice, and never calls them); a call that offers both is refused before any token."""
    before = _work(chat)
    for bound, tools in ((chat.bind_tools([get_weather, get_weather]), None), (chat, [WEATHER, WEATHER]),
                         (chat.bind_tools([get_weather, City, WEATHER], tool_choice="City"), None)):
        with pytest.raises(ChatInputError, match="Two tools are named 'get_weather'"):
            bound.invoke("Weather in Oslo?", **({"tools": tools} if tools else {}))
    assert _work(chat) == before


def test_object_schemas_and_no_parameters_are_accepted(chat: OnnxChatModel) -> None:
    plain = {"type": "function", "function": {"name": "ping"}}
    untyped = {"type": "function", "function": {"name": "echo", "parameters": {"properties": {"x": {"type": "string"}}}}}
    reply = chat.bind_tools([plain, untyped, WEATHER], tool_choice="get_weather").invoke("Weather in Oslo?")
    assert [call["name"] for call in reply.tool_calls] == ["get_weather"]


# -- logprobs with tools ----------------------------------------------------------------------

def test_logprobs_with_tools_are_refused_by_name(chat: OnnxChatModel) -> None:
    for options in ({"logprobs": True}, {"top_logprobs": 2}):
        for choice in ("auto", "any"):
            with pytest.raises(ChatInputError, match="logprobs cannot be given with tools"):
                chat.bind_tools([get_weather], tool_choice=choice).invoke("Weather in Paris?", **options)


def test_logprobs_with_tool_choice_none_still_come(chat: OnnxChatModel) -> None:
    reply = chat.bind_tools([get_weather], tool_choice="none").invoke("Hi", logprobs=True, max_tokens=4)
    assert len(reply.response_metadata["logprobs"]["content"]) >= 1


# -- stop strings end free text only -----------------------------------------------------------

def test_a_stop_string_inside_a_forced_call_does_not_cut_it(chat: OnnxChatModel) -> None:
    reply = chat.bind_tools([get_weather], tool_choice="any").invoke("What's the weather in Paris?", stop=["Paris"])
    assert reply.content == "" and not reply.invalid_tool_calls
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert reply.response_metadata["finish_reason"] == "tool_calls"


def test_a_stop_string_inside_a_structured_answer_does_not_cut_it(chat: OnnxChatModel) -> None:
    question = "Paris is a city in France. Extract the city."
    for method in ("function_calling", "json_schema"):
        assert chat.with_structured_output(City, method=method).invoke(question, stop=["Paris"]) == City(city="Paris")


def test_a_stop_string_inside_a_response_format_does_not_cut_it(chat: OnnxChatModel) -> None:
    for stop in (["Paris"], ["is"], ["nice"]):
        reply = chat.invoke("Say something.", response_format={"type": "regex", "regex": "Paris is nice"}, stop=stop)
        assert reply.content == "Paris is nice"


def test_a_stop_string_in_an_auto_answer_cuts_the_answer_never_its_wrapper(chat: OnnxChatModel) -> None:
    bound = chat.bind_tools([get_weather], tool_choice="auto")
    whole = bound.invoke(GREETING)
    assert not whole.tool_calls and whole.content.startswith("Hello"), whole  # the sample answers, greedy
    word = whole.content.split()[2]
    cut = bound.invoke(GREETING, stop=[word])
    assert cut.content == whole.content[: whole.content.index(word)]
    assert "{" not in cut.content and "response" not in cut.content
    assert cut.response_metadata["finish_reason"] == "stop" and not cut.tool_calls
    streamed = "".join(chunk.content for chunk in bound.stream(GREETING, stop=[word]))
    assert streamed == cut.content


def test_a_stop_string_in_an_auto_call_does_not_cut_it(chat: OnnxChatModel) -> None:
    reply = chat.bind_tools([get_weather], tool_choice="auto").invoke("What's the weather in Paris?", stop=["Paris"])
    assert reply.content == "" and [c["args"] for c in reply.tool_calls] == [{"city": "Paris"}]


def _plan(chat: OnnxChatModel, choice: str, stop: tuple[str, ...] = ()) -> OutputPlan:
    plan = OutputPlan.from_options({"tools": [WEATHER], "tool_choice": choice}, FORMATS["generic"],
                                   chat.loaded.grammars, chat.loaded.tokenizer)
    plan.stop = stop
    return plan


@pytest.mark.parametrize(("text", "stop", "content", "reason"), [
    ('{"response": "Hello world, how are', (), "Hello world, how are", "length"),
    ('{"response": "Hello world, how are', ("world",), "Hello ", "stop"),
    ('{"response": "caf\\u00e', (), "caf", "length"),
    ('{\n  "response": "Hi"\n', (), "Hi", "length"),
    ('{"tool_call": {"name": "get_weather", "arguments": {"city": "Pa', (), "", "length"),
    ('{"tool_call": {"name": "get_weather", "arguments": {"city": "Pa', ("Pa",), "", "length"),
    ('{"', (), "", "length"),
])
def test_an_answer_cut_before_its_end_never_shows_the_wrapper(chat: OnnxChatModel, text: str, stop: tuple[str, ...],
                                                              content: str, reason: str) -> None:
    """Deterministic, whatever the model would choose: the text a generic-format answer may end
    with when ``max_tokens`` cut it."""
    assert _plan(chat, "auto", stop).finish(text, "length") == (content, [], reason)


def test_a_cut_forced_call_in_each_format_has_no_content(chat: OnnxChatModel) -> None:
    for name, text in (("generic", '{"tool_call": {"name": "get_weather", "arguments": {"ci'),
                       ("llama3", '{"name": "get_weather", "parameters": {"ci'),
                       ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"ci')):
        plan = OutputPlan.from_options({"tools": [WEATHER], "tool_choice": "required"}, FORMATS[name],
                                       chat.loaded.grammars, chat.loaded.tokenizer)
        assert plan.finish(text, "length") == ("", [], "length"), name


def test_the_whole_calls_before_a_cut_one_are_kept(chat: OnnxChatModel) -> None:
    """Parallel calls cut by ``max_tokens`` while the model wrote a later one: the finished ones
    are returned with the reason ``length`` (they were all dropped), the cut one never."""
    paris = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    for name, text in (("generic", f'{{"tool_calls": [{paris}, {{"name": "get_weather", "argum'),
                       ("generic", f'{{"tool_calls": [ {paris} ,\n {paris}, {{"na'),
                       ("hermes", f'<tool_call>{paris}</tool_call>\n<tool_call>{{"name": "get_w')):
        plan = OutputPlan.from_options({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": True},
                                       FORMATS[name], chat.loaded.grammars, chat.loaded.tokenizer)
        content, calls, reason = plan.finish(text, "length")
        assert (content, reason) == ("", "length"), name
        assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})] * text.count(paris), name


def test_hermes_free_text_before_a_cut_call_is_the_content() -> None:
    assert FORMATS["hermes"].parse('Let me look.\n<tool_call>{"name": "get_w', [WEATHER]) == ("Let me look.", [])


def _drive(chat: OnnxChatModel, request: Request, text: str) -> str:
    """Feed ``text``'s tokens through ``request`` as if the model chose them; the text it released."""
    tokenizer = chat.loaded.tokenizer
    request.start(tokenizer)
    reason = None
    for token in tokenizer.encode(text, add_special_tokens=False).ids:
        logits = np.full(chat.loaded.grammars.vocab_size, -10.0, dtype=np.float32)
        logits[token] = 10.0
        chosen = request.choose(logits)
        assert chosen == token
        if (reason := request.accept(chosen)) is not None:
            break
    request.finish(reason or "length")
    events = list(request.events(timeout=5))
    assert isinstance(events[-1], Finished)
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_stop_strings_cut_free_text_before_a_trigger_and_not_the_call_after_it(chat: OnnxChatModel) -> None:
    """A lazy grammar (Hermes' ``<tool_call>`` trigger): free until the trigger, held after it."""
    tokenizer, grammars = chat.loaded.tokenizer, chat.loaded.grammars
    trigger = tokenizer.token_to_id("Ġcall")

    def request(stop: str) -> Request:
        processor = grammars.processor(Grammar("regex", " Paris now"), trigger_token=trigger)
        return Request([1, 2, 3], stop=[stop], processor=processor)

    assert _drive(chat, request("Paris"), "Go to Paris now") == "Go to "
    assert _drive(chat, request("Paris"), "I call Paris now") == "I call Paris now"
    assert _drive(chat, request("call"), "I call Paris now") == "I call Paris now"  # the trigger starts the call
    assert _drive(chat, request("I"), "I call Paris now") == ""
