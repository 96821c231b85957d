"""8 threads for 30 s mixing chat, embeddings, get_*, unload and stats on the real samples.

Chat calls share the engine's batched decode steps and its prompt cache; each answer must
still be the one computed alone (fp32: int4's batched answers equal the solo ones only where
onnxruntime's several-row and one-row 4-bit kernels round alike, see `test_chat_concurrency.py`,
and the batches here depend on the threads' timing). Leaks are checked exactly where they can be: every ONNX
Runtime session opened during the run must be freed once the models are unloaded. Resident
memory is only a coarse bound (the allocator keeps per-thread arenas whose size varies from
run to run by ~150 MB on CI), sized to catch a leak per call, not to measure the allocator.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
import weakref
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
import pytest
from langchain_core.messages import HumanMessage

from ortmodels import ModelManager
from ortmodels.runtime.chat_runtime import ChatRuntime
from ortmodels.runtime.embedding_runtime import EmbeddingRuntime

from .conftest import CHAT_SAMPLE

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("ORTMODELS_STRESS_SECONDS", "30"))
THREADS = 8
QUESTIONS = ["Capital of France?", "Name a fruit.", "What is 2+2?", "Say hello.",
             "Largest ocean?", "Colour of the sky?", "Opposite of hot?", "First letter of the alphabet?"]
MB = 1_000_000
CHAT = f"{CHAT_SAMPLE}:fp32"
RSS_BOUND = 300 * MB  # a 1 MB leak per call (the run makes ~1,000) or one kept session per reload exceeds it


class LoadCounter:
    """Counts, per model, how many instances are loaded at once, and the most ever seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.loads: Counter[str] = Counter()

    def wrap(self, monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
        real_load, real_unload = cls._load, cls._unload

        def _load(model) -> None:  # type: ignore[no-untyped-def]
            real_load(model)
            with self.lock:
                self.now[model.model_name] += 1
                self.loads[model.model_name] += 1
                self.most[model.model_name] = max(self.most[model.model_name], self.now[model.model_name])

        def _unload(model) -> None:  # type: ignore[no-untyped-def]
            with self.lock:
                self.now[model.model_name] -= 1
            real_unload(model)

        monkeypatch.setattr(cls, "_load", _load)
        monkeypatch.setattr(cls, "_unload", _unload)


def test_eight_threads_mixing_everything(samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = ModelManager()
    # References, computed alone: each thread must get exactly these back.
    emb = manager.get_embedding_model()
    texts = [f"Thread {i} asks about {q.lower()}" for i, q in enumerate(QUESTIONS)]
    expected_vectors = np.asarray(emb.embed_documents(texts))
    chat = manager.get_chat_model(CHAT)
    expected_answers = [chat.invoke([HumanMessage(q)], max_tokens=8).content for q in QUESTIONS]
    manager.unload_all()

    counter = LoadCounter()
    counter.wrap(monkeypatch, ChatRuntime)  # what the manager loads (its LangChain faces share it)
    counter.wrap(monkeypatch, EmbeddingRuntime)
    process = psutil.Process()
    sessions: list[weakref.ref[ort.InferenceSession]] = []
    real_init = ort.InferenceSession.__init__

    def tracked_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        real_init(self, *args, **kwargs)
        sessions.append(weakref.ref(self))

    monkeypatch.setattr(ort.InferenceSession, "__init__", tracked_init)
    errors: list[BaseException] = []
    mixed: list[str] = []
    done: Counter[str] = Counter()
    done_lock = threading.Lock()
    deadline = 0.0

    def worker(index: int) -> None:
        rng = random.Random(index)
        try:
            while time.monotonic() < deadline:
                action = rng.choices(["chat", "stream", "embed", "get", "unload", "stats"],
                                     weights=[3, 1, 4, 2, 1, 1])[0]
                if action == "chat":
                    answer = manager.get_chat_model(CHAT).invoke([HumanMessage(QUESTIONS[index])], max_tokens=8)
                    if answer.content != expected_answers[index]:
                        mixed.append(f"thread {index}: {answer.content!r} != {expected_answers[index]!r}")
                elif action == "stream":
                    text = "".join(c.content for c in manager.get_chat_model(CHAT).stream(
                        [HumanMessage(QUESTIONS[index])], max_tokens=8))
                    if text != expected_answers[index]:
                        mixed.append(f"thread {index} stream: {text!r} != {expected_answers[index]!r}")
                elif action == "embed":
                    mine = [texts[index]] * rng.randint(1, 3) + [texts[(index + 1) % THREADS]]
                    vectors = np.asarray(manager.get_embedding_model().embed_documents(mine))
                    want = np.stack([expected_vectors[index]] * (len(mine) - 1) + [expected_vectors[(index + 1) % THREADS]])
                    if not np.allclose(vectors, want, atol=1e-4):
                        mixed.append(f"thread {index}: embeddings differ by {np.abs(vectors - want).max():.2e}")
                elif action == "get":
                    manager.get_embedding_model()
                    manager.get_chat_model(CHAT)
                elif action == "unload":
                    manager.unload(rng.choice(["smollm2-135m-instruct", "all-minilm-l6-v2"]))
                else:
                    manager.stats()
                    manager.loaded()
                with done_lock:
                    done[action] += 1
        except BaseException as exc:  # noqa: BLE001  (reported below, with its thread)
            errors.append(exc)

    def run(seconds: float) -> None:
        nonlocal deadline
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 120)
        assert not any(t.is_alive() for t in threads), "a worker hung"

    # A short warm-up first: the first run of 8 threads grows the allocator's per-thread
    # arenas and onnxruntime's pools once; a leak is what grows after that, with the work.
    run(min(5.0, SECONDS / 4))
    manager.unload_all()
    rss_start = process.memory_info().rss
    run(SECONDS)
    assert not errors, repr(errors[:3])
    assert not mixed, mixed[:5]
    assert all(done[a] > 0 for a in ("chat", "stream", "embed", "get", "unload", "stats")), done
    assert counter.most["smollm2-135m-instruct"] == 1 and counter.most["all-minilm-l6-v2"] == 1
    assert counter.loads["smollm2-135m-instruct"] >= 2, (counter.loads, done)  # unloads happened, and reloads

    rows = {r["model"]: r for r in manager.stats()}
    assert rows["smollm2-135m-instruct"]["errors"] == rows["all-minilm-l6-v2"]["errors"] == 0
    manager.unload_all()
    assert counter.now["smollm2-135m-instruct"] == counter.now["all-minilm-l6-v2"] == 0
    gc.collect()
    alive = sum(ref() is not None for ref in sessions)
    assert sessions and alive == 0, f"{alive} of {len(sessions)} sessions still alive after unload_all"
    rss_end = process.memory_info().rss
    calls = sum(done.values())
    assert rss_end - rss_start < RSS_BOUND, f"RSS {rss_start / MB:.0f} → {rss_end / MB:.0f} MB after {calls} calls"
