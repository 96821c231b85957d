"""The prompt cache: longest usable prefix, truncation, LRU by bytes; a real 5-turn chat; saved to
disk and read back, by the engine and by a restarted server."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ortmodels.engine import Engine, PromptCache, Request, prompt_cache
from ortmodels.engine.prompt_cache import STALE_PART_S, CacheIdentity
from ortmodels.errors import ConfigurationError
from tests.engine_samples import EOS, chat_prompt, decoder, tokenizer


def _past(length: int, start: int = 0) -> list[np.ndarray]:
    """A fake two-layer cache whose values are the positions, so slices are easy to check."""
    positions = np.arange(start, start + length, dtype=np.float32)
    one = np.broadcast_to(positions[None, None, :, None], (1, 2, length, 4)).copy()
    return [one, one + 1000]


def test_lookup_finds_the_longest_shared_prefix_and_truncates() -> None:
    cache = PromptCache(1 << 20)
    assert cache.lookup([1, 2, 3]) == (0, None)
    cache.store(list(range(10)), _past(10))
    cache.store([0, 1, 50, 51], _past(4, start=500))
    n, past = cache.lookup([0, 1, 2, 3, 4, 99, 98])
    assert n == 5 and past is not None
    assert past[0].shape == (1, 2, 5, 4) and past[0].flags.c_contiguous
    np.testing.assert_array_equal(past[0][0, 0, :, 0], np.arange(5))
    np.testing.assert_array_equal(past[1][0, 1, :, 0], np.arange(5) + 1000)
    assert cache.lookup(list(range(10)))[0] == 8  # two prompt tokens are always left to prefill
    assert cache.lookup(list(range(12)))[0] == 10
    assert cache.lookup([7, 8, 9]) == (0, None)
    assert cache.hits == 3 and cache.misses == 1


def test_cached_length_is_lookups_figure_without_its_effects() -> None:
    """The scheduler asks it of every waiting request: it must not count, reorder or cut."""
    entry = sum(a.nbytes for a in _past(10)) + 10 * 8
    cache = PromptCache(2 * entry)
    assert cache.cached_length([1, 2, 3]) == 0
    cache.store([1] + list(range(100, 109)), _past(10))
    cache.store([2] + list(range(100, 109)), _past(10))
    prompts = ([1, 100, 101, 102], [2] + list(range(100, 109)), [7, 8, 9], [1, 100])
    assert [cache.cached_length(p) for p in prompts] == [2, 8, 0, 0]
    assert cache.hits == cache.misses == 0
    cache.store([3] + list(range(100, 109)), _past(10))  # still least recent: the first entry goes
    assert [cache.cached_length(p) for p in prompts] == [0, 8, 0, 0]
    assert [cache.lookup(p)[0] for p in prompts] == [0, 8, 0, 0]


def test_lru_eviction_by_bytes() -> None:
    entry = sum(a.nbytes for a in _past(10)) + 10 * 8
    cache = PromptCache(2 * entry)
    cache.store([1] + list(range(100, 109)), _past(10))
    cache.store([2] + list(range(100, 109)), _past(10))
    assert cache.lookup([1, 100, 101, 102])[0] == 2  # touch the first: the second is now least recent
    cache.store([3] + list(range(100, 109)), _past(10))
    assert len(cache) == 2 and cache.nbytes <= 2 * entry
    assert cache.lookup([2, 100, 101, 102]) == (0, None)
    assert cache.lookup([1, 100, 101, 102])[0] == 2 and cache.lookup([3, 100, 101, 102])[0] == 2
    cache.store(list(range(1000)), _past(1000))  # larger than the whole cache: not kept
    assert len(cache) == 2


def test_longer_entry_replaces_its_prefix_and_zero_is_off() -> None:
    cache = PromptCache(1 << 20)
    cache.store([5, 6, 7], _past(3))
    cache.store([5, 6, 7, 8, 9], _past(5))
    cache.store([5, 6], _past(2))  # already covered
    assert len(cache) == 1
    off = PromptCache(0)
    off.store([5, 6, 7], _past(3))
    assert len(off) == 0 and off.lookup([5, 6, 7, 8]) == (0, None)
    for bad in (-1, 1.5, "1GB"):
        with pytest.raises(ConfigurationError):
            PromptCache(bad)  # type: ignore[arg-type]


SYSTEM = "You are a friendly assistant who answers briefly and clearly."
TURNS = ("Hi! Who are you?", "What is the capital of France?", "And of Italy?", "Name a river there.",
         "Thanks, bye!")


def _chat(dtype: str, cache_bytes: int) -> tuple[list[list[int]], list[int], Engine]:
    """Five turns, each prompt the whole conversation so far; (answers, cached tokens per turn, engine)."""
    engine = Engine(decoder(dtype), tokenizer(), prompt_cache_bytes=cache_bytes)
    history = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    answers, cached = [], []
    for turn in TURNS:
        history += f"<|im_start|>user\n{turn}<|im_end|>\n<|im_start|>assistant\n"
        request = Request(tokenizer().encode(history, add_special_tokens=False).ids, max_tokens=16,
                          eos_token_ids=EOS)
        text = "".join(getattr(e, "text", "") for e in engine.generate(request))
        answers.append(request.generated)
        cached.append(request.cached_tokens)
        history += f"{text}<|im_end|>\n"
    engine.close()
    return answers, cached, engine


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "int4"])
def test_five_turn_chat_same_tokens_with_the_cache(dtype: str) -> None:
    plain, none_cached, without = _chat(dtype, 0)
    cached_answers, cached, with_cache = _chat(dtype, 64 << 20)
    assert cached_answers == plain
    assert none_cached == [0] * 5
    assert cached[0] == 0 and all(n > 20 for n in cached[1:]), cached
    assert with_cache.prefilled_tokens == without.prefilled_tokens - sum(cached)
    assert with_cache.prompt_cache.hits == 4


@pytest.mark.slow
def test_a_cached_sequence_longer_than_the_shared_prefix_is_cut() -> None:
    engine = Engine(decoder("fp32"), tokenizer(), prompt_cache_bytes=64 << 20)
    first = Request(chat_prompt("Tell me about the history of Rome."), max_tokens=12)
    engine.add_request(first)
    while engine.step():
        pass
    other = chat_prompt("Tell me about the history of Paris and its bridges.")
    shared = next(i for i, (a, b) in enumerate(zip(first.prompt_ids, other)) if a != b)
    second = Request(other, max_tokens=12)
    engine.add_request(second)
    while engine.step():
        pass
    assert second.cached_tokens == shared > 5
    fresh = Engine(decoder("fp32"), tokenizer())
    reference = Request(other, max_tokens=12)
    fresh.add_request(reference)
    while fresh.step():
        pass
    assert second.generated == reference.generated


# -- saved to disk and read back ---------------------------------------------------------------

IDENTITY = CacheIdentity("sample", "20260101T000000Z-abc", "int4", "float32", layers=2, kv_heads=2, head=4)


def _filled() -> PromptCache:
    cache = PromptCache(1 << 20)
    cache.store([1, 2, 3, 4, 5], _past(5))
    cache.store([9, 8, 7], _past(3, start=50))
    return cache


def test_a_saved_cache_reads_back_the_same_entries(tmp_path: Path) -> None:
    path = _filled().save(tmp_path, IDENTITY)
    assert path == tmp_path / IDENTITY.file_name() and path.is_file()
    assert not list(tmp_path.glob("*.part"))  # written atomically
    back = PromptCache(1 << 20)
    assert back.restore(tmp_path, IDENTITY) == 2
    n, past = back.lookup([1, 2, 3, 4, 5, 6, 7])
    assert n == 5 and past is not None
    np.testing.assert_array_equal(past[0][0, 0, :, 0], np.arange(5, dtype=np.float32))
    assert back.lookup([9, 8, 7, 6, 5])[0] == 3
    assert PromptCache(1 << 20).restore(tmp_path / "elsewhere", IDENTITY) == 0  # no file: nothing, quietly
    assert PromptCache(0).save(tmp_path / "empty", IDENTITY) is None  # an empty cache writes nothing


@pytest.mark.parametrize("other", [
    dataclasses.replace(IDENTITY, version="20260202T000000Z-def"),  # another export
    dataclasses.replace(IDENTITY, kv_dtype="float16"),
])
def test_another_exports_or_precisions_file_is_never_read(tmp_path: Path, other: CacheIdentity,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / other.file_name()).write_bytes(_filled().save(tmp_path, IDENTITY).read_bytes())  # renamed
    with caplog.at_level(logging.WARNING):
        assert PromptCache(1 << 20).restore(tmp_path, other) == 0
    assert "Ignoring the saved prompt cache" in caplog.text and "differ" in caplog.text


def test_a_damaged_or_misshapen_file_is_ignored_with_a_log_line(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / IDENTITY.file_name()
    path.write_bytes(b"PK\x03\x04 not really a zip")
    wider = dataclasses.replace(IDENTITY, version="v2", head=8)
    _filled().save(tmp_path, dataclasses.replace(wider, head=4))  # arrays of head 4 ...
    (tmp_path / dataclasses.replace(wider, head=4).file_name()).rename(tmp_path / wider.file_name())
    listed = dataclasses.replace(IDENTITY, version="v3")  # an identity that is JSON, but not a record
    np.savez(tmp_path / listed.file_name(), identity=np.array(json.dumps(["a", "list"])))
    with caplog.at_level(logging.WARNING):
        assert PromptCache(1 << 20).restore(tmp_path, IDENTITY) == 0
        assert PromptCache(1 << 20).restore(tmp_path, wider) == 0  # ... read as head 8: refused
        assert PromptCache(1 << 20).restore(tmp_path, listed) == 0
    assert caplog.text.count("Ignoring the saved prompt cache") == 3


def _gone_pid() -> int:
    """The id of a process that has exited (a save killed with it would have left its ``.part``)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)
    return process.pid


def _killed_saves(folder: Path) -> dict[str, Path]:
    """``.part`` files as saves name them: this host's by a process that is gone (now and in the
    older name without a host), one still running here, and another host's, recent and old."""
    folder.mkdir(parents=True, exist_ok=True)
    name = dataclasses.replace(IDENTITY, model="other").file_name()  # any identity's, not only the one saved
    host, dead = prompt_cache._HOST, _gone_pid()
    parts = {"dead": folder / f"{name}.{host}.{dead}.part", "dead_older_name": folder / f"{name}.{dead}.part",
             "running": folder / f"{name}.{host}.{os.getpid()}.part",
             "elsewhere": folder / f"{name}.build-7.local.{dead}.part",
             "elsewhere_old": folder / f"{IDENTITY.file_name()}.build-7.local.{dead}.part"}
    for part in parts.values():
        part.write_bytes(b"PK\x03\x04 half a zip")
    old = time.time() - STALE_PART_S - 60
    os.utime(parts["elsewhere_old"], (old, old))
    return parts


@pytest.mark.parametrize("when", ["save", "restore"])
def test_a_killed_saves_part_files_are_removed_and_a_running_ones_kept(tmp_path: Path, when: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    parts = _killed_saves(tmp_path)
    with caplog.at_level(logging.INFO):
        if when == "save":
            assert _filled().save(tmp_path, IDENTITY) == tmp_path / IDENTITY.file_name()
        else:
            assert PromptCache(1 << 20).restore(tmp_path, IDENTITY) == 0  # no cache file yet: nothing read
    left = {key for key, part in parts.items() if part.exists()}
    assert left == {"running", "elsewhere"}, left  # a live save here, a recent one of another host
    assert "Removed 3 unfinished prompt cache file(s)" in caplog.text
    assert not [p for p in tmp_path.glob(f"*.{prompt_cache._HOST}.*.part") if str(os.getpid()) not in p.name]


def test_an_empty_prompt_cache_dir_setting_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """``MODEL_PROMPT_CACHE_DIR=`` is unset, never the working directory."""
    from ortmodels.config import load_settings

    monkeypatch.setenv("MODEL_PROMPT_CACHE_DIR", "")
    assert load_settings().model_prompt_cache_dir is None


@pytest.mark.slow
def test_a_restarted_server_answers_from_the_saved_cache(tmp_path: Path) -> None:
    """``MODEL_PROMPT_CACHE_DIR``: a server answers a long prompt, stops (the cache is written at
    shutdown), starts again, and the same prompt's usage reports its tokens cached."""
    openai = pytest.importorskip("openai")
    from .conftest import CHAT_SAMPLE
    from .test_serve import _start, _stop

    saved = tmp_path / "prompt-cache"
    killed = _killed_saves(saved)["dead"]  # a save killed with its server: removed when the model loads
    messages = [{"role": "system", "content": SYSTEM * 8}, {"role": "user", "content": TURNS[1]}]
    usages = []
    for _ in range(2):
        server = _start(tmp_path, "--models", CHAT_SAMPLE, settings={"MODEL_PROMPT_CACHE_DIR": str(saved)})
        try:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
            usages.append(client.chat.completions.create(model=CHAT_SAMPLE, messages=messages, max_tokens=2,
                                                         temperature=0).usage)
            assert not killed.exists(), server.logs()
        finally:
            assert _stop(server) == 0, server.logs()
    first, restarted = usages
    assert first.prompt_tokens > 100 and first.prompt_tokens_details.cached_tokens == 0
    assert restarted.prompt_tokens_details.cached_tokens == first.prompt_tokens - 2  # all but MIN_PREFILL
    # the cache file, and the .part files of saves that may still be running (the test's own; another host's)
    assert sorted(p.suffix for p in saved.iterdir()) == [".npz", ".part", ".part"]
    assert [p.name.endswith(".promptcache.npz") for p in saved.iterdir() if p.suffix == ".npz"] == [True]
