"""``/v1/responses`` as clients see it: one real ``ortmodels serve`` process (the chat sample
only) spoken to by the official ``openai`` client (``client.responses``) and raw HTTP, every
object and event checked against the client's own pydantic models.

Answers are greedy and short (``max_output_tokens`` 8-64) so the file runs in about a minute.
The store's rules and the mapping of input items are checked in-process at the end, without a
server.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
jsonschema = pytest.importorskip("jsonschema")

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from ortmodels.serve.errors import ApiError
from ortmodels.serve.response_store import ResponseStore, StoredResponse
from ortmodels.serve.responses import input_messages

from .conftest import CHAT_SAMPLE
from .servers import module_server
from .test_serve import Server, _random_value, fuzz

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
EVENTS = TypeAdapter(ResponseStreamEvent)


class Place(BaseModel):
    city: str
    country: str


#: The kept responses' bytes in the module's server: a few dozen short answers, and small enough that
#: three long inputs push the oldest out (count alone, 256, never would).
STORE_BYTES = 24 << 10

server = module_server("serve-responses", "--models", CHAT_SAMPLE,
                       settings={"MODEL_RESPONSES_STORE_BYTES": f"{STORE_BYTES // 1024}KiB"})


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


def _raw(server: Server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.v1}/responses", json=body, timeout=120)


def _events(server: Server, body: dict) -> list:
    """The stream's events, each read by the client's own model of its type (a wrong shape fails)."""
    events = []
    with httpx.stream("POST", f"{server.v1}/responses", json={**body, "stream": True}, timeout=120) as reply:
        assert reply.status_code == 200, reply.read()
        kind = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                payload = json.loads(line.removeprefix("data: "))
                assert payload["type"] == kind  # the SSE event name is the payload's type
                events.append(EVENTS.validate_python(payload))
    return events


@pytest.mark.slow
def test_whole_response_parses_into_the_clients_model_and_is_kept(client: openai.OpenAI, server: Server) -> None:
    raw = _raw(server, {"model": CHAT_SAMPLE, "input": "What is the capital of France?", "max_output_tokens": 24,
                        "temperature": 0})
    answer = Response.model_validate(raw.json())  # validated, not just constructed
    assert answer.status == "completed" and answer.object == "response" and answer.id.startswith("resp_")
    assert "Paris" in answer.output_text
    [message] = answer.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    usage = answer.usage
    assert usage.input_tokens > 10 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    # kept: read back, deleted, then gone
    kept = client.responses.retrieve(answer.id)
    assert kept.id == answer.id and kept.output_text == answer.output_text
    client.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)
    # cut by max_output_tokens: incomplete, and says why
    cut = client.responses.create(model=CHAT_SAMPLE, input="Count from 1 to 100.", max_output_tokens=4, temperature=0)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 4
    assert cut.completed_at is None and answer.completed_at is not None  # OpenAI's: set when completed only


@pytest.mark.slow
def test_streamed_events_come_in_order_and_spell_the_whole_answer(client: openai.OpenAI, server: Server) -> None:
    body = {"model": CHAT_SAMPLE, "input": "Name three colours.", "instructions": "Answer in one short sentence.",
            "max_output_tokens": 32, "temperature": 0}
    events = _events(server, body)
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     kinds[-1]]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    text = "".join(d.delta for d in deltas)
    assert text and text == final.output_text == events[-4].text == events[-3].part.text
    assert final.instructions == body["instructions"] and final.usage.output_tokens > 0
    assert {d.item_id for d in deltas} == {final.output[0].id}
    # the client's own stream reader, and the same answer whole
    streamed = list(client.responses.create(**body, stream=True))
    assert streamed[-1].response.output_text == text
    assert client.responses.create(**body).output_text == text


@pytest.mark.slow
def test_instructions_are_read_first_and_only_for_their_request(client: openai.OpenAI) -> None:
    pirate = "You are a pirate captain who sails the seven seas and answers like a pirate. " * 4
    plain = client.responses.create(model=CHAT_SAMPLE, input="Hello", max_output_tokens=8, temperature=0)
    told = client.responses.create(model=CHAT_SAMPLE, input="Hello", max_output_tokens=8, temperature=0,
                                   instructions=pirate)
    assert told.instructions == pirate
    # the instructions are in the prompt (in place of the template's default system prompt)
    assert told.usage.input_tokens >= plain.usage.input_tokens + 40
    # a continuation reads its own instructions only, as OpenAI's does
    again = client.responses.create(model=CHAT_SAMPLE, input="Hi", previous_response_id=told.id,
                                    max_output_tokens=4, temperature=0, instructions=pirate)
    without = client.responses.create(model=CHAT_SAMPLE, input="Hi", previous_response_id=told.id,
                                      max_output_tokens=4, temperature=0)
    assert without.instructions is None
    assert without.usage.input_tokens <= again.usage.input_tokens - 40


@pytest.mark.slow
def test_tool_round_trip_with_previous_response_id(client: openai.OpenAI) -> None:
    called = client.responses.create(model=CHAT_SAMPLE, input="What is the weather in Paris?", tools=[WEATHER],
                                     tool_choice={"type": "function", "name": "get_weather"},
                                     max_output_tokens=64, temperature=0)
    assert called.status == "completed"
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    assert called.tools[0].name == "get_weather" and called.tool_choice.name == "get_weather"
    # the call's result continues the kept conversation
    answered = client.responses.create(model=CHAT_SAMPLE, previous_response_id=called.id, max_output_tokens=32,
                                       temperature=0, input=[{"type": "function_call_output",
                                                              "call_id": call.call_id, "output": "Sunny, 21 C"}])
    assert answered.previous_response_id == called.id
    assert [item.type for item in answered.output] == ["message"] and answered.output_text
    question = client.responses.create(model=CHAT_SAMPLE, input="What is the weather in Paris?", max_output_tokens=1)
    assert answered.usage.input_tokens >= question.usage.input_tokens + 15  # + the call and its result
    # the same history sent as items (no previous_response_id) reads as the same prompt
    resent = client.responses.create(model=CHAT_SAMPLE, max_output_tokens=32, temperature=0, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}])
    assert resent.usage.input_tokens == answered.usage.input_tokens
    assert resent.output_text == answered.output_text


@pytest.mark.slow
def test_tool_call_streamed(server: Server, client: openai.OpenAI) -> None:
    events = _events(server, {"model": CHAT_SAMPLE, "input": "Weather in Rome?", "tools": [WEATHER],
                              "tool_choice": "required", "max_output_tokens": 64, "temperature": 0})
    kinds = [e.type for e in events]
    assert kinds[-5:] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    done = events[-3]
    jsonschema.validate(json.loads(done.arguments), WEATHER["parameters"])
    assert events[-4].delta == done.arguments == events[-1].response.output[-1].arguments
    assert events[-5].item.status == "in_progress" and events[-2].item.status == "completed"
    # the client's stream helper, which rebuilds the response from the events, reads the same call
    with client.responses.stream(model=CHAT_SAMPLE, input="Weather in Rome?", tools=[{**WEATHER, "strict": True}],
                                 tool_choice="required", max_output_tokens=64, temperature=0) as stream:
        final = stream.get_final_response()
    assert final.output[-1].parsed_arguments == json.loads(done.arguments)


@pytest.mark.slow
def test_text_format_json_schema_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    answer = client.responses.create(
        model=CHAT_SAMPLE, input="Where is the Eiffel tower? Answer as JSON.", max_output_tokens=40, temperature=0,
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(answer.output_text), schema)
    assert answer.text.format.type == "json_schema" and answer.text.format.name == "place"
    parsed = client.responses.parse(model=CHAT_SAMPLE, input="Where is the Eiffel tower? Answer as JSON.",
                                    max_output_tokens=40, temperature=0, text_format=Place)
    assert isinstance(parsed.output_parsed, Place) and parsed.output_parsed.city
    anything = client.responses.create(model=CHAT_SAMPLE, input="A JSON object, please.", max_output_tokens=24,
                                       temperature=0, text={"format": {"type": "json_object"}})
    assert anything.output_text.lstrip().startswith("{")


@pytest.mark.slow
def test_previous_response_id_continues_and_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    first = client.responses.create(model=CHAT_SAMPLE, input="My name is Ada. Say hello to me.",
                                    max_output_tokens=16, temperature=0)
    second = client.responses.create(model=CHAT_SAMPLE, input="What is my name?", previous_response_id=first.id,
                                     max_output_tokens=16, temperature=0)
    alone = client.responses.create(model=CHAT_SAMPLE, input="What is my name?", max_output_tokens=16, temperature=0)
    # the second prompt holds the first turn (its input and answer) before the new question
    assert second.usage.input_tokens >= first.usage.input_tokens + first.usage.output_tokens + alone.usage.input_tokens - 30
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 2  # found in the prompt cache
    unkept = client.responses.create(model=CHAT_SAMPLE, input="Hi", store=False, max_output_tokens=4)
    with pytest.raises(openai.BadRequestError) as missing:  # OpenAI's 400, not a 404: the body names the field
        client.responses.create(model=CHAT_SAMPLE, input="Again", previous_response_id=unkept.id, max_output_tokens=4)
    assert missing.value.body["param"] == "previous_response_id" and "store: false" in missing.value.body["message"]
    assert missing.value.body["code"] == "previous_response_not_found" and missing.value.body["type"] == \
        "invalid_request_error" and missing.value.body["message"].startswith(f"Previous response with id '{unkept.id}'")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"background": True}, "background", "not supported"),
    ({"include": ["reasoning.encrypted_content"]}, "include", "not supported"),
    ({"reasoning": {"effort": "xhigh"}}, "reasoning.effort", "'high' already reasons"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "none, minimal, low, medium, high"),
    ({"reasoning": {"summary": "detailed"}}, "reasoning", "no summary"),
    ({"reasoning": {"context": "all_turns"}}, "reasoning", "all_turns"),
    ({"truncation": "sometimes"}, "truncation", "'auto' or 'disabled'"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}, "input[0].call_id",
     "answers no function_call"),
    ({"top_logprobs": 3}, "top_logprobs", "not supported"),
    ({"tools": [{"type": "web_search"}]}, "tools", "'web_search'"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "flat"),
    ({"tool_choice": {"type": "allowed_tools", "tools": []}, "tools": [WEATHER]}, "tool_choice", "allowed_tools"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"text": {"verbosity": "low"}}, "text.verbosity", "not supported"),
    ({"text": {"format": {"type": "json_schema", "json_schema": {}}}}, "text.format.json_schema", "Unrecognized"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content",
     "text only"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "'item_reference'"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input", "only reasoning items"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[0].arguments",
     "JSON object"),
    ({"input": []}, "input", "empty"),
    ({"previous_response_id": "resp_never"}, "previous_response_id", "resp_never"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "Unrecognized"),
    ({"tools": [{**WEATHER, "parameters": {"type": "array"}}]}, "tools", "not an object schema"),
    ({"tools": [WEATHER], "text": {"format": {"type": "json_object"}}}, None, "not both"),
    ({"text": {"format": {"type": "json_schema", "name": "nothing", "schema": {"type": "string",
                                                                               "pattern": "[^\\s\\S]"}}}},
     "text.format.schema", "json_schema"),
    ({"text": {"format": {"type": "json_schema", "name": "p"}}}, "text.format.schema", "needs its schema"),
    ({"tools": [{"type": "custom", "name": "f"}]}, "tools", "a custom tool"),
    ({"max_tokens": 2}, "max_tokens", "max_output_tokens"),
    ({"input": 5}, "input", "give a string, or a list of objects (got 5)"),
])
def test_refused_fields_are_named(server: Server, extra: dict, param: str, words: str) -> None:
    reply = _raw(server, {"model": CHAT_SAMPLE, "input": "Hi", "max_output_tokens": 4, **extra})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and words in error["message"], error


@pytest.mark.slow
def test_a_prompt_past_the_context_is_named_as_this_api_names_it(server: Server, client: openai.OpenAI) -> None:
    """``input`` and ``max_output_tokens``, and ``truncation: "auto"`` as the fix (not chat's
    ``messages``, ``max_tokens`` and ``truncate_prompt``), whole and streamed; with it, the
    oldest tokens go and the response says ``truncation: "auto"``."""
    long = "hello " * 9000
    for stream in (False, True):
        reply = _raw(server, {"model": CHAT_SAMPLE, "input": long, "max_output_tokens": 5, "stream": stream})
        error = reply.json()["error"]
        assert reply.status_code == 400 and error["code"] == "context_length_exceeded", reply.text
        assert error["param"] == "input" and 'set "truncation": "auto"' in error["message"], error
        assert "max_output_tokens (5)" in error["message"] and "max_tokens" not in error["message"].replace(
            "max_output_tokens", ""), error
    error = _raw(server, {"model": CHAT_SAMPLE, "input": "Hi", "max_output_tokens": 9000}).json()["error"]
    assert error["param"] == "max_output_tokens" and "max_output_tokens (9000) alone fills" in error["message"], error
    cut = client.responses.create(model=CHAT_SAMPLE, input=long, max_output_tokens=2, truncation="auto")
    assert cut.truncation == "auto" and cut.usage.input_tokens < 9000
    assert client.responses.create(model=CHAT_SAMPLE, input="Hi", max_output_tokens=2).truncation == "disabled"


_FIELDS = ["model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
           "text", "stream", "store", "previous_response_id", "metadata", "parallel_tool_calls", "background",
           "include", "truncation", "user", "junk"]


def _fuzz_items(rng: random.Random) -> list:
    kinds = ["message", "function_call", "function_call_output", "reasoning", None]
    items = []
    for _ in range(rng.randint(0, 3)):
        item = {"type": rng.choice(kinds), "role": rng.choice(["user", "assistant", "developer", "tool", 3]),
                "content": rng.choice(["hi", [{"type": "input_text", "text": "a"}], [{"type": "x"}],
                                       _random_value(rng)]),
                "call_id": rng.choice(["c1", "", None, 5]), "name": rng.choice(["get_weather", None]),
                "arguments": rng.choice(['{"city": "x"}', "[", None, 7]), "output": _random_value(rng)}
        items.append({k: v for k, v in item.items() if v is not None and rng.random() < 0.8})
    return items


def _bodies(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    base = {"model": CHAT_SAMPLE, "input": "Hi", "max_output_tokens": 3}
    for _ in range(count):
        body = dict(base)
        if rng.random() < 0.05:
            yield "/responses", rng.choice([b"", b"[]", b"{", b"\xff", b'{"input": "\\ud800"}'])
            continue
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(_FIELDS)
            if rng.random() < 0.2:
                body.pop(name, None)
            elif name == "input" and rng.random() < 0.6:
                body[name] = _fuzz_items(rng)
            elif name == "tools" and rng.random() < 0.5:
                body[name] = [rng.choice([WEATHER, {"type": "function", "name": _random_value(rng)},
                                          {"type": _random_value(rng)}])]
            else:
                body[name] = _random_value(rng)
        if not isinstance(body.get("max_output_tokens"), int) or 0 < body["max_output_tokens"] < 1000:
            body["max_output_tokens"] = 3  # keep any accidental real generation short
        yield "/responses", json.dumps(body).encode()


@pytest.mark.slow
def test_fuzzed_bodies_are_4xx_never_5xx(server: Server) -> None:
    statuses = fuzz(server, _bodies(random.Random(24), 200))
    assert statuses.get(400, 0) > 80, statuses


@pytest.mark.slow
def test_the_store_is_bounded_by_bytes_oldest_first(client: openai.OpenAI) -> None:
    """``MODEL_RESPONSES_STORE_BYTES``: long conversations push the oldest kept responses out
    although their count is far below ``MODEL_RESPONSES_STORE``."""
    oldest = client.responses.create(model=CHAT_SAMPLE, input="Hi", max_output_tokens=2, temperature=0)
    long_input = "The quick brown fox jumps over the lazy dog. " * 200  # 9 kB of text, ~2k tokens
    kept = [client.responses.create(model=CHAT_SAMPLE, input=long_input, max_output_tokens=1, temperature=0)
            for _ in range(3)]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(oldest.id)
    with pytest.raises(openai.BadRequestError) as dropped:
        client.responses.create(model=CHAT_SAMPLE, input="Again", previous_response_id=oldest.id,
                                max_output_tokens=2)
    assert "MODEL_RESPONSES_STORE_BYTES" in dropped.value.body["message"]
    assert client.responses.retrieve(kept[-1].id).id == kept[-1].id  # the newest stays


@pytest.mark.slow
def test_a_response_too_large_to_keep_says_store_false(client: openai.OpenAI, server: Server) -> None:
    """A response larger than the whole ``MODEL_RESPONSES_STORE_BYTES`` is not kept, and its object
    says so, whole and as a stream's last event; one that is kept says ``store: true``."""
    large = "-" * (STORE_BYTES + 2048)  # ~26 kB in ~400 tokens
    body = {"model": CHAT_SAMPLE, "input": large, "max_output_tokens": 1, "temperature": 0}
    whole = client.responses.create(**body)
    assert whole.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(whole.id)
    streamed = _events(server, body)[-1]
    assert streamed.type == "response.incomplete" and streamed.response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(streamed.response.id)
    kept = client.responses.create(model=CHAT_SAMPLE, input="Hi", max_output_tokens=1, temperature=0)
    assert kept.store is True and client.responses.retrieve(kept.id).store is True


@pytest.mark.slow
def test_reasoning_effort_is_taken_and_a_level_beyond_high_named(client: openai.OpenAI, server: Server) -> None:
    """The sample does not reason: a level changes nothing in its answer, and is echoed."""
    plain = client.responses.create(model=CHAT_SAMPLE, input="Hi", max_output_tokens=6, temperature=0)
    for effort in ("none", "minimal", "low", "medium", "high"):
        answer = client.responses.create(model=CHAT_SAMPLE, input="Hi", max_output_tokens=6, temperature=0,
                                         reasoning={"effort": effort, "summary": "auto"})
        assert answer.output_text == plain.output_text and answer.reasoning.effort == effort
        assert [item.type for item in answer.output] == ["message"]
    for effort in ("xhigh", "max"):
        with pytest.raises(openai.BadRequestError) as beyond:
            client.responses.create(model=CHAT_SAMPLE, input="Hi", max_output_tokens=2, reasoning={"effort": effort})
        assert beyond.value.body["param"] == "reasoning.effort" and effort in beyond.value.body["message"]
    disagree = _raw(server, {"model": CHAT_SAMPLE, "input": "Hi", "max_output_tokens": 2,
                             "reasoning": {"effort": "none"}, "enable_thinking": True})
    assert disagree.status_code == 400 and disagree.json()["error"]["param"] == "reasoning.effort", disagree.text
    # a reasoning item sent back with the history is taken and not shown to the model
    echoed = client.responses.create(model=CHAT_SAMPLE, max_output_tokens=6, temperature=0, input=[
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
        {"role": "user", "content": "Hi"}])
    assert echoed.output_text == plain.output_text and echoed.usage.input_tokens == plain.usage.input_tokens


# -- in-process: the store, the input items, a failed stream's end ---------------------------------

def _kept(number: int) -> StoredResponse:
    return StoredResponse({"id": f"resp_{number}"}, [{"role": "user", "content": str(number)}])


def test_the_store_drops_the_least_recently_used_first() -> None:
    store = ResponseStore(2)
    store.put(_kept(1))
    store.put(_kept(2))
    store.get("resp_1")  # used: resp_2 is now the oldest
    store.put(_kept(3))
    assert len(store) == 2 and store.get("resp_1") and store.get("resp_3")
    with pytest.raises(ApiError) as gone:
        store.previous("resp_2")
    assert gone.value.status == 400 and gone.value.param == "previous_response_id"
    assert gone.value.code == "previous_response_not_found" and "MODEL_RESPONSES_STORE" in gone.value.message
    with pytest.raises(ApiError) as read:
        store.get("resp_2")  # read or deleted by its path: a 404
    assert read.value.status == 404 and read.value.param is None
    store.delete("resp_1")
    with pytest.raises(ApiError):
        store.delete("resp_1")
    empty = ResponseStore(0)
    empty.put(_kept(1))
    assert len(empty) == 0


def test_the_store_counts_bytes_and_drops_the_oldest_until_they_fit() -> None:
    sized = StoredResponse({"id": "resp_x"}, [{"role": "user", "content": "é" * 1000}])
    assert 2000 < sized.nbytes < 2100  # the UTF-8 JSON of the response and its conversation
    store = ResponseStore(100, max_bytes=3 * sized.nbytes)
    for number in range(4):
        store.put(StoredResponse({"id": f"resp_{number}"}, sized.messages))
    assert len(store) == 3 and store.nbytes <= store.max_bytes
    with pytest.raises(ApiError):
        store.get("resp_0")
    store.put(StoredResponse({"id": "resp_huge"}, [{"role": "user", "content": "x" * 10_000}]))
    assert len(store) == 3
    with pytest.raises(ApiError):
        store.get("resp_huge")  # larger than the whole bound: not kept, nothing dropped for it
    store.delete("resp_1")
    assert store.nbytes == 2 * sized.nbytes  # ids of one length: every entry the same size


def test_a_failed_streams_end_is_the_responses_apis_error_and_failed_events() -> None:
    """What `sse.respond` sends when a started stream fails (the shutdown timeout, an engine that
    closed): ``error`` and ``response.failed``, read by the client's own models; not chat's shape."""
    from ortmodels.serve.protocol_responses import ResponsesRequest
    from ortmodels.serve.responses import ResponseAnswer, prepare

    body = ResponsesRequest.model_validate({"model": CHAT_SAMPLE, "input": "Hi"})
    store = ResponseStore()
    answer = ResponseAnswer(CHAT_SAMPLE, body, prepare(body, store), store)
    lines = answer.error_events(ApiError(503, "The server is shutting down.", type="server_error",
                                         code="server_shutting_down"))
    events = []
    for line in lines:
        name, data = line.split("\n")[:2]
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}" and "error" not in payload  # the client raises on a top-level error
        events.append(EVENTS.validate_python(payload))
    error, failed = events
    assert error.type == "error" and error.code == "server_shutting_down" and "shutting down" in error.message
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "server_error" and failed.response.error.message == error.message
    assert failed.sequence_number == error.sequence_number + 1 and len(store) == 0


def test_a_store_that_keeps_nothing_makes_responses_that_say_store_false() -> None:
    """``MODEL_RESPONSES_STORE=0`` (or ``_BYTES=0``): nothing is kept, and every response object,
    the stream's first included, says ``store: false``; ``put`` tells whether it kept one."""
    from ortmodels.serve.protocol_responses import ResponsesRequest
    from ortmodels.serve.responses import ResponseAnswer, prepare

    body = ResponsesRequest.model_validate({"model": CHAT_SAMPLE, "input": "Hi"})
    for store in (ResponseStore(0), ResponseStore(8, max_bytes=0)):
        answer = ResponseAnswer(CHAT_SAMPLE, body, prepare(body, store), store)
        assert answer._response("in_progress")["store"] is False
        assert store.put(_kept(1)) is False and len(store) == 0
    assert ResponseStore(8).put(_kept(1)) is True


def test_input_items_become_the_services_messages() -> None:
    messages = input_messages([
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather "},
                                                         {"type": "input_text", "text": "in Paris?"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city": "Lyon"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "Rain"}]},
    ])
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"name": "get_weather", "id": "c1", "arguments": {"city": "Paris"}},
            {"name": "get_weather", "id": "c2", "arguments": {"city": "Lyon"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "Rain"},
    ]
    assert input_messages("Hi") == [{"role": "user", "content": "Hi"}]



def test_a_text_part_without_its_text_is_named_as_such() -> None:
    """A part of a type the server reads, but without its text, is not called an unreadable type."""
    for part, says in [({"type": "input_text"}, "(input_text) has no string 'text'"),
                       ({"type": "refusal", "refusal": 3}, "(refusal) has no string 'refusal'"),
                       ({"type": "input_image"}, "of type 'input_image'; this server's models read text only")]:
        role = "user" if part["type"] != "refusal" else "assistant"
        with pytest.raises(ApiError) as refused:
            input_messages([{"role": role, "content": [part]}])
        assert says in refused.value.message and refused.value.param == "input[0].content", refused.value.message
