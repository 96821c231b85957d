"""`ortmodels serve` as clients see it: a real server process on a loopback port, spoken to by
the official ``openai`` client, LangChain's ``ChatOpenAI`` / ``OpenAIEmbeddings`` and raw HTTP.

Three server processes: the main one (no key, default queue), a small one (``--api-key``,
``--max-queue 1``) and, per test, one that is sent SIGTERM. Answers are kept short
(``max_tokens`` 8-32) so the file runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
jsonschema = pytest.importorskip("jsonschema")

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE
from .servers import Server, _start, _stop, module_server
from .waiting import wait_until

pytestmark = pytest.mark.slow

KEY = "test-key-123"
server = module_server("serve")
#: A key, a queue of one, and the chat model only.
small_server = module_server("serve-small", "--api-key", KEY, "--max-queue", "1", "--models", CHAT_SAMPLE)


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


def _post(server: Server, path: str, body: object, **kwargs: object) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    kwargs.setdefault("timeout", 120)
    return httpx.post(f"{server.v1}{path}", content=content,
                      headers={"Content-Type": "application/json", **kwargs.pop("headers", {})}, **kwargs)


def _metric(server: Server, name: str) -> float:
    """The sum of a metric's samples on /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)]
    assert values, f"{name} is not on /metrics"
    return sum(values)


def _wait_for(check, what: str, timeout: float = 20.0) -> None:
    wait_until(check, timeout, what, interval=0.05)


CHAT = {"model": CHAT_SAMPLE, "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 8}


def _endless(max_tokens: int) -> dict:
    """A streamed request that cannot end before ``max_tokens``: its grammar wants more numbers."""
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": max_tokens}
    return {**CHAT, "max_tokens": max_tokens, "stream": True, "messages": [{"role": "user", "content": "Numbers."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "numbers", "schema": schema}}}


# -- the official openai client ---------------------------------------------------------------

def test_health_was_503_with_a_body_while_loading_then_200(server: Server) -> None:
    for status, body in server.health_seen:
        assert status in (200, 503)
        assert body["status"] == ("ok" if status == 200 else "loading")
    assert server.health_seen[-1][0] == 200


def test_chat_completion(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=CHAT_SAMPLE, max_tokens=16, temperature=0,
                                            messages=[{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": "Capital of France?"}])
    assert answer.object == "chat.completion" and answer.model == CHAT_SAMPLE
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 16


def test_chat_stream_with_usage_matches_the_whole_answer(client: openai.OpenAI) -> None:
    asked = {"model": f"{CHAT_SAMPLE}:int8", "max_tokens": 12, "temperature": 0, "seed": 1,
             "messages": [{"role": "user", "content": "Name three colours."}]}
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    whole = client.chat.completions.create(**asked)
    assert whole.choices[0].message.content == text


def test_logprobs_whole_and_streamed(client: openai.OpenAI) -> None:
    asked = {"model": CHAT_SAMPLE, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 3,
             "messages": [{"role": "user", "content": "Capital of France?"}]}
    whole = client.chat.completions.create(**asked)
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
        assert token.logprob == token.top_logprobs[0].logprob  # greedy: the chosen is the likeliest
    streamed = [t for c in client.chat.completions.create(**asked, stream=True)
                if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]


def test_logprob_bytes_are_each_tokens_own(client: openai.OpenAI) -> None:
    """Emoji are written a byte token or two at a time: each token's ``bytes`` are its own (they
    were U+FFFD's three bytes for every part), so joined they give the answer, whole and streamed,
    the alternatives too."""
    asked = {"model": CHAT_SAMPLE, "max_tokens": 12, "temperature": 0, "logprobs": True, "top_logprobs": 2,
             "messages": [{"role": "user", "content": "Write three party emoji."}]}
    whole = client.chat.completions.create(**asked)
    content = whole.choices[0].logprobs.content
    assert any(t.token == "\ufffd" for t in content), [t.token for t in content]  # the case under test
    assert bytes(b for t in content for b in t.bytes).decode("utf-8") == whole.choices[0].message.content
    assert all(alt.bytes != [0xEF, 0xBF, 0xBD] for t in content for alt in t.top_logprobs)
    streamed = [t for c in client.chat.completions.create(**asked, stream=True)
                if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.bytes for t in streamed] == [t.bytes for t in content]


def test_stop_strings(client: openai.OpenAI) -> None:
    ask = {"model": CHAT_SAMPLE, "max_tokens": 24, "temperature": 0,
           "messages": [{"role": "user", "content": "Capital of France?"}]}
    full = client.chat.completions.create(**ask).choices[0].message.content
    stop = full.split()[2]  # a word from the greedy answer itself, whatever the model writes
    answer = client.chat.completions.create(**ask, stop=[stop])
    assert answer.choices[0].message.content == full[: full.index(stop)]
    assert answer.choices[0].finish_reason == "stop"


def test_text_completion(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=CHAT_SAMPLE, prompt="The capital of France is", max_tokens=8,
                                       temperature=0)
    assert answer.object == "text_completion" and "Paris" in answer.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=CHAT_SAMPLE, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == answer.choices[0].text


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    texts = ["a cat on a mat", "a dog in the fog"]
    floats = client.embeddings.create(model=EMBEDDING_SAMPLE, input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens > 0
    packed = client.embeddings.create(model=EMBEDDING_SAMPLE, input=texts)  # the client asks for base64 itself
    assert packed.data[1].embedding == pytest.approx(floats.data[1].embedding, abs=1e-6)
    raw = _post_client_raw(client, {"model": f"{EMBEDDING_SAMPLE}:int8", "input": "one",
                                    "encoding_format": "base64"})
    vector = base64.b64decode(raw["data"][0]["embedding"])
    assert len(vector) == 384 * 4


def test_embeddings_dimensions_the_model_was_not_trained_for_are_400(client: openai.OpenAI, server: Server) -> None:
    error = _error(_post(server, "/embeddings", {"model": EMBEDDING_SAMPLE, "input": "a", "dimensions": 128}), 400)
    assert error["param"] == "dimensions" and "384" in error["message"] and "matryoshka" in error["message"]
    opted = client.embeddings.create(model=EMBEDDING_SAMPLE, input="a", dimensions=128, encoding_format="float",
                                     extra_body={"matryoshka": True})
    assert len(opted.data[0].embedding) == 128
    assert sum(x * x for x in opted.data[0].embedding) == pytest.approx(1.0, abs=1e-4)  # renormalised
    unknown = _error(_post(server, "/embeddings", {"model": EMBEDDING_SAMPLE, "input": "a", "prompt_name": "q"}), 400)
    assert unknown["param"] == "prompt_name" and "'query' (empty), 'document' (empty)" in unknown["message"]
    plain = client.embeddings.create(model=EMBEDDING_SAMPLE, input="a", encoding_format="float")
    query = client.embeddings.create(model=EMBEDDING_SAMPLE, input="a", encoding_format="float",
                                     extra_body={"input_type": "query"})
    assert query.data[0].embedding == pytest.approx(plain.data[0].embedding, abs=1e-6)  # no prompts: the same


def test_a_prompt_past_the_context_is_400_naming_the_body_field_and_its_fix(server: Server) -> None:
    long = {**CHAT, "messages": [{"role": "user", "content": "word " * 9000}]}
    error = _error(_post(server, "/chat/completions", long), 400)
    assert (error["param"], error["code"]) == ("messages", "context_length_exceeded")
    assert 'or set "truncate_prompt": true in the body to drop the oldest tokens' in error["message"]
    assert "truncate_prompt=True" not in error["message"]
    error = _error(_post(server, "/chat/completions", {**CHAT, "max_tokens": 100000}), 400)
    assert error["param"] == "max_tokens" and "alone fills the context" in error["message"]
    error = _error(_post(server, "/completions", {"model": CHAT_SAMPLE, "prompt": "word " * 9000}), 400)
    assert error["param"] == "prompt" and "Shorten the prompt" in error["message"]
    assert _post(server, "/chat/completions", {**long, "truncate_prompt": True, "max_tokens": 2}).status_code == 200


def test_embeddings_of_too_many_inputs_are_400(server: Server) -> None:
    error = _error(_post(server, "/embeddings", {"model": EMBEDDING_SAMPLE, "input": ["a"] * 2049}), 400)
    assert error["param"] == "input" and "2049 items" in error["message"] and "at most 2048" in error["message"]


def test_an_embedding_its_client_left_stops_and_counts_as_cancelled(server: Server) -> None:
    """The work stops at its next slice of texts: a later client is not kept waiting behind it."""
    cancelled = _metric(server, "ortmodels_cancelled_total")
    texts = [f"sentence number {i} about the weather in a town by the sea, " * 6 for i in range(2048)]
    with pytest.raises(httpx.TimeoutException):
        _post(server, "/embeddings", {"model": EMBEDDING_SAMPLE, "input": texts}, timeout=0.5)
    wait_until(lambda: _metric(server, "ortmodels_cancelled_total") > cancelled, 60, "counted as cancelled", 0.1)
    assert _post(server, "/embeddings", {"model": EMBEDDING_SAMPLE, "input": "after"}).status_code == 200


def _post_client_raw(client: openai.OpenAI, body: dict) -> dict:
    reply = httpx.post(f"{client.base_url}embeddings", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_models_list(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {CHAT_SAMPLE, f"{CHAT_SAMPLE}:int8", f"{CHAT_SAMPLE}:int4", EMBEDDING_SAMPLE,
            f"{EMBEDDING_SAMPLE}:fp32"} <= set(models)
    assert models[CHAT_SAMPLE].model_extra["kind"] == "chat"
    assert models[EMBEDDING_SAMPLE].model_extra["kind"] == "embedding"
    assert models[CHAT_SAMPLE].model_extra["loaded"] is True  # preloaded (--models)
    assert models[f"{CHAT_SAMPLE}:int4"].model_extra["loaded"] is True  # the precision the plain name serves
    one = client.models.retrieve(f"{CHAT_SAMPLE}:int8")
    assert (one.id, one.model_extra["kind"]) == (f"{CHAT_SAMPLE}:int8", "chat")
    with pytest.raises(openai.NotFoundError, match="does not exist; models here: "):
        client.models.retrieve("no-such-model")


def test_a_tagged_id_is_loaded_when_its_precision_is(client: openai.OpenAI) -> None:
    client.embeddings.create(model=f"{EMBEDDING_SAMPLE}:int8", input="a")
    assert client.models.retrieve(f"{EMBEDDING_SAMPLE}:int8").model_extra["loaded"] is True
    assert client.models.retrieve(EMBEDDING_SAMPLE).model_extra["loaded"] is True


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tools_required_gives_parsed_tool_calls(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_SAMPLE, max_tokens=64, temperature=0, tools=[WEATHER], tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    # the call and its result fed back as history
    follow = client.chat.completions.create(model=CHAT_SAMPLE, max_tokens=8, temperature=0, messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}])
    assert follow.choices[0].message.content
    # the message as the client dumps it (annotations: null among its fields) is taken back as it is
    again = client.chat.completions.create(model=CHAT_SAMPLE, max_tokens=4, temperature=0, messages=[
        {"role": "user", "content": "What is the weather in Paris?"}, choice.message.model_dump(),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
        follow.choices[0].message.model_dump(), {"role": "user", "content": "And tomorrow?"}])
    assert again.choices[0].message.content
    raw = httpx.post(f"{client.base_url}chat/completions", timeout=120, json={
        "model": CHAT_SAMPLE, "max_tokens": 64, "temperature": 0, "tools": [WEATHER], "tool_choice": "required",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}).json()
    message = raw["choices"][0]["message"]  # OpenAI's shape: both always there, null when empty
    assert message["content"] is None and message["refusal"] is None and message["tool_calls"], message


def test_tools_streamed(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=CHAT_SAMPLE, max_tokens=64, temperature=0, tools=[WEATHER], stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Weather in Rome?"}]))
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather" and calls[0].index == 0
    json.loads(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_response_format_json_schema_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    answer = client.chat.completions.create(
        model=CHAT_SAMPLE, max_tokens=32, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
        messages=[{"role": "user", "content": "Where is the Eiffel tower? Answer as JSON."}])
    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
    anything = client.chat.completions.create(model=CHAT_SAMPLE, max_tokens=24, temperature=0,
                                              response_format={"type": "json_object"},
                                              messages=[{"role": "user", "content": "A JSON object, please."}])
    assert anything.choices[0].message.content.lstrip().startswith("{")


def test_concurrent_clients_share_the_engine(server: Server) -> None:
    """Four clients at once, one answer equal to the one asked alone. In fp32: int4's batched
    answers equal the solo ones only where onnxruntime's several-row and one-row 4-bit kernels
    round alike (`test_chat_concurrency.py`), and the batch here depends on the clients' timing."""
    model = f"{CHAT_SAMPLE}:fp32"

    async def run() -> list[str]:
        async_client = openai.AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)
        prompts = ["Capital of France?", "Capital of Italy?", "Capital of Spain?", "Capital of Japan?"]
        answers = await asyncio.gather(*[async_client.chat.completions.create(
            model=model, max_tokens=8, temperature=0, messages=[{"role": "user", "content": p}])
            for p in prompts])
        return [a.choices[0].message.content for a in answers]

    answers = asyncio.run(run())
    alone = openai.OpenAI(base_url=server.v1, api_key="unused").chat.completions.create(
        model=model, max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Capital of Spain?"}])
    assert answers[2] == alone.choices[0].message.content


# -- LangChain's OpenAI classes, pointed at the server ---------------------------------------

def test_langchain_chat_openai(server: Server) -> None:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    llm = ChatOpenAI(model=CHAT_SAMPLE, base_url=server.v1, api_key="unused", max_tokens=16, temperature=0,
                     max_retries=0)
    reply = llm.invoke("What is the capital of France?")
    assert "Paris" in reply.content and reply.usage_metadata["output_tokens"] > 0
    streamed = "".join(c.content for c in llm.stream("What is the capital of France?"))
    assert streamed == reply.content

    class Place(BaseModel):
        city: str
        country: str

    place = llm.model_copy(update={"max_tokens": 64}).with_structured_output(Place).invoke(
        "Where is the Eiffel tower?")
    assert isinstance(place, Place)

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?", max_tokens=64)
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather"
    assert isinstance(called.tool_calls[0]["args"]["city"], str)


def test_langchain_openai_embeddings(server: Server) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model=EMBEDDING_SAMPLE, base_url=server.v1, api_key="unused",
                           check_embedding_ctx_length=False, tiktoken_enabled=False, max_retries=0)
    vectors = emb.embed_documents(["first text", "second text"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert emb.embed_query("first text") == pytest.approx(vectors[0], abs=1e-5)


# -- errors: status and OpenAI's body ---------------------------------------------------------

def _error(reply: httpx.Response, status: int) -> dict:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(("body", "param", "words"), [
    (b"{not json", None, "JSON"),
    (b"[1, 2]", None, "must be a JSON object, not an array"),
    (b"null", None, "must be a JSON object, not null"),
    ('{"model": "caf\u00e9"}'.encode("latin-1"), None, "not UTF-8 text"),
    ({**CHAT, "temperature": -1}, "temperature", "temperature"),
    ({**CHAT, "top_p": 7}, "top_p", "top_p"),
    ({**CHAT, "max_tokens": "5"}, "max_tokens", "integer"),
    ({**CHAT, "n": 2}, "n", "n must be 1"),
    ({**CHAT, "presence_penalty": 1.0}, "presence_penalty", "not supported"),
    ({**CHAT, "top_logprobs": 2}, "top_logprobs", "needs logprobs"),
    ({**CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs", "top_logprobs"),
    ({**CHAT, "foo": 1}, "foo", "Unrecognized"),
    ({**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "P"}}},
     "response_format.json_schema.schema", "needs {'json_schema'"),
    ({**CHAT, "messages": []}, "messages", "messages"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content", "text only"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text", "must be a string"),
    ({**CHAT, "messages": [{"role": "user", "content": []}]}, "messages[0].content", "empty list"),
    ({**CHAT, "messages": [{"role": "user", "content": None}]}, "messages[0].content", "missing"),
    ({**CHAT, "tool_choice": "required"}, "tool_choice", "tools"),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
      "response_format": {"type": "json_object"}}, None, "Give tools or a response_format, not both"),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
      "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "names no bound tool"),
    ({**CHAT, "messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "x", "content": "1"}]},
     "messages[1].tool_call_id", "no assistant turn with tool_calls"),
    ({**CHAT, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_b", "content": "1"}]}, "messages[2].tool_call_id", "called 'call_a'"),
    # NaN and Infinity are Python's JSON, not JSON: refused in the body and in a call's arguments
    (json.dumps({**CHAT, "temperature": float("nan")}).encode(), None, "NaN is not a JSON number"),
    (json.dumps({**CHAT, "max_tokens": float("inf")}).encode(), None, "Infinity is not a JSON number"),
    ({**CHAT, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": -Infinity}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "1"}]}, "messages[1].tool_calls",
     "-Infinity is not a JSON number"),
    (b'{"model": "%s", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1e999}' % CHAT_SAMPLE.encode(),
     None, "past the largest number"),
])
def test_bad_requests_are_400_naming_the_field(server: Server, body: object, param: str | None, words: str) -> None:
    error = _error(_post(server, "/chat/completions", body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and words in error["message"]


def test_a_result_of_a_call_sent_without_an_id_is_answered(server: Server) -> None:
    """A call without an id matches any result (the route's rule); the conversation's own check
    below it must not refuse the result for the id the template gives that call."""
    body = {**CHAT, "max_tokens": 2, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "any", "content": "1"}]}
    reply = _post(server, "/chat/completions", body)
    assert reply.status_code == 200, reply.text


def test_a_prompt_past_the_context_is_400_with_the_token_count(server: Server) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "hello " * 9000}]}
    error = _error(_post(server, "/chat/completions", body), 400)
    assert re.search(r"Prompt \(\d+ tokens\).*exceeds the context of \d+ tokens by \d+", error["message"])
    with pytest.raises(openai.BadRequestError):
        openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0).completions.create(
            model=CHAT_SAMPLE, prompt="hello " * 9000, max_tokens=8)


def test_truncate_prompt_fits_an_overflow_on_every_route(server: Server) -> None:
    """The overflow's 400 names ``truncate_prompt``; every generation route takes it (the
    Responses API also as its own ``truncation: "auto"``). Room for a short prompt is made by a
    large ``max_tokens``, and a grammar ends each answer at once: the prefill stays short."""
    room = 8100  # of the sample's 8,192 positions: 92 are left for the prompt
    yes_no = {"type": "string", "enum": ["yes", "no"]}
    asks = {
        "/chat/completions": ({**CHAT, "messages": [{"role": "user", "content": "hello " * 300}], "max_tokens": room,
                               "structured_outputs": {"regex": "(yes|no)"}}, "truncate_prompt"),
        "/completions": ({"model": CHAT_SAMPLE, "prompt": "hello " * 300, "max_tokens": room,
                          "structured_outputs": {"regex": "(yes|no)"}}, "truncate_prompt"),
        "/responses": ({"model": CHAT_SAMPLE, "input": "hello " * 300, "max_output_tokens": room,
                        "text": {"format": {"type": "json_schema", "name": "answer", "schema": yes_no}}},
                       "truncation"),
        "/messages": ({"model": CHAT_SAMPLE, "max_tokens": room, "messages": [{"role": "user", "content": "hello " * 300}],
                       "output_config": {"format": {"type": "json_schema", "schema": yes_no}}}, "truncate_prompt"),
    }
    for path, (body, switch) in asks.items():
        refused = _post(server, path, body)
        offered = '"truncation": "auto"' if switch == "truncation" else '"truncate_prompt": true'  # as each API names it
        assert refused.status_code == 400 and offered in refused.json()["error"]["message"], (path, refused.text)
        answer = _post(server, path, {**body, switch: "auto" if switch == "truncation" else True})
        assert answer.status_code == 200, (path, answer.text)
        usage = answer.json()["usage"]
        read = usage.get("prompt_tokens", usage.get("input_tokens"))
        assert read is not None and 0 < read <= 8192 - room, (path, usage)


@pytest.mark.parametrize("model", ["no-such-model", None, f"{CHAT_SAMPLE}:int3", "../etc", EMBEDDING_SAMPLE])
def test_unknown_models_are_404_listing_the_known(server: Server, model: str | None) -> None:
    body = {k: v for k, v in {**CHAT, "model": model}.items() if v is not None}
    error = _error(_post(server, "/chat/completions", body), 404)
    assert error["code"] == "model_not_found" and f"{CHAT_SAMPLE}:int8" in error["message"]
    if model == EMBEDDING_SAMPLE:  # it exists: the 404 says what it is
        assert f"'{EMBEDDING_SAMPLE}' is an embedding model, not a chat model" in error["message"], error
    else:
        embed = _error(_post(server, "/embeddings", {"model": model or "x:int8", "input": "a"}), 404)
        assert f"{EMBEDDING_SAMPLE}:int8" in embed["message"]


def test_unknown_routes_answer_json(server: Server) -> None:
    _error(httpx.get(f"{server.url}/v1/nothing", timeout=10), 404)
    _error(httpx.get(f"{server.v1}/chat/completions", timeout=10), 405)


@pytest.mark.parametrize("path", ["/", "/health", "/page/app.js"])
def test_head_answers_as_get_does_without_a_body(server: Server, path: str) -> None:
    got, head = httpx.get(f"{server.url}{path}", timeout=10), httpx.head(f"{server.url}{path}", timeout=10)
    assert got.status_code == head.status_code == 200 and got.content and not head.content
    assert head.headers["content-type"] == got.headers["content-type"]


def test_api_key(small_server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        error = _error(_post(small_server, "/chat/completions", CHAT, headers=headers), 401)
        assert error["code"] == "invalid_api_key"
    reply = _post(small_server, "/chat/completions", CHAT, headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status_code == 200, reply.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=small_server.v1, api_key="wrong", max_retries=0).models.list()
    assert openai.OpenAI(base_url=small_server.v1, api_key=KEY).models.list().data
    assert httpx.get(f"{small_server.url}/health", timeout=10).status_code == 200  # open, as llama.cpp's


def test_a_full_queue_is_503_with_retry_after(small_server: Server) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{small_server.v1}/chat/completions", json=_endless(4000), headers=auth,
                      timeout=120) as held:
        assert held.status_code == 200
        lines = held.iter_lines()  # kept: a dropped iterator closes the connection, and the server sees it
        next(lines)  # admitted and generating: the one place in the queue is taken

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60, headers=auth) as http:
                return await asyncio.gather(*[http.post(f"{small_server.v1}/chat/completions", json=CHAT)
                                              for _ in range(4)])

        for reply in asyncio.run(burst()):
            error = _error(reply, 503)
            assert error["code"] == "queue_full" and int(reply.headers["Retry-After"]) >= 1
        assert next(line for line in lines if line).startswith("data: ")  # still streaming
    _wait_for(lambda: _metric(small_server, "ortmodels_server_requests_in_flight") == 0, "released")
    assert _post(small_server, "/chat/completions", CHAT, headers=auth).status_code == 200
    assert _metric(small_server, "ortmodels_server_rejected_total") >= 4


def test_a_client_that_leaves_mid_stream_frees_its_row(server: Server) -> None:
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=_endless(4000), timeout=120) as reply:
        lines = reply.iter_lines()
        for _ in range(6):
            next(lines)
        assert _metric(server, "ortmodels_engine_running_requests") == 1
    # the request cannot end before 4000 tokens, far more than this wait: the row is freed because the client left
    _wait_for(lambda: _metric(server, "ortmodels_engine_running_requests") == 0, "freed", timeout=10)
    _wait_for(lambda: _metric(server, "ortmodels_server_requests_in_flight") == 0, "released", timeout=10)


def test_a_client_that_leaves_before_a_whole_answer_frees_its_row(server: Server) -> None:
    body = json.dumps({**_endless(4000), "stream": False}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    with socket.create_connection((host, int(port)), timeout=30) as client:
        client.sendall(request)
        # the client leaves only once its request is generating, however long admission and prefill take
        _wait_for(lambda: _metric(server, "ortmodels_engine_running_requests") == 1, "running", timeout=60)
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(1)  # no byte of the answer yet: it cannot end before 4000 tokens
    _wait_for(lambda: _metric(server, "ortmodels_engine_running_requests") == 0, "freed", timeout=10)
    _wait_for(lambda: _metric(server, "ortmodels_server_requests_in_flight") == 0, "released", timeout=10)


# -- fuzz --------------------------------------------------------------------------------------

def _random_value(rng: random.Random, depth: int = 0) -> object:
    kinds = ["none", "bool", "int", "huge", "float", "str", "list", "dict"]
    kind = rng.choice(kinds if depth < 3 else kinds[:6])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([-1, 0, 3, -(2**63), 2**64])
    if kind == "huge":
        return rng.choice([10**40, -10**40, 1e308, -1e308, 1e-320])
    if kind == "float":
        return rng.choice([-0.5, 0.0, 0.7, 2.5, 1e9])
    if kind == "str":
        return "".join(rng.choice("ab{}[]\"\\:,é\u2028 \x00") for _ in range(rng.randint(0, 12)))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["role", "content", "type", "name", "x"]): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


_FIELDS = {
    "/chat/completions": ["model", "messages", "max_tokens", "temperature", "top_p", "seed", "stop", "stream",
                          "n", "tools", "tool_choice", "response_format", "logprobs", "stream_options",
                          "max_completion_tokens", "top_k", "junk"],
    "/completions": ["model", "prompt", "max_tokens", "temperature", "stop", "echo", "stream", "seed"],
    "/embeddings": ["model", "input", "encoding_format", "dimensions", "input_type", "prompt_name", "matryoshka"],
}
_BASES = {
    "/chat/completions": {**CHAT, "max_tokens": 3},
    "/completions": {"model": CHAT_SAMPLE, "prompt": "Hi", "max_tokens": 3},
    "/embeddings": {"model": EMBEDDING_SAMPLE, "input": ["a"]},
}


def _fuzz_bodies(rng: random.Random, count: int, bases: dict[str, dict] = _BASES,
                 fields: dict[str, list[str]] = _FIELDS) -> Iterator[tuple[str, bytes]]:
    for _ in range(count):
        path = rng.choice(list(bases))
        body = dict(bases[path])
        roll = rng.random()
        if roll < 0.1:  # not JSON, or JSON that is not an object
            yield path, rng.choice([b"", b"{", b"\xff\xfe", b"null", b"[]", b"12", b'"x"', b"[" * 5000,
                                    b'{"max_tokens": ' + b"9" * 5000 + b"}", b"{" + b'"a":' * 3 + b"}"])
            continue
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(fields[path])
            if rng.random() < 0.2:
                body.pop(name, None)
            else:
                body[name] = _random_value(rng)
        if path in ("/chat/completions", "/completions"):  # keep any accidental real generation short
            if not isinstance(body.get("max_tokens"), int) or 0 < body["max_tokens"] < 1000:
                body["max_tokens"] = 3
            body.pop("max_completion_tokens", None) if rng.random() < 0.5 else None
        yield path, json.dumps(body).encode()


def test_fuzz_never_5xx(server: Server) -> None:
    statuses = fuzz(server, _fuzz_bodies(random.Random(12), 300))
    assert statuses.get(400, 0) > 100, statuses


def fuzz(server: Server, bodies: Iterator[tuple[str, bytes]], base: str | None = None) -> dict[int, int]:
    """Post every body (its path under ``base``, by default the server's ``/v1``); none may get a
    5xx, every 4xx has OpenAI's error body; the statuses seen."""
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=60) as http:
        for path, content in bodies:
            reply = http.post(f"{base or server.v1}{path}", content=content,
                              headers={"Content-Type": "application/json"})
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            assert reply.status_code < 500, (path, content[:300], reply.text[:500])
            if reply.status_code >= 400:
                assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    return statuses


# -- shutdown ----------------------------------------------------------------------------------

def test_sigterm_lets_the_running_request_finish_then_exits_0(tmp_path: Path) -> None:
    running = _start(tmp_path, "--models", CHAT_SAMPLE, "--shutdown-timeout", "20")
    try:
        body = {**CHAT, "max_tokens": 32, "stream": True}
        with httpx.stream("POST", f"{running.v1}/chat/completions", json=body, timeout=60) as reply:
            lines = reply.iter_lines()
            assert next(lines).startswith("data: ")
            running.process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]", rest[-3:]
        assert running.process.wait(timeout=60) == 0, running.logs()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{running.url}/health", timeout=5)
    finally:
        _stop(running)
