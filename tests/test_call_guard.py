"""The call guard of the bases: async calls during an unload, streams left early, nesting."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any, ClassVar

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from ortmodels import BaseLLMModel, ModelManager
from ortmodels.lifecycle.admission import CallAdmission
from ortmodels.monitoring import stats

from .waiting import DEADLINE_S, async_wait_until, join_all, wait_for_event


class SlowEcho(BaseLLMModel):
    """A user's chat model: echoes the last message, a word per chunk, slowly.

    A call of ``HOLD`` stays in flight until ``release`` is set (``holding`` is set meanwhile).
    """

    holding: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def _load(self) -> None:
        time.sleep(0.05)

    @property
    def _llm_type(self) -> str:
        return "slow-echo"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        time.sleep(0.2)
        text = str(messages[-1].content)
        if text == HOLD:
            type(self).holding.set()
            wait_for_event(type(self).release, what="released (SlowEcho.release)")
        message = AIMessage(text, usage_metadata={"input_tokens": 1, "output_tokens": len(text.split()),
                                                  "total_tokens": 1 + len(text.split())})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for word in str(messages[-1].content).split():
            time.sleep(0.02)
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))


HOLD = "hold this call"


class OnlyGenerate(SlowEcho):
    """No _stream: LangChain's stream() falls back to invoke(), a nested call."""

    _stream = BaseLLMModel._stream  # type: ignore[assignment]


def _admitting() -> int:
    """Threads inside the call guard's admission now (waiting out an unload, or loading)."""
    frames = sys._current_frames().values()
    return sum(any(f.f_code is CallAdmission._begin_call.__code__ for f, _ in traceback.walk_stack(top))
               for top in frames)


def _calls(name: str) -> int:
    return sum(r["calls"] for r in stats.registry().snapshot() if r["model"] == name)


def test_async_calls_do_not_block_the_loop_during_an_unload() -> None:
    model = ModelManager().get_chat_model("echo", SlowEcho)
    SlowEcho.holding.clear()
    SlowEcho.release.clear()
    unloader = threading.Thread(target=model.unload)

    async def run() -> list[str]:
        first = asyncio.create_task(model.ainvoke(HOLD))
        await async_wait_until(SlowEcho.holding.is_set, what="running the first call")
        unloader.start()
        await async_wait_until(lambda: model._draining, what="unloading (waiting for the first call)")
        # new calls wait for the unload, in worker threads: the loop goes on polling meanwhile
        rest = [asyncio.create_task(model.ainvoke(f"call {i}")) for i in range(3)]
        await async_wait_until(lambda: _admitting() >= 3, what="three calls waiting for the unload")
        assert model.is_loaded and not any(task.done() for task in [first, *rest])
        SlowEcho.release.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *rest), timeout=DEADLINE_S)
        return [a.content for a in answers]

    assert asyncio.run(run()) == [HOLD, "call 0", "call 1", "call 2"]
    join_all([unloader])
    assert _calls("echo") == 4 and model.is_loaded  # reloaded for the calls after the unload


def test_a_stream_left_early_ends_its_call_and_later_calls_count() -> None:
    model = ModelManager().get_chat_model("echo", SlowEcho)

    async def run() -> None:
        async for _chunk in model.astream("a b c d e f"):
            break
        for i in range(3):
            await model.ainvoke(f"after {i}")

    asyncio.run(run())
    assert model.active_calls == 0
    assert _calls("echo") == 4
    for _chunk in model.stream("x y z"):
        break
    model.invoke("sync after")
    assert model.active_calls == 0 and _calls("echo") == 6


def test_stream_falling_back_to_invoke_is_one_call() -> None:
    model = ModelManager().get_chat_model("fallback", OnlyGenerate)
    chunks = list(model.stream("hello there"))
    assert "".join(str(c.content) for c in chunks) == "hello there"
    (row,) = [r for r in stats.registry().snapshot() if r["model"] == "fallback"]
    assert row["calls"] == 1 and row["output_tokens"] == 2


def test_two_models_reloading_at_once_under_a_tight_budget(monkeypatch: Any) -> None:
    from .test_model_cache import Ballast

    monkeypatch.setenv("MODEL_MEMORY_BUDGET", "150MB")
    manager = ModelManager()
    manager.configure()
    a = manager.get_embedding_model("a", Ballast)
    b = manager.get_embedding_model("b", Ballast)
    a.unload()
    b.unload()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda m=m: results.append(m.embed_query("abcd"))) for m in (a, b) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads) and results == [[4.0]] * 8
