"""Token choice and text assembly, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from ortmodels.engine.detokenizer import TextAssembler
from ortmodels.engine.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    choose_token,
)

# A toy byte-level vocabulary: each token is some bytes, so a character can span tokens.
VOCAB = {1: b"Hel", 2: b"lo", 3: b" wor", 4: b"ld", 5: "é".encode()[:1], 6: "é".encode()[1:], 7: b"!", 8: b" END", 9: b"OF"}


def decode(ids: list[int]) -> str:
    return b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace")


def run(ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], TextAssembler]:
    assembler = TextAssembler(decode, stop)
    pieces = []
    for i in ids:
        pieces.append(assembler.add(i))
        if assembler.stopped:
            break
    pieces.append(assembler.flush())
    return [p for p in pieces if p], assembler


def test_pieces_join_to_the_full_text() -> None:
    pieces, _ = run([1, 2, 3, 4, 7])
    assert "".join(pieces) == "Hello world!"
    assert pieces[0] == "Hel"


def test_never_half_a_character() -> None:
    pieces, _ = run([1, 5, 6, 7])
    assert pieces == ["Hel", "é", "!"]
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_spanning_tokens_is_cut_and_never_shown() -> None:
    pieces, assembler = run([1, 2, 8, 9, 7], stop=("ENDOF",))
    assert "".join(pieces) == "Hello "
    assert assembler.stopped


def test_possible_stop_prefix_is_held_back_then_released() -> None:
    pieces, assembler = run([1, 2, 8, 7], stop=("ENDOF",))
    assert not assembler.stopped
    assert "".join(pieces) == "Hello END!"
    assert " END" not in pieces  # held until "!" showed it was not the stop string


def test_stop_at_the_very_start() -> None:
    pieces, assembler = run([1, 2], stop=("Hel",))
    assert pieces == [] and assembler.stopped


def test_greedy_is_argmax() -> None:
    logits = np.array([0.1, 3.0, 2.0], dtype=np.float32)
    assert choose_token(logits, SamplingParams(), np.array([], dtype=np.int64), np.random.default_rng(0)) == 1


def test_greedy_needs_no_random_generator() -> None:
    """A greedy request never makes one (`Request.rng` is made at the first sampled token, so
    a greedy answer never imports numpy.random); sampling without one is refused by name."""
    from ortmodels.engine.request import Request

    logits = np.array([0.1, 3.0, 2.0], dtype=np.float32)
    none = np.array([], dtype=np.int64)
    assert choose_token(logits, SamplingParams(), none, None) == 1
    with pytest.raises(ValueError, match="random generator"):
        choose_token(logits, SamplingParams(temperature=1.0), none, None)
    sampled = Request([1, 2], SamplingParams(temperature=1.0, seed=7), max_tokens=4)
    assert "rng" not in vars(sampled)
    seeded = np.random.default_rng(7)  # what the request made at init before: the same draws
    assert [choose_token(logits, sampled.params, none, sampled.rng) for _ in range(8)] == \
        [choose_token(logits, sampled.params, none, seeded) for _ in range(8)]


def test_sampling_is_repeatable_with_a_seed() -> None:
    logits = np.random.default_rng(1).normal(size=1000).astype(np.float32)
    params = SamplingParams(temperature=1.0, seed=7)
    none = np.array([], dtype=np.int64)
    a = [choose_token(logits, params, none, np.random.default_rng(7)) for _ in range(5)]
    b = [choose_token(logits, params, none, np.random.default_rng(7)) for _ in range(5)]
    assert a == b
    draws = {choose_token(logits, params, none, rng) for rng in [np.random.default_rng(s) for s in range(20)]}
    assert len(draws) > 3  # it does sample


def test_top_k_and_top_p_restrict_the_choice() -> None:
    logits = np.array([5.0, 4.9, 0.0, -1.0, -2.0], dtype=np.float32)
    none = np.array([], dtype=np.int64)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        assert choose_token(logits, SamplingParams(temperature=2.0, top_k=2), none, rng) in (0, 1)
        assert choose_token(logits, SamplingParams(temperature=1.0, top_p=0.5), none, rng) in (0, 1)


def test_repetition_penalty_as_transformers() -> None:
    logits = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    out = apply_repetition_penalty(logits, np.array([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]
    assert logits.tolist() == [2.0, -2.0, 1.0]  # the caller's array is untouched
    assert choose_token(np.array([2.0, 1.9]), SamplingParams(repetition_penalty=2.0), np.array([0]),
                        np.random.default_rng(0)) == 1


def test_zero_temperature_is_greedy() -> None:
    assert SamplingParams(temperature=0.0).greedy and not SamplingParams(temperature=0.7).greedy


def test_stop_string_before_a_half_character_at_the_end_is_cut() -> None:
    assembler = TextAssembler(decode, ("ENDOF",))
    for token in (1, 2, 8, 9, 5):  # "Hello ENDOF" + half of "é": the last add() waits
        assembler.add(token)
    assert assembler.flush() == "" and assembler.released == "Hello "


def test_logits_processor_hook_with_a_trivial_processor() -> None:
    from ortmodels.engine.sampling import BannedTokens, LogitsProcessor

    banned = BannedTokens((1,))
    assert isinstance(banned, LogitsProcessor)
    logits = np.array([0.1, 3.0, 2.0], dtype=np.float32)
    banned.mask(logits)
    assert logits[1] == -np.inf
    assert choose_token(logits, SamplingParams(), np.array([], dtype=np.int64), np.random.default_rng(0)) == 2


def test_token_logprobs_are_a_log_softmax_with_the_likeliest_alternatives() -> None:
    from ortmodels.engine.sampling import token_logprob

    logits = np.array([1.0, 3.0, 2.0, -np.inf], dtype=np.float32)  # the last one banned by a grammar
    result = token_logprob(logits, 2, top=3)
    log_probs = logits.astype(np.float64) - np.log(np.exp(logits[:3].astype(np.float64)).sum())
    assert result.token_id == 2 and abs(result.logprob - log_probs[2]) < 1e-9
    assert [t for t, _ in result.top] == [1, 2, 0]
    assert abs(sum(np.exp(v) for _, v in result.top) - 1.0) < 1e-9
    assert token_logprob(logits, 1, top=0).top == ()
