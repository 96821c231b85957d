"""Concurrent embedding calls share batches, and each caller gets exactly its own vectors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ortmodels import ModelManager
from ortmodels.engine.encoder_batching import CoalescingBatcher
from ortmodels.runtime.embeddings import OnnxEmbeddingModel

from .conftest import EMBEDDING_SAMPLE


def _lengths(texts: list[str]) -> np.ndarray:
    time.sleep(0.02)  # long enough for the other threads to queue behind the running call
    if any(t == "boom" for t in texts):
        raise ValueError("boom")
    return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)


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
    for thread in threads:
        thread.join()
    return results


def test_callers_that_arrive_together_share_calls_and_get_their_own_rows() -> None:
    batcher = CoalescingBatcher(_lengths)
    inputs = [["x" * (i + 1)] * (1 + i % 3) for i in range(16)]
    results = _run_threads(batcher, inputs)
    for texts, rows in zip(inputs, results):
        assert isinstance(rows, np.ndarray)
        assert rows[:, 0].tolist() == [len(t) for t in texts]
    assert batcher.calls < len(inputs)


def test_one_callers_failure_does_not_fail_the_others() -> None:
    batcher = CoalescingBatcher(_lengths)
    inputs = [["a"], ["boom"], ["ccc"], ["dd"]] * 3
    results = _run_threads(batcher, inputs)
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
def test_32_threads_embedding_queries_get_the_vectors_computed_alone() -> None:
    model = ModelManager().get_embedding_model(EMBEDDING_SAMPLE)
    assert isinstance(model, OnnxEmbeddingModel)
    texts = [f"Question {i}: how do I set option {i % 7} of tool {i % 11} in a long-running job?"
             for i in range(256)]
    alone = {t: np.array(model.embed_query(t)) for t in texts}
    before = model._batcher.calls  # type: ignore[union-attr]
    got: dict[str, np.ndarray] = {}

    def work(chunk: list[str]) -> None:
        for text in chunk:
            got[text] = np.array(model.embed_query(text))

    threads = [threading.Thread(target=work, args=(texts[i::32],)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(got) == set(texts)
    for text in texts:
        np.testing.assert_allclose(got[text], alone[text], rtol=0, atol=1e-6)
    assert model._batcher.calls - before < len(texts)  # type: ignore[union-attr]  # coalesced
