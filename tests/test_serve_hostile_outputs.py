"""The server's fuzz set, sampling and output cases: extreme temperatures and penalties, grammars
that admit nothing, tools that could not be called back, ``logprobs`` with tools, stop strings
inside a call. Each is a 4xx naming the problem or a whole answer: never a 5xx.

Runs on test_serve.py's real server process (its ``server`` fixture and helpers).
"""

from __future__ import annotations

import json
import random

import pytest

from .test_serve import CHAT, WEATHER, Server, _error, _post, httpx, server  # noqa: F401  (server: a fixture)

pytestmark = pytest.mark.slow

ARRAY_TOOL = {"type": "function", "function": {"name": "count", "parameters": {"type": "array"}}}
INTEGER_TOOL = {"type": "function", "function": {"name": "count", "parameters": {"type": "integer"}}}
PARIS = [{"role": "user", "content": "What's the weather in Paris?"}]
GREETING = [{"role": "system", "content": "Only call a tool when asked about the weather. Otherwise answer with a "
                                          "response."},
            {"role": "user", "content": "Say hello."}]

#: (body, status, param, words in the message)
REFUSED = [
    ({**CHAT, "tools": [ARRAY_TOOL]}, 400, "tools", "not an object schema"),
    ({**CHAT, "tools": [INTEGER_TOOL], "tool_choice": "required"}, 400, "tools", "not an object schema"),
    ({**CHAT, "tools": [WEATHER, WEATHER]}, 400, "tools", "Two tools are named 'get_weather'"),
    ({**CHAT, "tools": [WEATHER], "logprobs": True}, 400, "logprobs", "logprobs cannot be given with tools"),
    ({**CHAT, "tools": [WEATHER], "tool_choice": "required", "logprobs": True, "top_logprobs": 2}, 400, "logprobs",
     "logprobs cannot be given with tools"),
    ({**CHAT, "response_format": {"type": "regex", "regex": "[^\\s\\S]"}}, 400, "response_format.type", "regex"),
    ({**CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "nothing", "schema": {"type": "string", "pattern": "[^\\s\\S]"}}}},
     400, "response_format", "json_schema"),
]


@pytest.mark.parametrize(("body", "status", "param", "words"), REFUSED)
def test_refused_with_a_4xx_naming_the_problem(server: Server, body: dict, status: int, param: str | None,
                                                words: str) -> None:
    error = _error(_post(server, "/chat/completions", body), status)
    assert error["param"] == param and words in error["message"], error
    assert "\n" not in error["message"]


@pytest.mark.parametrize("extreme", [{"temperature": 1e-38}, {"temperature": 5e-324},
                                     {"temperature": 0.7, "repetition_penalty": 1e-300, "seed": 1},
                                     {"temperature": 0.7, "repetition_penalty": 5e-324, "top_k": 3, "seed": 1}])
def test_extreme_sampling_options_answer(server: Server, extreme: dict) -> None:
    reply = _post(server, "/chat/completions", {**CHAT, **extreme})
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and isinstance(choice["message"]["content"], str)
    if "repetition_penalty" not in extreme:  # a tiny temperature is greedy
        greedy = _post(server, "/chat/completions", {**CHAT, "temperature": 0}).json()["choices"][0]
        assert choice["message"]["content"] == greedy["message"]["content"]


def test_logprobs_with_tool_choice_none_still_come(server: Server) -> None:
    reply = _post(server, "/chat/completions", {**CHAT, "tools": [WEATHER], "tool_choice": "none", "logprobs": True})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["logprobs"]["content"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_inside_a_forced_call_leaves_the_call_whole(server: Server, stream: bool) -> None:
    body = {**CHAT, "max_tokens": 48, "messages": PARIS, "tools": [WEATHER], "tool_choice": "required",
            "stop": ["Paris"], "stream": stream}
    reply = _post(server, "/chat/completions", body)
    assert reply.status_code == 200, reply.text
    if stream:
        events = [json.loads(line[6:]) for line in reply.text.splitlines()
                  if line.startswith("data: {")]
        deltas = [e["choices"][0] for e in events if e.get("choices")]
        content = "".join(d["delta"].get("content") or "" for d in deltas)
        calls = [c for d in deltas for c in d["delta"].get("tool_calls") or []]
        reason = next(d["finish_reason"] for d in reversed(deltas) if d.get("finish_reason"))
    else:
        choice = reply.json()["choices"][0]
        content, calls, reason = choice["message"].get("content") or "", choice["message"]["tool_calls"], \
            choice["finish_reason"]
    assert content == "" and reason == "tool_calls"
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [("get_weather", {"city": "Paris"})]


def test_a_stop_string_in_an_auto_answer_cuts_the_text_never_the_wrapper(server: Server) -> None:
    body = {**CHAT, "max_tokens": 48, "messages": GREETING, "tools": [WEATHER], "tool_choice": "auto"}
    whole = _post(server, "/chat/completions", body).json()["choices"][0]["message"]
    assert not whole.get("tool_calls") and whole["content"].startswith("Hello"), whole  # the sample answers
    word = whole["content"].split()[2]
    cut = _post(server, "/chat/completions", {**body, "stop": [word]}).json()["choices"][0]
    assert cut["message"]["content"] == whole["content"][: whole["content"].index(word)]
    assert cut["finish_reason"] == "stop" and not cut["message"].get("tool_calls")


def _hostile_bodies(rng: random.Random, count: int) -> list[dict]:
    """Random mixes of this file's cases: any of them alone is a 4xx or a whole answer."""
    choices = {
        "temperature": [0, 1e-38, 5e-324, 1e-320, 2.0],
        "repetition_penalty": [1e-300, 5e-324, 1e300, 1.7976931348623157e308, 1.0],
        "top_k": [0, 1, 3],
        "top_p": [5e-324, 1e-300, 1.0],
        "stop": [["Paris"], ["{"], ['"'], ["response"], ["get_weather"], ["a", "e", " "]],
        "tools": [[WEATHER], [WEATHER, WEATHER], [ARRAY_TOOL], [INTEGER_TOOL], [WEATHER, ARRAY_TOOL]],
        "tool_choice": ["auto", "required", "none", {"type": "function", "function": {"name": "get_weather"}}],
        "logprobs": [True, False],
        "response_format": [{"type": "json_object"}, {"type": "regex", "regex": "[^\\s\\S]"},
                            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": []}}}],
    }
    bodies = []
    for _ in range(count):
        body = {**CHAT, "max_tokens": 3, "messages": rng.choice([PARIS, GREETING])}
        for name in rng.sample(sorted(choices), rng.randint(1, 4)):
            body[name] = rng.choice(choices[name])
        if "tool_choice" in body and body["tool_choice"] not in ("auto", "none") and "tools" not in body:
            body["tools"] = [WEATHER]
        bodies.append(body)
    return bodies


def test_hostile_output_fuzz_never_5xx(server: Server) -> None:
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=60) as http:
        for body in _hostile_bodies(random.Random(19), 60):
            reply = http.post(f"{server.v1}/chat/completions", json=body)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            assert reply.status_code < 500, (body, reply.text[:500])
            if reply.status_code >= 400:
                error = reply.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"]
            elif body.get("tools") and body.get("tool_choice") != "none":  # the format's JSON is never content
                message = reply.json()["choices"][0]["message"]
                assert not (message.get("content") or "").lstrip().startswith("{"), (body, message)
    assert statuses.get(200, 0) > 5 and statuses.get(400, 0) > 5, statuses
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
