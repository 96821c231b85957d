"""The chat service under every front end: its typed events, its one options model, and a
user's own LangChain class read as the same events (what the server serves it through)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from ortmodels import BaseLLMModel, ModelManager
from ortmodels.errors import ChatInputError, StructuredOutputError
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.runtime.events import Finished, TextDelta, ToolCalls
from ortmodels.runtime.options import (
    ChatOptions,
    LogprobOptions,
    SamplingOptions,
    StopOptions,
)
from ortmodels.serve.protocol import ChatCompletionRequest, CompletionRequest
from ortmodels.serve.protocols import ChatModel, as_chat_model

from .conftest import CHAT_SAMPLE

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_every_option_has_its_description_and_unknown_ones_are_refused() -> None:
    for name, info in ChatOptions.model_fields.items():
        assert info.description, f"{name} has no description"
    with pytest.raises(ChatInputError, match="Unknown generation option: beam_width"):
        ChatOptions.checked(beam_width=4)


@pytest.mark.parametrize("given", [{"max_tokens": True}, {"max_tokens": "5"}, {"top_k": 2.0}, {"logprobs": "yes"},
                                   {"parallel_tool_calls": "yes"}, {"temperature": "0.5"}, {"truncate_prompt": 1}])
def test_an_option_of_the_wrong_type_is_refused_not_converted(given: dict[str, Any]) -> None:
    """``max_tokens=True`` is not 1, nor ``"5"`` 5: as the server's JSON body, a call's options keep their types."""
    name = next(iter(given))
    with pytest.raises(ChatInputError, match=f"Bad generation option {name}="):
        ChatOptions.checked(**given)
    assert ChatOptions.checked(temperature=1, max_tokens=5).temperature == 1.0  # an int is a number


@pytest.mark.parametrize("request_class", [ChatCompletionRequest, CompletionRequest])
def test_the_protocol_takes_the_options_as_they_are(request_class: type) -> None:
    """The server adds OpenAI's spellings, never its own bounds: each option is the options model's field."""
    owners = [SamplingOptions, StopOptions] + ([LogprobOptions] if request_class is ChatCompletionRequest else [])
    for owner in owners:
        for name, info in owner.model_fields.items():
            assert request_class.model_fields[name].metadata == info.metadata, name


def test_each_option_rule_is_the_options_models_and_the_protocol_says_it_with_the_field() -> None:
    """Empty stop strings dropped, at most 16, no logprobs with tools: defined once (`options`),
    the server's 400 naming the field."""
    from pydantic import ValidationError

    from ortmodels.serve.errors import from_validation

    assert ChatOptions(stop=["", "\n\n", ""]).stop == ["\n\n"] and ChatOptions.checked(stop="").stop == []
    with pytest.raises(ChatInputError, match="stop has 17 strings; give at most 16"):
        ChatOptions.checked(stop=["x"] * 17)
    with pytest.raises(ChatInputError, match="logprobs cannot be given with tools"):
        ChatOptions.checked(tools=[WEATHER], top_logprobs=2)
    assert ChatOptions.checked(tools=[WEATHER], tool_choice="none", logprobs=True).logprobs
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    for given, param, words in (({"stop": ["x"] * 17}, "stop", "stop has 17 strings; give at most 16"),
                                ({"tools": [WEATHER], "logprobs": True}, "logprobs", "cannot be given with tools")):
        with pytest.raises(ValidationError) as caught:
            ChatCompletionRequest.model_validate({**body, **given})
        error = from_validation(list(caught.value.errors()))
        assert error.param == param and words in error.message, error.message
    assert ChatCompletionRequest.model_validate({**body, "stop": ["", "END"]}).stop == ["END"]


@pytest.fixture(scope="module")
def chat() -> OnnxChatModel:
    model = ModelManager().get_chat_model(CHAT_SAMPLE)
    assert isinstance(model, OnnxChatModel)
    return model


@pytest.mark.slow
def test_the_service_streams_typed_events_the_adapter_turns_into_the_same_answer(chat: OnnxChatModel) -> None:
    service = chat.loaded
    options = ChatOptions(max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    events = list(service.stream(service.prepare(QUESTION, options)))
    *deltas, finished = events
    assert all(isinstance(e, TextDelta) for e in deltas) and isinstance(finished, Finished)
    used = finished.usage
    assert finished.reason in ("stop", "length") and 0 < used.completion_tokens <= 8
    assert used.total_tokens == used.prompt_tokens + used.completion_tokens
    assert finished.time_to_first_token_s is not None and finished.variant == chat.variant
    tokens = [lp for d in deltas for lp in d.logprobs]
    assert tokens and all(len(lp.top) == 2 and isinstance(lp.token, str) for lp in tokens)
    reply = chat.invoke([HumanMessage(QUESTION[0]["content"])], max_tokens=8, temperature=0)
    assert reply.content == "".join(d.text for d in deltas)
    again = list(service.stream(service.prepare(QUESTION, options)))[-1]
    assert isinstance(again, Finished) and again.usage.cached_tokens > 0  # the prompt cache, as usage says


@pytest.mark.parametrize("choice", ["any", "required", True])
def test_a_required_call_without_tools_is_refused(choice: object) -> None:
    """As OpenAI's API refuses it: the answer would otherwise be free text, with no error."""
    from ortmodels.runtime.output_plan import normalize_tool_choice

    with pytest.raises(StructuredOutputError, match="no tools are bound") as refused:
        normalize_tool_choice(choice, [])
    assert refused.value.param == "tool_choice"
    assert normalize_tool_choice(choice, [WEATHER]) == "required"
    assert normalize_tool_choice("auto", []) == "auto" and normalize_tool_choice(None, []) == "none"


@pytest.mark.parametrize("spec", [None, {}, {"name": "city", "strict": True}])
def test_a_json_schema_format_without_a_schema_is_refused(spec: Any) -> None:
    """Read as an empty schema it would allow any JSON (``null``): refused, naming the shape wanted."""
    from ortmodels.runtime.output_plan import grammar_of

    given = {"type": "json_schema", **({} if spec is None else {"json_schema": spec})}
    with pytest.raises(ChatInputError, match="needs {'json_schema': {'schema'"):
        grammar_of(given)
    assert grammar_of({"type": "json_schema", "json_schema": {"type": "object"}}) is not None  # a bare schema


@pytest.mark.slow
def test_a_tool_answer_is_one_tool_calls_event(chat: OnnxChatModel) -> None:
    options = ChatOptions(max_tokens=64, tools=[WEATHER], tool_choice="required")
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]

    async def events() -> list[Any]:
        return [e async for e in chat.achat_events(asked, options)]

    *body, finished = asyncio.run(events())
    assert [type(e) for e in body] == [ToolCalls] and isinstance(finished, Finished)
    assert body[0].calls[0].name == "get_weather" and finished.reason == "tool_calls"


@pytest.mark.slow
def test_plain_text_continues_the_prompt_as_it_is(chat: OnnxChatModel) -> None:
    service = chat.loaded
    events = list(service.stream(service.prepare_text("The capital of France is", ChatOptions(max_tokens=4))))
    assert isinstance(events[-1], Finished) and events[-1].usage.completion_tokens <= 4
    with pytest.raises(ChatInputError, match="non-empty string"):
        service.prepare_text("", ChatOptions())
    # What shapes a chat answer cannot shape a plain continuation: refused by name, never ignored.
    for given in ({"logprobs": True}, {"tools": [WEATHER]}):
        with pytest.raises(ChatInputError, match=next(iter(given))):
            service.prepare_text("The capital of France is", ChatOptions(**given))
    service.prepare_text("The capital of France is", ChatOptions(logprobs=False, tool_choice="none"))
    # A grammar does: the continuation is held to it (vLLM's and llama.cpp's completions take one too).
    held = service.prepare_text("The capital of France is", ChatOptions(
        max_tokens=4, response_format={"type": "regex", "regex": " (Paris|Lyon)"}))
    text = "".join(e.text for e in service.stream(held) if isinstance(e, TextDelta))
    assert text in (" Paris", " Lyon")


@pytest.mark.slow
def test_a_callers_truncate_prompt_is_kept_over_the_models(chat: OnnxChatModel) -> None:
    assert chat.truncate_prompt is False
    assert chat.with_defaults(ChatOptions(truncate_prompt=True)).truncate_prompt is True
    assert chat.with_defaults(ChatOptions()).truncate_prompt is False
    assert chat.options_over_defaults(truncate_prompt=True).truncate_prompt is True  # a LangChain call's too
    long = [{"role": "user", "content": "word " * (chat.loaded.prompt_chars // 4)}]
    with pytest.raises(ChatInputError, match="truncate_prompt"):
        chat.loaded.prepare(long, chat.with_defaults(ChatOptions(max_tokens=2)))
    prepared = chat.loaded.prepare(long, chat.with_defaults(ChatOptions(max_tokens=2, truncate_prompt=True)))
    assert len(prepared.request.prompt_ids) + 2 <= chat.loaded.spec.context_length


class EchoChat(BaseLLMModel):
    """A user's own class: no chat service, only LangChain's interface."""

    def _load(self) -> None:
        pass

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        seen = ", ".join(f"{m.type}:{m.text}" for m in messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=seen))])

    @property
    def _llm_type(self) -> str:
        return "echo"


def test_a_users_langchain_class_is_read_as_the_services_events() -> None:
    model = EchoChat(model_name="echo")
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {}, "id": "c1"}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"}, {"role": "user", "content": "Hi"}]

    async def events() -> list[Any]:
        return [e async for e in as_chat_model(model).achat_events(messages, ChatOptions())]

    first, finished = asyncio.run(events())
    assert first == TextDelta("system:Be brief., ai:, tool:42, human:Hi")
    assert isinstance(finished, Finished) and finished.reason == "stop"


def test_a_users_class_without_astream_text_is_refused_before_any_stream() -> None:
    served = as_chat_model(EchoChat(model_name="echo"))
    assert isinstance(served, ChatModel) and not isinstance(EchoChat(model_name="echo"), ChatModel)
    with pytest.raises(ChatInputError, match="echo cannot continue plain text.*no astream_text"):
        served.atext_events("Once upon a time", ChatOptions())


class StreamingToolChat(EchoChat):
    """A user's class that streams a tool call as LangChain does: its arguments in fragments."""

    fragments: tuple[str, ...] = ('{"ci', 'ty": "Par', 'is"}')
    logprob_entries: tuple[Any, ...] = ({"token": "x"},)  # its own shape, without a logprob

    async def _astream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                       **kwargs: Any) -> Any:
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="Checking.", response_metadata={"logprobs": {"content": list(self.logprob_entries)}}))
        for number, fragment in enumerate(self.fragments):
            first = number == 0
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[{
                "name": "get_weather" if first else None, "args": fragment, "id": "call_1" if first else None,
                "index": 0}]))


def test_a_users_streamed_tool_call_is_joined_before_it_is_read() -> None:
    async def events(model: BaseLLMModel) -> list[Any]:
        return [e async for e in as_chat_model(model).achat_events([{"role": "user", "content": "Paris?"}],
                                                                   ChatOptions())]

    text, calls, finished = asyncio.run(events(StreamingToolChat(model_name="tools")))
    assert text == TextDelta("Checking.")  # the entry without a logprob is left out, not a KeyError
    assert isinstance(calls, ToolCalls) and len(calls.calls) == 1
    assert (calls.calls[0].name, calls.calls[0].arguments, calls.calls[0].id) == ("get_weather", {"city": "Paris"},
                                                                                   "call_1")
    assert isinstance(finished, Finished)
    broken = StreamingToolChat(model_name="tools", fragments=('{"city": ', "Paris}"))
    with pytest.raises(StructuredOutputError, match="get_weather.*not JSON"):
        asyncio.run(events(broken))
    # a call cut short is refused too (LangChain's own merge would read it as {"city": "Par"})
    cut = StreamingToolChat(model_name="tools", fragments=('{"city": ', '"Par'))
    with pytest.raises(StructuredOutputError, match="get_weather.*not JSON"):
        asyncio.run(events(cut))
    # Python's NaN would be served in the arguments' string, which no JSON client reads
    nan = StreamingToolChat(model_name="tools", fragments=('{"days": ', "NaN}"))
    with pytest.raises(StructuredOutputError, match="get_weather.*not JSON.*NaN is not a JSON number"):
        asyncio.run(events(nan))


@pytest.mark.slow
def test_the_server_calls_an_onnx_chat_model_as_it_is(chat: OnnxChatModel) -> None:
    assert as_chat_model(chat) is chat


@pytest.mark.slow
def test_a_prompt_alone_past_the_context_does_not_blame_an_unset_max_tokens(chat: OnnxChatModel) -> None:
    """With no ``max_tokens`` given, the prompt is the problem: the error said "plus max_tokens
    (1)" and advised lowering it; a ``max_tokens`` the caller gave is still named."""
    from ortmodels.errors import ContextLengthError

    with pytest.raises(ContextLengthError, match=r"leaves no room for an answer .* Shorten the conversation, or") as caught:
        chat.invoke("word " * 9000)
    assert "max_tokens" not in str(caught.value) and caught.value.param == "messages"
    with pytest.raises(ContextLengthError, match=r"plus max_tokens \(50\) .* lower max_tokens"):
        chat.invoke("word " * 9000, max_tokens=50)


@pytest.mark.slow
def test_the_token_count_with_truncate_prompt_is_the_prompt_that_runs(chat: OnnxChatModel) -> None:
    """`get_num_tokens_from_messages` with ``truncate_prompt`` and ``max_tokens`` counts what is
    left once the oldest tokens make room (it counted the whole prompt, and dropped both
    options); without it, the whole prompt. A grammar ends the answer at once."""
    messages = [HumanMessage("word " * 300)]
    room = chat.loaded.spec.context_length - 100
    whole = chat.get_num_tokens_from_messages(messages)
    kept = chat.get_num_tokens_from_messages(messages, truncate_prompt=True, max_tokens=room)
    assert whole > 300 and kept == 100
    reply = chat.invoke(messages, truncate_prompt=True, max_tokens=room,
                        response_format={"type": "regex", "regex": "(yes|no)"})
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] == kept


@pytest.mark.slow
def test_configurable_fields_rebuild_the_model_by_its_field_names(chat: OnnxChatModel) -> None:
    """LangChain rebuilds a configurable model from its field names (``model_path_``, whose alias
    is ``model_path``): that was pydantic's "Extra inputs are not permitted"."""
    from langchain_core.runnables import ConfigurableField

    configurable = chat.configurable_fields(max_tokens=ConfigurableField(id="answer_tokens"))
    reply = configurable.invoke("Hi", config={"configurable": {"answer_tokens": 3}})
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 3
    assert OnnxChatModel(model_path_=chat.model_path).model_path == OnnxChatModel(model_path=chat.model_path).model_path
