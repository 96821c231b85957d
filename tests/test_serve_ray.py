"""``ortmodels serve --ray`` as clients and operators see it: a real local Ray cluster started by
the CLI, two replicas of each model, the official ``openai`` client, and a replica killed
under load.

One cluster for the module (started once, about 15 s on 2 cores; stopped with SIGTERM,
which runs ``serve.shutdown()`` and ``ray.shutdown()``). The test process joins it as a
second driver to read ``serve.status()`` and to ``ray.kill`` a replica. The health check
is tested without Ray, on the replica class itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
from ray import serve

from ortmodels.errors import ConfigurationError, ModelFileError
from ortmodels.serve.ray import plan
from ortmodels.serve.ray.deployments import ModelServer

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE, SAMPLES_DIR
from .ray_serve import RayServer, serve_on_ray
from .waiting import join_all, wait_until

#: A Ray cluster takes minutes to start and to replace a replica on 2 busy cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

START_TIMEOUT_S = 180.0
CHAT_DEPLOYMENT = f"model-{CHAT_SAMPLE}"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
IMBALANCE = 2


class Cluster:
    def __init__(self, running: RayServer) -> None:
        self.process, self.url, self.log, self.address = running.process, running.url, running.log, running.address

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``ortmodels serve --ray --replicas 2`` on a free port; the test process joins its cluster.
    Prefix routing with a small imbalance (2), so a test saturates a replica with 3 streams. With
    ``MODEL_PROMPT_CACHE_DIR`` set, the chat replicas Serve stops at the end (SIGTERM) write their
    prompt cache there (a restarted server reading it back: `test_prompt_cache.py`)."""
    tmp = tmp_path_factory.mktemp("ray")
    saved = tmp / "prompt-cache"
    with serve_on_ray(tmp, SAMPLES_DIR, "--replicas", "2", "--models", f"{CHAT_SAMPLE},{EMBEDDING_SAMPLE}",
                      env={"MODEL_RAY_ROUTING_IMBALANCE": str(IMBALANCE), "MODEL_PROMPT_CACHE_DIR": str(saved)},
                      timeout=START_TIMEOUT_S) as running:
        ray.init(address=running.address, log_to_driver=False)
        try:
            yield Cluster(running)
        finally:
            ray.shutdown()
    assert [p.name.startswith(f"{CHAT_SAMPLE}.") for p in saved.glob("*.promptcache.npz")] == [True]


def _replicas(deployment: str) -> dict[str, int]:
    status = serve.status().applications["ortmodels"]
    return dict(status.deployments[deployment].replica_states)


def _replica_actors() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA") and CHAT_DEPLOYMENT in a["name"]}


def test_two_replicas_of_each_model_run(cluster: Cluster) -> None:
    assert _replicas(CHAT_DEPLOYMENT) == {"RUNNING": 2}
    assert _replicas(f"model-{EMBEDDING_SAMPLE}") == {"RUNNING": 2}
    health = httpx.get(f"{cluster.url}/health", timeout=10).json()
    assert health == {"status": "ok", "models": [CHAT_SAMPLE, EMBEDDING_SAMPLE]}


def test_openai_client_chat_stream_and_embeddings(cluster: Cluster) -> None:
    client = cluster.client()
    whole = client.chat.completions.create(model=CHAT_SAMPLE, messages=QUESTION, max_tokens=12, temperature=0)
    assert "Paris" in whole.choices[0].message.content
    assert 0 < whole.usage.completion_tokens <= 12

    stream = client.chat.completions.create(model=CHAT_SAMPLE, messages=QUESTION, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content  # greedy: the same answer, whichever replica
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    text = client.completions.create(model=CHAT_SAMPLE, prompt="The capital of France is", max_tokens=4,
                                     temperature=0)
    assert text.choices[0].text.strip()

    vectors = client.embeddings.create(model=EMBEDDING_SAMPLE, input=["Paris is in France.", "Ray Serve"])
    assert [len(d.embedding) for d in vectors.data] == [384, 384]
    assert vectors.usage.prompt_tokens > 4


def test_anthropic_messages_and_token_count_through_a_replica(cluster: Cluster) -> None:
    """``/v1/messages`` over Ray, and ``count_tokens`` answered by a replica (`RemoteModel.achat_tokens`)."""
    body = {"model": CHAT_SAMPLE, "messages": QUESTION}
    counted = httpx.post(f"{cluster.url}/v1/messages/count_tokens", json=body, timeout=120)
    assert counted.status_code == 200, counted.text
    reply = httpx.post(f"{cluster.url}/v1/messages", json={**body, "max_tokens": 8, "temperature": 0}, timeout=120)
    assert reply.status_code == 200, reply.text
    message = reply.json()
    assert message["type"] == "message" and "Paris" in message["content"][0]["text"]
    usage = message["usage"]
    assert counted.json() == {"input_tokens": usage["input_tokens"] + usage["cache_read_input_tokens"]}
    missing = httpx.post(f"{cluster.url}/v1/messages", json={**body, "model": "no-such-model", "max_tokens": 8},
                         timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_errors_from_a_replica_keep_openai_bodies(cluster: Cluster) -> None:
    client = cluster.client()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:  # raised on the replica, answered by the ingress
        client.chat.completions.create(model=CHAT_SAMPLE, messages=QUESTION, max_tokens=10**6)
    assert "context" in too_long.value.body["message"] and "Traceback" not in too_long.value.body["message"]
    with pytest.raises(openai.NotFoundError) as undeployed:
        client.chat.completions.create(model=f"{CHAT_SAMPLE}:int8", messages=QUESTION)
    assert "not deployed" in undeployed.value.body["message"]


def test_grammars_and_token_routes_reach_the_replicas(cluster: Cluster) -> None:
    """The routes are the server's own (`routes.py`); the token calls are forwarded to a replica."""
    client = cluster.client()
    answer = client.chat.completions.create(model=CHAT_SAMPLE, messages=QUESTION, max_tokens=8,
                                            extra_body={"structured_outputs": {"choice": ["Paris", "Lyon"]}})
    assert answer.choices[0].message.content in ("Paris", "Lyon")
    bad = httpx.post(f"{cluster.url}/v1/chat/completions", timeout=60, json={
        "model": CHAT_SAMPLE, "messages": QUESTION, "grammar": 'root ::= ( "x"'})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grammar", bad.text
    text = "Ray <|im_end|> Serve"
    tokens = httpx.post(f"{cluster.url}/tokenize", json={"content": text}, timeout=60).json()["tokens"]
    assert 2 not in tokens  # <|im_end|> as text
    assert httpx.post(f"{cluster.url}/detokenize", json={"tokens": tokens}, timeout=60).json() == {"content": text}
    count = httpx.post(f"{cluster.url}/tokenize", json={"messages": QUESTION}, timeout=60).json()["count"]
    assert count == answer.usage.prompt_tokens
    out_of_range = httpx.post(f"{cluster.url}/detokenize", json={"tokens": [10**7]}, timeout=60)
    assert out_of_range.status_code == 400 and out_of_range.json()["error"]["param"] == "tokens"


def _ongoing(replica: str) -> int:
    """Requests the replica actor is serving now, as Serve's router counts them."""
    return ray.get(ray.get_actor(replica, namespace="serve").get_num_ongoing_requests.remote(), timeout=30)


#: A system prompt of about 200 tokens, shared by the conversations of the routing tests.
SYSTEM = ("You are a patient guide to European geography. Answer in one short sentence, name the country "
          "first, and never invent a city. ") * 6


def _opening(name: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"I am {name}, and I am planning a trip through Europe this summer. "
                                        f"{name} would like to know: what is the capital of France?"}]


def _turn(client: openai.OpenAI, messages: list[dict[str, str]], question: str | None = None) -> Any:
    """One turn (greedy, 6 tokens); its answer and, if given, the next question appended."""
    answer = client.chat.completions.create(model=CHAT_SAMPLE, messages=messages, max_tokens=6, temperature=0)
    messages.append({"role": "assistant", "content": answer.choices[0].message.content})
    if question:
        messages.append({"role": "user", "content": question})
    return answer.usage


def _idle() -> None:
    wait_until(lambda: sum(_ongoing(name) for name in _replica_actors()) == 0, 120,
               "both chat replicas idle", interval=0.5)


def test_a_conversations_turns_reach_the_replica_that_holds_it(cluster: Cluster) -> None:
    """Four conversations, three turns each, one request at a time (so both replicas are idle and
    load alone would choose at random): every later turn finds the whole previous prompt in the
    cache of the replica it reaches. By chance alone, 8 of 8 would happen once in 256 runs."""
    _idle()
    client = cluster.client()
    conversations = {name: _opening(name) for name in ("Ada", "Bruno", "Chiara", "Dmitri")}
    last = {name: _turn(client, messages, "And of Spain?") for name, messages in conversations.items()}
    for question in ("And of Italy?", None):
        for name, messages in conversations.items():
            usage = _turn(client, messages, question)
            cached = usage.prompt_tokens_details.cached_tokens
            assert cached >= last[name].prompt_tokens - 2, (name, cached, last[name].prompt_tokens)
            last[name] = usage


def test_a_conversation_whose_replica_is_busy_goes_to_the_other(cluster: Cluster) -> None:
    """Three endless streams continue one conversation, so all three go to the replica holding it
    (its queue stays within the imbalance of 2 until the third); the conversation's next turn,
    which extends their prompt, finds that replica 3 requests busier than the other and is routed
    by load, to the other, which holds none of it."""
    _idle()
    client = cluster.client()
    messages = _opening("Eleonora")
    first = _turn(client, messages, "Please list some numbers.")
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 600}
    streams = []
    try:
        for _ in range(IMBALANCE + 1):  # one at a time, each streaming before the next is routed
            stream = client.chat.completions.create(
                model=CHAT_SAMPLE, messages=messages, max_tokens=600, temperature=0, stream=True,
                response_format={"type": "json_schema", "json_schema": {"name": "numbers", "schema": schema}})
            chunks = iter(stream)
            next(chunks)
            streams.append(stream)
        ongoing = sorted(_ongoing(name) for name in _replica_actors())
        assert ongoing == [0, IMBALANCE + 1], ongoing  # all on the replica that holds the conversation
        messages += [{"role": "assistant", "content": "[1, 2, 3]"},  # the conversation goes on from there
                     {"role": "user", "content": "What is the capital of Portugal?"}]
        usage = _turn(client, messages)
        assert usage.prompt_tokens_details.cached_tokens < first.prompt_tokens - 2, usage
    finally:
        for stream in streams:
            stream.close()
    _idle()


def _endless_stream(client: openai.OpenAI) -> Any:
    """A stream that cannot end before 600 tokens (its grammar wants 600 numbers): still running
    when the kill lands, however slow the machine."""
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 600}
    return client.chat.completions.create(
        model=CHAT_SAMPLE, messages=[{"role": "user", "content": "Numbers."}], max_tokens=600, temperature=0,
        stream=True, response_format={"type": "json_schema", "json_schema": {"name": "numbers", "schema": schema}})


def test_a_replica_killed_under_load_is_replaced(cluster: Cluster) -> None:
    """8 streams in flight, one chat replica killed: exactly the streams on it fail, each with an
    OpenAI error, the others go on; Serve starts a new replica and the next requests all succeed.
    The 8 start at once and share no prompt of their own, so they are routed by load as a burst:
    4 to each replica (the router counts a choice before Serve sends it: `load.RequestCounts`)."""
    client = cluster.client()
    started = threading.Barrier(9, timeout=120)
    expected_failures: list[int] = []  # set once the replica to kill is chosen
    failed: list[str] = []
    alive: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        outcome = "no chunk"
        try:
            stream = _endless_stream(client)
            chunks = iter(stream)
            next(chunks)
            started.wait()
            for chunk in chunks:
                with lock:  # every stream on the killed replica has failed, and this one still streams
                    if expected_failures and len(failed) == expected_failures[0]:
                        outcome = "alive"
                        break
                if chunk.choices and chunk.choices[0].finish_reason:
                    outcome = f"ended: {chunk.choices[0].finish_reason}"
                    break
            stream.close()
            with lock:
                (alive if outcome == "alive" else failed).append(outcome)
        except openai.APIError as exc:  # the error event a failed stream ends with
            with lock:
                failed.append("openai-error" if isinstance(exc.body, dict) and exc.body.get("message") else repr(exc))
        except Exception as exc:  # noqa: BLE001 - anything else (a broken connection) is a failure
            with lock:
                failed.append(repr(exc))

    threads = [threading.Thread(target=one, name=f"stream-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait()  # all 8 streams have their first chunk, and none can end before the kill
    names = _replica_actors()
    assert len(names) == 2, names
    ongoing = {name: _ongoing(name) for name in names}
    assert sorted(ongoing.values()) == [4, 4], ongoing
    killed = max(names)
    with lock:
        expected_failures.append(ongoing[killed])
    ray.kill(ray.get_actor(killed, namespace="serve"), no_restart=True)
    join_all(threads, timeout=180)

    assert len(failed) + len(alive) == 8
    assert failed == ["openai-error"] * ongoing[killed], (failed, ongoing)  # only the streams on it
    assert len(alive) == 8 - ongoing[killed], (failed, ongoing)

    def replaced() -> bool:
        now = _replica_actors()
        return killed not in now and len(now) == 2 and _replicas(CHAT_DEPLOYMENT) == {"RUNNING": 2}

    wait_until(replaced, 90, "two running replicas again, the killed one replaced", interval=0.5)
    print(f"killed {killed} serving {ongoing[killed]} of 8 streams; replaced by {sorted(_replica_actors() - names)}")
    for _ in range(4):
        answer = client.chat.completions.create(model=CHAT_SAMPLE, messages=QUESTION, max_tokens=8, temperature=0)
        assert answer.choices[0].message.content


# -- without Ray ------------------------------------------------------------------------------

def test_a_model_missing_on_disk_fails_the_health_check(copied_embedding_model: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    models = copied_embedding_model.parent
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(models))
    replica = ModelServer(EMBEDDING_SAMPLE, {"LOCAL_MODELS_DIR": str(models)})
    replica.check_health()
    onnx = sorted((copied_embedding_model / "onnx").resolve().rglob("model*.onnx"))
    assert onnx
    onnx[0].unlink()
    with caplog.at_level(logging.ERROR), pytest.raises(ModelFileError, match="missing on this replica's disk"):
        replica.check_health()
    assert any(onnx[0].name in r.getMessage() and "Health check failed" in r.getMessage() for r in caplog.records)
    replica.catalog.manager.unload_all()


def test_plan_shares_the_cores_between_replicas() -> None:
    one = plan(2, models=1, replicas=1)
    assert (one.num_cpus, one.threads, one.options()["num_replicas"]) == (2.0, 2, 1)
    two = plan(2, models=2, replicas=2)
    assert (two.num_cpus, two.threads) == (0.5, 1)
    scaled = plan(2, models=1, replicas=None, autoscale=(1, 4), target_ongoing_requests=8)
    assert scaled.threads == 1 and scaled.num_cpus == 0.5
    assert scaled.options()["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4,
                                                      "target_ongoing_requests": 8}
    with pytest.raises(ConfigurationError):
        plan(2, models=1, replicas=0)
    with pytest.raises(ConfigurationError):
        plan(2, models=1, autoscale=(3, 2))
