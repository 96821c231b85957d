"""The prompt cache: longest usable prefix, truncation, LRU by bytes; and a real 5-turn chat."""

from __future__ import annotations

import numpy as np
import pytest

from ortmodels.engine import Engine, PromptCache, Request
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
