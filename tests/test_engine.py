"""The engine's contract: events, cancellation, failures of one request, threads, bad settings."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from ortmodels.engine import (
    BannedTokens,
    Engine,
    Finished,
    Request,
    SamplingParams,
    TextDelta,
)
from ortmodels.errors import ConfigurationError, EngineClosedError, RequestTooLargeError
from tests.engine_samples import (
    EOS,
    QUESTIONS,
    chat_prompt,
    decoder,
    solo_greedy,
    tokenizer,
)
from tests.waiting import DEADLINE_S, async_wait_until, engine_held, join_all, wait_for_event, wait_until


def test_engine_imports_no_langchain_and_no_store() -> None:
    code = (
        "import json, sys\nimport ortmodels.engine\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'langchain_core' or m in "
        "('ortmodels.store', 'ortmodels.base', 'ortmodels.manager', 'ortmodels.manifest', 'ortmodels.versions', "
        "'ortmodels.runtime', 'pydantic', 'torch', 'transformers'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_request_checks_its_arguments() -> None:
    with pytest.raises(ConfigurationError):
        Request([], max_tokens=4)
    with pytest.raises(ConfigurationError):
        Request([1, 2], max_tokens=0)


class _Failing:
    """A logits processor that raises after a few tokens."""

    def __init__(self, after: int) -> None:
        self.left = after

    def mask(self, logits: np.ndarray) -> None:
        if self.left == 0:
            raise ValueError("grammar broke")

    def accept(self, token_id: int) -> None:
        self.left -= 1


@pytest.mark.slow
class TestOnTheSample:
    def test_bad_settings_are_configuration_errors(self) -> None:
        for kwargs in ({"max_batch": 0}, {"kv_cache_bytes": -1}, {"prompt_cache_bytes": -5},
                       {"prefill_chunk": 0}, {"prefill_chunk": 1}, {"max_batch": 2.5}, {"kv_layout": "paged"}, {"context_length": 1},
                       {"admission": "lpm"}):
            with pytest.raises(ConfigurationError):
                Engine(decoder("int4"), tokenizer(), **kwargs)  # type: ignore[arg-type]

    def test_too_large_request_is_refused_at_once(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), kv_cache_bytes=1 << 20, context_length=64)
        with pytest.raises(RequestTooLargeError):
            engine.add_request(Request(chat_prompt(QUESTIONS[0]), max_tokens=4000))
        with pytest.raises(RequestTooLargeError):
            engine.add_request(Request(list(range(100, 170)), max_tokens=1))

    def test_context_length_ends_with_length(self) -> None:
        prompt = chat_prompt(QUESTIONS[0])
        engine = Engine(decoder("int4"), tokenizer(), context_length=len(prompt) + 3)
        request = Request(prompt, max_tokens=50)
        engine.add_request(request)
        while engine.step():
            pass
        assert request.finish_reason == "length" and len(request.generated) == 3

    def test_events_text_usage_and_eos(self) -> None:
        engine = Engine(decoder("int4"), tokenizer())
        request = Request(chat_prompt(QUESTIONS[0]), max_tokens=40, eos_token_ids=EOS)
        events = list(engine.generate(request))
        engine.close()
        deltas = [e for e in events if isinstance(e, TextDelta)]
        finished = events[-1]
        assert isinstance(finished, Finished) and finished.reason == "stop"
        text = "".join(d.text for d in deltas)
        assert "Paris" in text
        assert text == tokenizer().decode(request.generated, skip_special_tokens=True)
        assert finished.completion_tokens == len(request.generated) - 1  # the end token is not output
        assert finished.prompt_tokens == len(request.prompt_ids)
        assert finished.time_to_first_token_s is not None and finished.time_to_first_token_s > 0

    def test_stop_string_ends_the_request(self) -> None:
        engine = Engine(decoder("int4"), tokenizer())
        request = Request(chat_prompt(QUESTIONS[0]), max_tokens=40, stop=("France",), eos_token_ids=EOS)
        text = "".join(e.text for e in engine.generate(request) if isinstance(e, TextDelta))
        engine.close()
        assert request.finish_reason == "stop" and "France" not in text and text.startswith("The capital of")

    def test_cancel_mid_generation_frees_the_slot(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), max_batch=2, admission="arrival")
        prompts = [chat_prompt(q) for q in QUESTIONS[:3]]
        first, second, third = (Request(p, max_tokens=10) for p in prompts)
        for request in (first, second, third):
            engine.add_request(request)
        for _ in range(3):
            engine.step()
        assert engine.active == [first, second] and engine.waiting == 1
        second.cancel()
        engine.step()
        assert second.finish_reason == "cancelled" and second not in engine.active
        assert third in engine.active  # took the freed row in the same step
        events = list(second.events())
        assert isinstance(events[-1], Finished) and events[-1].reason == "cancelled"
        while engine.step():
            pass
        assert first.generated == solo_greedy("int4", prompts[0], 10)
        assert third.generated == solo_greedy("int4", prompts[2], 10)

    def test_remove_request_and_cancel_while_waiting(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), max_batch=1)
        running, waiting = Request(chat_prompt(QUESTIONS[0]), max_tokens=8), Request(chat_prompt(QUESTIONS[1]))
        engine.add_request(running)
        engine.add_request(waiting)
        engine.step()
        waiting.cancel()
        engine.remove_request(running)
        assert running.finish_reason == waiting.finish_reason == "cancelled"
        assert not engine.has_work()

    def test_processor_error_fails_only_its_request(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), max_batch=4)
        prompts = [chat_prompt(q) for q in QUESTIONS[:3]]
        good_a = Request(prompts[0], max_tokens=8)
        bad = Request(prompts[1], max_tokens=8, processor=_Failing(after=3))
        good_b = Request(prompts[2], max_tokens=8)
        for request in (good_a, bad, good_b):
            engine.add_request(request)
        while engine.step():
            pass
        assert bad.finish_reason == "error" and isinstance(bad.error, ValueError) and len(bad.generated) == 3
        assert good_a.generated == solo_greedy("int4", prompts[0], 8)
        assert good_b.generated == solo_greedy("int4", prompts[2], 8)
        finished = list(bad.events())[-1]
        assert isinstance(finished, Finished) and finished.error is bad.error

    def test_generate_raises_the_request_error(self) -> None:
        engine = Engine(decoder("int4"), tokenizer())
        with pytest.raises(ValueError, match="grammar broke"):
            list(engine.generate(Request(chat_prompt(QUESTIONS[0]), max_tokens=8, processor=_Failing(after=0))))
        engine.close()

    def test_banned_token_processor_changes_the_choice(self) -> None:
        prompt = chat_prompt(QUESTIONS[0])
        greedy = solo_greedy("int4", prompt, 1)[0]
        engine = Engine(decoder("int4"), tokenizer())
        request = Request(prompt, max_tokens=3, processor=BannedTokens((greedy,)))
        engine.add_request(request)
        while engine.step():
            pass
        assert request.generated[0] != greedy and greedy not in request.generated

    def test_sync_streams_from_threads_run_concurrently(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), max_batch=4)
        prompts = [chat_prompt(q) for q in QUESTIONS[:4]]
        results: dict[int, list[int]] = {}

        def consume(index: int) -> None:
            request = Request(prompts[index], max_tokens=8)
            results[index] = [t for e in engine.generate(request) if isinstance(e, TextDelta) for t in e.token_ids]

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(4)]
        with engine_held(engine):  # the four requests all wait for the first step, whatever the threads' timing
            for thread in threads:
                thread.start()
            wait_until(lambda: engine.waiting == 4, what="four requests queued")
        join_all(threads)
        engine.close()
        assert [results[i] for i in range(4)] == [solo_greedy("int4", p, 8) for p in prompts]
        assert engine.decoded_tokens > engine.steps  # steps held several rows
        assert engine.steps < 4 * 8

    def test_async_stream_and_cancel_on_consumer_cancel(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), max_batch=4)
        prompt = chat_prompt(QUESTIONS[1])

        async def main() -> tuple[str, Request]:
            done = Request(chat_prompt(QUESTIONS[0]), max_tokens=12, eos_token_ids=EOS)
            text = "".join([e.text async for e in engine.agenerate(done) if isinstance(e, TextDelta)])
            slow = Request(prompt, max_tokens=200)

            async def consume() -> None:
                async for _ in engine.agenerate(slow):
                    await asyncio.sleep(0)

            task = asyncio.create_task(consume())
            await async_wait_until(lambda: len(slow.generated) >= 3, what="generating")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return text, slow

        text, slow = asyncio.run(main())
        assert "Paris" in text
        wait_until(lambda: slow.finished, what="finished after its consumer was cancelled")
        assert slow.finish_reason == "cancelled" and len(slow.generated) < 200
        engine.close()

    def test_close_cancels_everything_and_refuses_more(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), max_batch=1)
        requests = [Request(chat_prompt(q), max_tokens=500) for q in QUESTIONS[:3]]
        for request in requests:
            engine.add_request(request)
        engine.start()
        wait_until(lambda: requests[0].generated, what="generating")
        engine.close()
        assert [r.finish_reason for r in requests] == ["cancelled"] * 3
        assert engine._thread is not None and not engine._thread.is_alive()
        with pytest.raises(EngineClosedError):
            engine.add_request(Request([1, 2, 3]))

    def test_close_with_a_timeout_leaves_a_stuck_step_running(self, caplog: pytest.LogCaptureFixture) -> None:
        """What the exit hook does: a step that does not end (a logits processor waiting
        forever) cannot hold the process; once the step ends, the thread cancels the request."""
        import time

        release, entered = threading.Event(), threading.Event()

        class Stuck:
            def mask(self, logits: np.ndarray) -> None:
                entered.set()
                release.wait(DEADLINE_S * 4)  # bounded: a test that fails first must not leave it stuck

            def accept(self, token_id: int) -> None:
                pass

        engine = Engine(decoder("int4"), tokenizer(), max_batch=1)
        request = Request(chat_prompt(QUESTIONS[0]), max_tokens=50, processor=Stuck())  # type: ignore[arg-type]
        engine.add_request(request)
        engine.start()
        wait_for_event(entered, what="inside the stuck step")
        began = time.perf_counter()
        engine.close(timeout=0.2)
        assert time.perf_counter() - began < 5
        assert "did not end within" in caplog.text and not request.finished
        release.set()
        engine._thread.join(30)  # type: ignore[union-attr]
        # The step ends; the closed engine takes no further one and cancels what is left.
        assert request.finished and request.finish_reason == "cancelled", request.finish_reason
        assert not engine._thread.is_alive()  # type: ignore[union-attr]

    def test_parity_greedy_runs_on_the_engine(self) -> None:
        from ortmodels.export.decoder.parity import greedy_tokens

        prompt = chat_prompt(QUESTIONS[3])
        assert greedy_tokens(decoder("int4"), prompt, 10) == solo_greedy("int4", prompt, 10)
        engine = Engine(decoder("int4"))
        np.testing.assert_array_equal(engine.all_logits(prompt[:5]), decoder("int4").all_logits(prompt[:5]))

    def test_the_shortest_prefill_left_goes_first(self) -> None:
        long_prompt = chat_prompt(QUESTIONS[1], system="You are a careful historian. " * 12)
        short_prompt = chat_prompt(QUESTIONS[0])
        for admission, first in (("shortest-first", "short"), ("arrival", "long")):
            engine = Engine(decoder("int4"), tokenizer(), max_batch=4, admission=admission)
            requests = {"long": Request(long_prompt, max_tokens=8), "short": Request(short_prompt, max_tokens=8)}
            for request in requests.values():  # the long one first
                engine.add_request(request)
            engine.step()  # both fit one step's prefill budget: the rows show the order they went in
            assert engine.active[0] is requests[first], admission
            assert requests["long"].passed_over == (admission == "shortest-first")
            engine.close()

    def test_a_mostly_cached_turn_goes_before_a_shorter_new_prompt(self) -> None:
        """What counts is the prefill left once the cached prefix is taken off: a conversation's
        next turn, longer in all, goes before a new question it would otherwise wait behind."""
        engine = Engine(decoder("int4"), tokenizer(), max_batch=1, prompt_cache_bytes=64 << 20)
        turn = chat_prompt(QUESTIONS[1], system="You are a careful historian. " * 12)
        engine.add_request(earlier := Request(turn, max_tokens=2))
        while engine.step():
            pass
        new, follow_up = (Request(p, max_tokens=2) for p in (
            chat_prompt(QUESTIONS[0]), [*earlier.prompt_ids, *earlier.generated[:1], *turn[-6:]]))
        assert len(follow_up.prompt_ids) > 2 * len(new.prompt_ids)
        for request in (new, follow_up):  # the new question first
            engine.add_request(request)
        while engine.step():
            pass
        assert (follow_up.first_token_at or 0) < (new.first_token_at or 0)
        assert follow_up.cached_tokens >= len(turn) - 2

    def test_a_long_prompt_waits_behind_a_bounded_number_of_later_ones(self) -> None:
        from ortmodels.engine.engine import PASSED_OVER

        engine = Engine(decoder("int4"), tokenizer(), max_batch=1)
        long_request = Request(chat_prompt(QUESTIONS[1], system="You are a careful historian. " * 8), max_tokens=1)
        shorts = [Request(chat_prompt(QUESTIONS[0]), max_tokens=1) for _ in range(PASSED_OVER + 2)]
        for request in (long_request, *shorts):
            engine.add_request(request)
        while engine.step():
            pass
        started = sorted((long_request, *shorts), key=lambda r: r.first_token_at or 0)
        assert started.index(long_request) == PASSED_OVER  # after 8 later ones, before the rest

    def test_a_short_prompt_begins_beside_a_long_prefill_under_way(self) -> None:
        """The long prompt is set aside with its cache so far, resumed after, and answers as alone."""
        long_prompt = chat_prompt(QUESTIONS[1], system="You are a careful historian. " * 6)
        engine = Engine(decoder("fp32"), tokenizer(), prefill_chunk=16, max_batch=2)
        long_request, short = Request(long_prompt, max_tokens=6), Request(chat_prompt(QUESTIONS[0]), max_tokens=6)
        engine.add_request(long_request)
        engine.step()
        engine.step()  # two chunks of the long prompt done
        assert engine.waiting == 1 and not engine.active
        engine.add_request(short)
        while engine.step():
            pass
        assert (short.first_token_at or 0) < (long_request.first_token_at or 0)
        assert long_request.passed_over == 1
        assert long_request.generated == solo_greedy("fp32", long_prompt, 6)
        assert short.generated == solo_greedy("fp32", short.prompt_ids, 6)

    def test_a_set_aside_prefill_can_be_cancelled(self) -> None:
        engine = Engine(decoder("int4"), tokenizer(), prefill_chunk=16, max_batch=2)
        long_request = Request(chat_prompt(QUESTIONS[1], system="You are a careful historian. " * 6), max_tokens=4)
        short = Request(chat_prompt(QUESTIONS[0]), max_tokens=40)
        engine.add_request(long_request)
        engine.step()
        engine.add_request(short)
        engine.step()  # the short one went first; the long one waits with its cache so far
        assert long_request.passed_over == 1 and long_request.finish_reason is None and engine.waiting >= 1
        long_request.cancel()
        engine.step()
        assert long_request.finish_reason == "cancelled" and long_request not in engine.active
        while engine.step():
            pass
        assert short.finish_reason in ("stop", "length") and not engine.has_work()

    def test_chunked_prefill_gives_the_same_tokens(self) -> None:
        prompt = chat_prompt(QUESTIONS[1], system="You are a careful historian. " * 4)
        engine = Engine(decoder("fp32"), tokenizer(), prefill_chunk=16)
        request = Request(prompt, max_tokens=8)
        engine.add_request(request)
        while engine.step():
            pass
        assert engine.steps > len(prompt) // 16
        assert request.generated == solo_greedy("fp32", prompt, 8)


def test_prompts_are_never_prefilled_one_token_at_a_time() -> None:
    """A one-token chunk takes the one-row kernels and changes int4 keys and values (0.57 in
    the logits): it once changed the 5th answer of a cached conversation."""
    from ortmodels.engine.engine import chunk_size

    assert [chunk_size(r, b) for r, b in [(1, 512), (2, 512), (513, 512), (600, 512), (3, 1), (2, 1)]] == [
        1, 2, 513, 512, 0, 2]
    prompt = chat_prompt(QUESTIONS[1], system="You are a careful historian. " * 4)
    chunk = (len(prompt) - 1) // 2  # two full chunks would leave exactly one token
    engine = Engine(decoder("int4"), tokenizer(), prefill_chunk=chunk)
    sizes: list[int] = []
    real_prefill = engine.decoder.prefill

    def recording(ids: list[int], past: object = None, length: object = None) -> object:
        sizes.append(len(ids))
        return real_prefill(ids, past, length)

    engine.decoder = type("Recorder", (), {"__getattr__": lambda self, n: getattr(real_prefill.__self__, n),
                                            "prefill": staticmethod(recording)})()
    request = Request(prompt, max_tokens=6)
    engine.add_request(request)
    while engine.step():
        pass
    assert min(sizes) >= 2 and sum(sizes) == len(prompt)
    assert request.generated == solo_greedy("int4", prompt, 6)


def test_sampling_params_keep_their_defaults() -> None:
    assert SamplingParams().greedy
