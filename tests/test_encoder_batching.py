"""Concurrent embedding calls share batches, and each caller gets exactly its own vectors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ortmodels import ModelManager
from ortmodels.engine.encoder_batching import CoalescingBatcher
from ortmodels.runtime.embeddings import OnnxEmbeddingModel

from .conftest import EMBEDDING_SAMPLE
from .waiting import join_all, wait_until


def _lengths(texts: list[str]) -> np.ndarray:
    if any(t == "boom" for t in texts):
        raise ValueError("boom")
    return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)


def _queued(batcher: CoalescingBatcher) -> int:
    with batcher._cond:
        return len(batcher._pending)


def _first_call_waits_for(callers: int) -> tuple[CoalescingBatcher, list[list[str]]]:
    """A batcher whose first call runs only once the other ``callers - 1`` callers queue behind it,
    whatever the threads' timing; returns it and the texts each call got."""
    seen: list[list[str]] = []

    def run(texts: list[str]) -> np.ndarray:
        if not seen:
            wait_until(lambda: _queued(batcher) == callers - 1, what=f"{callers - 1} callers queued")
        seen.append(texts)
        return _lengths(texts)

    batcher = CoalescingBatcher(run)
    return batcher, seen


def _run_threads(batcher: CoalescingBatcher, inputs: list[list[str]]) -> list[object]:
    results: list[object] = [None] * len(inputs)

    def call(index: int) -> None:
        try:
            results[index] = batcher(inputs[index])
        except ValueError as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    join_all(threads)
    return results


def test_callers_that_arrive_together_share_calls_and_get_their_own_rows() -> None:
    inputs = [["x" * (i + 1)] * (1 + i % 3) for i in range(16)]
    batcher, seen = _first_call_waits_for(len(inputs))
    results = _run_threads(batcher, inputs)
    for texts, rows in zip(inputs, results):
        assert isinstance(rows, np.ndarray)
        assert rows[:, 0].tolist() == [len(t) for t in texts]
    assert batcher.calls == 2  # the first caller alone, then the fifteen that queued behind it in one call
    assert len(seen) == 2 and len(seen[0]) + len(seen[1]) == sum(map(len, inputs))


def test_one_callers_failure_does_not_fail_the_others() -> None:
    inputs = [["a"], ["boom"], ["ccc"], ["dd"]] * 3
    batcher, seen = _first_call_waits_for(len(inputs))
    results = _run_threads(batcher, inputs)
    assert len(seen[1]) > 1 and "boom" in seen[1]  # a failing text shared a call with others (one of three)
    for texts, outcome in zip(inputs, results):
        if texts == ["boom"]:
            assert isinstance(outcome, ValueError)
        else:
            assert isinstance(outcome, np.ndarray) and outcome[0, 0] == len(texts[0])


def test_a_lone_caller_runs_at_once() -> None:
    batcher = CoalescingBatcher(_lengths)
    assert batcher(["abc", "de"])[:, 0].tolist() == [3, 2]
    assert batcher.calls == 1


@pytest.mark.slow
def test_32_threads_embedding_queries_get_the_vectors_computed_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ModelManager().get_embedding_model(EMBEDDING_SAMPLE)
    assert isinstance(model, OnnxEmbeddingModel)
    texts = [f"Question {i}: how do I set option {i % 7} of tool {i % 11} in a long-running job?"
             for i in range(256)]
    alone = {t: np.array(model.embed_query(t)) for t in texts}
    before = model.runtime._batcher.calls  # type: ignore[union-attr]
    got: dict[str, np.ndarray] = {}

    def work(chunk: list[str]) -> None:
        for text in chunk:
            got[text] = np.array(model.embed_query(text))

    batcher = model.runtime._batcher  # type: ignore[union-attr]
    run, held = batcher._run, []

    def first_call_waits(batch: list[str]) -> np.ndarray:  # the other 31 threads queue behind it
        if not held:
            held.append(batch)
            wait_until(lambda: _queued(batcher) == 31, what="31 callers queued")
        return run(batch)

    monkeypatch.setattr(batcher, "_run", first_call_waits)
    threads = [threading.Thread(target=work, args=(texts[i::32],)) for i in range(32)]
    for thread in threads:
        thread.start()
    join_all(threads)
    assert set(got) == set(texts)
    for text in texts:
        np.testing.assert_allclose(got[text], alone[text], rtol=0, atol=1e-6)
    assert model.runtime._batcher.calls - before < len(texts)  # type: ignore[union-attr]  # coalesced
