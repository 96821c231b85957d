"""stats() agrees with a count kept by the test; Prometheus, the callback handler, ps and stats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from ortmodels import ModelManager
from ortmodels.cli import _register, app
from ortmodels.errors import ChatInputError
from ortmodels.monitoring.callbacks import PerformanceCallbackHandler

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE

pytestmark = pytest.mark.slow


def _cli(*args: str) -> str:
    _register()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _row(rows: list[dict], model: str) -> dict:
    (row,) = [r for r in rows if r["model"] == model]
    return row


@pytest.fixture
def used(samples_dir: Path) -> dict:
    """Use both samples in known ways and keep our own count of what was done."""
    manager = ModelManager()
    count = {"emb_calls": 0, "embedded": 0, "chat_calls": 0, "chat_errors": 0, "in": 0, "out": 0}
    emb = manager.get_embedding_model()
    for batch in (["a"], ["b", "c", "d"], ["e"] * 10):
        emb.embed_documents(batch)
        count["emb_calls"] += 1
        count["embedded"] += len(batch)
    emb.embed_query("f")
    count["emb_calls"] += 1
    count["embedded"] += 1

    chat = manager.get_chat_model()
    for question in ("Capital of France?", "Name a colour."):
        reply = chat.invoke([HumanMessage(question)], max_tokens=6)
        count["in"] += reply.usage_metadata["input_tokens"]
        count["out"] += reply.usage_metadata["output_tokens"]
        count["chat_calls"] += 1
    for chunk in chat.stream("Say hello.", max_tokens=5):
        if chunk.usage_metadata:
            count["in"] += chunk.usage_metadata["input_tokens"]
            count["out"] += chunk.usage_metadata["output_tokens"]
    count["chat_calls"] += 1
    with pytest.raises(ChatInputError):
        chat.invoke("word " * 9000, max_tokens=4)  # longer than the context
    count["chat_calls"] += 1
    count["chat_errors"] += 1
    return count


def test_stats_agree_with_our_count(used: dict) -> None:
    rows = ModelManager().stats()
    emb, chat = _row(rows, EMBEDDING_SAMPLE), _row(rows, CHAT_SAMPLE)
    assert (emb["calls"], emb["embedded"], emb["errors"]) == (used["emb_calls"], used["embedded"], 0)
    assert (chat["calls"], chat["errors"]) == (used["chat_calls"], used["chat_errors"])
    assert (chat["input_tokens"], chat["output_tokens"]) == (used["in"], used["out"])
    assert emb["loads"] == chat["loads"] == 1 and emb["last_load_s"] > 0
    assert emb["embeddings_per_second"] > 0 and chat["tokens_per_second"] > 0
    assert emb["memory_bytes"] > 0 and emb["loaded"] and chat["loaded"]
    latency = chat["latency_s"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert chat["time_to_first_token_s"]["p50"] <= latency["p99"]  # the stream's first token


def test_prometheus_exposition_matches_stats(used: dict) -> None:
    text = ModelManager().prometheus_text()
    samples = {
        (s.name, s.labels.get("model"), s.labels.get("quantile")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("ortmodels_calls_total", CHAT_SAMPLE, None)] == used["chat_calls"]
    assert samples[("ortmodels_errors_total", CHAT_SAMPLE, None)] == used["chat_errors"]
    assert samples[("ortmodels_output_tokens_total", CHAT_SAMPLE, None)] == used["out"]
    assert samples[("ortmodels_embedded_total", EMBEDDING_SAMPLE, None)] == used["embedded"]
    assert samples[("ortmodels_loaded", EMBEDDING_SAMPLE, None)] == 1
    assert ("ortmodels_latency_seconds", CHAT_SAMPLE, "0.95") in samples


def test_ps_and_stats_commands_see_this_process(used: dict) -> None:
    ModelManager()._publisher.publish()
    ps = json.loads(_cli("ps", "--json"))
    (mine,) = [p for p in ps if p["pid"] == os.getpid()]
    assert {m["name"] for m in mine["loaded"]} == {EMBEDDING_SAMPLE, CHAT_SAMPLE}
    assert all(m["memory_bytes"] > 0 and m["version"] for m in mine["loaded"])
    rows = [r for r in json.loads(_cli("stats", "--json")) if r["pid"] == os.getpid()]
    assert _row(rows, CHAT_SAMPLE)["calls"] == used["chat_calls"]
    exposition = _cli("stats", "--prometheus")
    families = {family.name for family in text_string_to_metric_families(exposition)}  # whole lines, parsed
    assert "ortmodels_calls" in families and max(map(len, exposition.splitlines())) > 80
    assert "cancelled" in _cli("stats")  # calls their callers gave up on, apart from errors
    ModelManager().unload_all()
    ps = json.loads(_cli("ps", "--json"))
    assert [p["loaded"] for p in ps if p["pid"] == os.getpid()] in ([], [[]])


def test_callback_handler_traces_each_run(samples_dir: Path) -> None:
    handler = PerformanceCallbackHandler()
    chat = ModelManager().get_chat_model()
    reply = chat.invoke("Capital of France?", max_tokens=6, config={"callbacks": [handler]})
    chunks = list(chat.stream("Say hello.", max_tokens=5, config={"callbacks": [handler]}))
    first, second = handler.traces
    assert first.model == CHAT_SAMPLE and first.error is None
    assert first.output_tokens == reply.usage_metadata["output_tokens"] and first.latency_s > 0
    assert 0 < reply.response_metadata["time_to_first_token_s"] < first.latency_s
    assert 0 < first.time_to_first_token_s < first.latency_s
    streamed = sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata)
    assert second.output_tokens == streamed
    assert 0 < second.time_to_first_token_s <= second.latency_s


def test_a_chat_models_engine_gauges_are_rendered_by_prometheus_client(samples_dir: Path) -> None:
    """The model reports its engine's figures (`engine_gauges`); monitoring renders each field as a
    gauge (``/metrics`` adds these for every chat model it serves)."""
    from ortmodels.engine import EngineGauges
    from ortmodels.monitoring.prometheus import FiguresCollector, exposition

    chat = ModelManager().get_chat_model()
    chat.invoke("Say hi.", max_tokens=2)  # a prompt in the prompt cache, no request running
    gauges = chat.engine_gauges()
    assert isinstance(gauges, EngineGauges)
    assert (gauges.running_requests, gauges.waiting_requests, gauges.kv_cache_bytes) == (0, 0, 0)
    assert gauges.kv_cache_limit_bytes > 0
    engines = FiguresCollector("ortmodels_engine", ["model"], lambda: [({"model": CHAT_SAMPLE}, gauges)],
                               EngineGauges)
    samples = {s.name: s for family in text_string_to_metric_families(exposition(extra=[engines]))
               for s in family.samples if s.name.startswith("ortmodels_engine_")}
    for field in ("running_requests", "waiting_requests", "kv_cache_bytes", "prompt_cache_bytes"):
        sample = samples[f"ortmodels_engine_{field}"]
        assert sample.labels == {"model": CHAT_SAMPLE} and sample.value == getattr(gauges, field)
    assert samples["ortmodels_engine_kv_cache_limit_bytes"].value == gauges.kv_cache_limit_bytes


def test_a_call_within_the_second_is_written_when_the_second_ends(tmp_path: Path) -> None:
    """The state file is written at most once a second after calls; one that came sooner is
    written at the second's end, never dropped (``ortmodels stats`` stayed at 0 calls)."""
    from ortmodels.monitoring.runtime_state import StatePublisher, read_states

    from .waiting import wait_until

    loaded = [{"name": "first"}]
    publisher = StatePublisher(lambda: tmp_path, lambda: list(loaded), every_s=0.5)

    def names() -> list[str]:
        return [m["name"] for s in read_states(tmp_path) if s["pid"] == os.getpid() for m in s["loaded"]]

    publisher.publish()
    assert names() == ["first"]
    loaded[0] = {"name": "after the call"}
    publisher.publish(soon=True)  # within the second: left for its end
    wait_until(lambda: names() == ["after the call"], what="written at the second's end")
    loaded[0] = {"name": "pending at exit"}
    publisher.publish(soon=True)
    publisher.clear()  # the exit's write is the last: the pending one is cancelled
    assert names() == [] and publisher._pending is None
