"""``/v1/messages`` (Anthropic's Messages API) as the official ``anthropic`` client sees it: one real
``ortmodels serve`` process on the chat sample, started with ``--api-key`` so that every call also
proves the client's ``x-api-key`` header is taken. Answers are greedy and short (8-64 tokens).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("fastapi")

from ortmodels.serve.errors import ApiError
from ortmodels.serve.messages import MessageAnswer

from .conftest import CHAT_SAMPLE
from .test_serve import KEY, Server, _fuzz_bodies, _random_value, _start, _stop

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0}  # this client version takes sampling options through extra_body only
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {"name": "get_weather", "description": "The current weather of a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = _start(tmp_path_factory.mktemp("serve-messages"), "--api-key", KEY, "--models", CHAT_SAMPLE)
    yield running
    _stop(running)


@pytest.fixture(scope="module")
def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)


def _create(client: anthropic.Anthropic, **body: object) -> anthropic.types.Message:
    return client.messages.create(model=CHAT_SAMPLE, **{"max_tokens": 24, "messages": QUESTION, **body},
                                  extra_body=GREEDY)


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _prompt_tokens(message: anthropic.types.Message) -> int:
    """The whole prompt, as Anthropic counts it: computed plus read from the prompt cache."""
    usage = message.usage
    return usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)


def test_create_whole_with_system(client: anthropic.Anthropic) -> None:
    message = _create(client, system="You answer in one short sentence.")
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == CHAT_SAMPLE
    assert [block.type for block in message.content] == ["text"] and "Paris" in _text(message)
    assert message.stop_reason in ("end_turn", "max_tokens") and message.stop_sequence is None
    assert message.usage.output_tokens > 0 and message.usage.cache_read_input_tokens is not None
    # the system prompt reaches the model, as a string or as text blocks alike
    blocks = _create(client, system=[{"type": "text", "text": "You answer in one short sentence."}])
    assert _text(blocks) == _text(message) and _prompt_tokens(blocks) == _prompt_tokens(message)
    repeated = client.messages.count_tokens(model=CHAT_SAMPLE, messages=QUESTION,
                                            system="You answer in one short sentence." * 3)
    assert repeated.input_tokens > _prompt_tokens(message)


def test_sampling_options_reach_the_engine(client: anthropic.Anthropic) -> None:
    """At temperature 1, ``top_k: 1`` or a tiny ``top_p`` leaves one candidate per token: the greedy answer."""
    greedy = _text(_create(client))
    for sampling in ({"temperature": 1.0, "top_k": 1}, {"temperature": 1.0, "top_p": 0.01}):
        sampled = client.messages.create(model=CHAT_SAMPLE, max_tokens=24, messages=QUESTION, extra_body=sampling)
        assert _text(sampled) == greedy, sampling


def test_stream_events_in_order(client: anthropic.Anthropic) -> None:
    whole = _create(client)
    events = list(client.messages.create(model=CHAT_SAMPLE, max_tokens=24, messages=QUESTION, stream=True,
                                         extra_body=GREEDY))
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:-2] == ["content_block_start", *["content_block_delta"] * (len(kinds) - 5), "content_block_stop"]
    deltas = [event.delta.text for event in events if event.type == "content_block_delta"]
    assert "".join(deltas) == _text(whole)
    assert events[-2].delta.stop_reason == whole.stop_reason
    assert events[-2].usage.output_tokens == whole.usage.output_tokens

    with client.messages.stream(model=CHAT_SAMPLE, max_tokens=24, messages=QUESTION, extra_body=GREEDY) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == _text(final) == _text(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert _prompt_tokens(final) == _prompt_tokens(whole)


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    answer = _text(_create(client))
    words = answer.split()
    assert len(words) >= 3, answer
    stop = " " + words[2]  # hit after two words, whatever the model says first
    cut = answer[:answer.index(stop)]
    message = _create(client, stop_sequences=["never said", stop])
    assert (message.stop_reason, message.stop_sequence, _text(message)) == ("stop_sequence", stop, cut)
    with client.messages.stream(model=CHAT_SAMPLE, max_tokens=24, messages=QUESTION, stop_sequences=[stop],
                                extra_body=GREEDY) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence, _text(final)) == ("stop_sequence", stop, cut)


def test_tool_round_trip(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = _create(client, max_tokens=64, messages=ask, tools=[WEATHER],
                     tool_choice={"type": "tool", "name": "get_weather"})
    assert called.stop_reason == "tool_use"
    use = called.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("toolu_")
    jsonschema.validate(use.input, WEATHER["input_schema"])

    with client.messages.stream(model=CHAT_SAMPLE, max_tokens=64, messages=ask, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_message()
    assert "content_block_start" in kinds and streamed.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in streamed.content] == [("tool_use", "get_weather", use.input)]

    history = [*ask, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in called.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": [{"type": "text", "text": "Sunny, 21 C"}]}]}]
    answer = _create(client, max_tokens=32, messages=history, tools=[WEATHER], tool_choice={"type": "none"})
    assert [block.type for block in answer.content] == ["text"] and _text(answer).strip()
    assert answer.stop_reason in ("end_turn", "max_tokens")


def test_output_config_format_holds_the_answer_to_its_schema(client: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
              "additionalProperties": False}
    message = _create(client, max_tokens=48, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(_text(message)), schema)


def test_count_tokens_is_the_prompt_of_a_call(client: anthropic.Anthropic) -> None:
    for body in ({"messages": QUESTION, "system": "Be brief."},
                 {"messages": [{"role": "user", "content": "Weather in Rome?"}], "tools": [WEATHER],
                  "tool_choice": {"type": "tool", "name": "get_weather"}}):
        counted = client.messages.count_tokens(model=CHAT_SAMPLE, **body)
        assert counted.input_tokens == _prompt_tokens(_create(client, max_tokens=8, **body)) > 0


def _raw(server: Server, path: str, body: object, key: str = KEY) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{server.url}/v1{path}", content=content, timeout=120,
                      headers={"Content-Type": "application/json", "x-api-key": key})


def _anthropic_error(reply: httpx.Response, status: int, kind: str) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    return str(body["error"]["message"])


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


_HISTORY = [{"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rain"}]}]


@pytest.mark.parametrize(("body", "named"), [
    ({"messages": [{"role": "user", "content": [IMAGE]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [IMAGE]}]}]}, "messages[0].content[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}, "tool_use_id"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content is empty"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}]}]},
     "messages[0].content[0].tool_use_id"),
    ({"messages": [*_HISTORY[:2], {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "1"}]}]}, "called 'toolu_1'"),
    ({"messages": [*QUESTION, {"role": "assistant", "content": "The capital is"}]}, "messages[1]"),
    ({"system": [IMAGE]}, "system[0]"),
    ({"thinking": {"type": "enabled"}}, "budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking"),
    ({"mcp_servers": [{"type": "url", "url": "https://example.com", "name": "x"}]}, "mcp_servers"),
    ({"container": "container_1"}, "container"),
    ({"output_config": {"effort": "high"}}, "effort"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"tool_choice": {"type": "tool"}, "tools": [WEATHER]}, "tool_choice"),
    ({"tool_choice": {"type": "tool", "name": "g"}, "tools": [WEATHER]},
     "names no tool of this request; its tools: get_weather (or give the type 'auto', 'any' or 'none')"),
    ({"messages": [{"role": "user", "content": ["hi"]}]},
     "give a string, or a list of objects (messages.0.content.0: Input should be a valid dictionary)"),
    ({"messages": [{"role": "user", "content": "hello " * 9000}]}, 'plus max_tokens (8)'),
    ({"stop_sequences": [f"s{n}" for n in range(17)]}, "stop_sequences"),
    ({"temperature": 5}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": None}, "max_tokens"),
    ({"top_k": "3"}, "top_k"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_bodies_are_anthropic_400s(client: anthropic.Anthropic, body: dict, named: str) -> None:
    given = {"model": CHAT_SAMPLE, "max_tokens": 8, "messages": QUESTION, **body}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages", cast_to=anthropic.types.Message, body=given)
    assert caught.value.status_code == 400 and caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert named in caught.value.message


def test_errors_of_every_kind_are_anthropic_shaped(server: Server, client: anthropic.Anthropic) -> None:
    ask = {"model": CHAT_SAMPLE, "max_tokens": 8, "messages": QUESTION}
    assert "max_tokens" in _anthropic_error(_raw(server, "/messages", {**ask, "max_tokens": "x"}), 400,
                                            "invalid_request_error")
    missing = {k: v for k, v in ask.items() if k != "max_tokens"}
    assert "max_tokens" in _anthropic_error(_raw(server, "/messages", missing), 400, "invalid_request_error")
    assert "JSON" in _anthropic_error(_raw(server, "/messages", b"{not json"), 400, "invalid_request_error")
    assert "max_tokens" in _anthropic_error(_raw(server, "/messages/count_tokens", ask), 400,
                                            "invalid_request_error")
    assert "x-api-key" in _anthropic_error(_raw(server, "/messages", ask, key="wrong"), 401, "authentication_error")
    unkeyed = httpx.post(f"{server.url}/v1/messages", json=ask, timeout=60)
    assert "x-api-key" in _anthropic_error(unkeyed, 401, "authentication_error")
    assert "GET /v1/messages" in _anthropic_error(httpx.get(f"{server.url}/v1/messages", timeout=60), 405,
                                                  "invalid_request_error")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=8, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "not_found_error" and "no-such-model" in caught.value.message
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0).messages.count_tokens(
            model=CHAT_SAMPLE, messages=QUESTION)
    # Anthropic's client with a bearer token is served too; the OpenAI routes keep OpenAI's error body
    bearer = anthropic.Anthropic(base_url=server.url, auth_token=KEY, max_retries=0, timeout=120)
    assert bearer.messages.count_tokens(model=CHAT_SAMPLE, messages=QUESTION).input_tokens > 0
    openai_error = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": []}, timeout=60,
                              headers={"Authorization": f"Bearer {KEY}"})
    assert openai_error.status_code == 400 and set(openai_error.json()["error"]) == {"message", "type", "param", "code"}


_FUZZED = ["model", "max_tokens", "messages", "system", "tools", "tool_choice", "stop_sequences", "temperature",
           "top_p", "top_k", "stream", "thinking", "metadata", "output_config", "cache_control", "junk"]


def _block_mutations(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """The history with one block's field (or the block itself) replaced by a random value."""
    for _ in range(count):
        history = json.loads(json.dumps(_HISTORY))
        message = rng.choice(history)
        block = rng.choice(message["content"])
        key = rng.choice([*block, "type", "content", "is_error"])
        if rng.random() < 0.2:
            message["content"][message["content"].index(block)] = _random_value(rng)
        else:
            block[key] = _random_value(rng)
        yield "/messages", json.dumps({"model": CHAT_SAMPLE, "max_tokens": 3, "messages": history,
                                       "tools": [WEATHER]}).encode()


def _short(content: bytes) -> bytes:
    """Any accidental real generation kept short."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return content
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int) and 3 < body["max_tokens"] < 10**6:
        body["max_tokens"] = 3
    return json.dumps(body).encode()


def test_fuzzed_bodies_never_5xx_and_every_4xx_is_anthropic_shaped(server: Server) -> None:
    base = {"model": CHAT_SAMPLE, "max_tokens": 3, "messages": _HISTORY, "system": "Be brief.", "tools": [WEATHER]}
    bases = {"/messages": base, "/messages/count_tokens": {k: v for k, v in base.items() if k != "max_tokens"}}
    rng = random.Random(23)
    bodies = [*_fuzz_bodies(rng, 160, bases, dict.fromkeys(bases, _FUZZED)), *_block_mutations(rng, 60)]
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=120, headers={"Content-Type": "application/json", "x-api-key": KEY}) as http:
        for path, content in bodies:
            reply = http.post(f"{server.url}/v1{path}", content=_short(content))
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            assert reply.status_code < 500, (path, content[:300], reply.text[:500])
            if reply.status_code >= 400:
                body = reply.json()
                assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, reply.text
    assert statuses.get(400, 0) > 100 and statuses.get(200, 0) > 0, statuses


def test_a_stream_that_fails_midway_ends_with_anthropic_error_event() -> None:
    """What `sse.respond` sends after a started stream fails (the shutdown timeout, an engine that
    closed): Anthropic's ``event: error``, not OpenAI's ``data: {"error": ...}`` and ``[DONE]``."""
    events = MessageAnswer(CHAT_SAMPLE).error_events(ApiError(503, "The server is shutting down.", type="server_error"))
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "The server is shutting down."}}
    assert events == [f"event: error\ndata: {json.dumps(error, separators=(',', ':'))}\n\n"]
