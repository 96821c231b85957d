"""Sampling at the edges of what the options accept: any finite temperature and penalty picks a
token, never NaN (a tiny temperature or penalty used to overflow the logits to inf, and
inf - inf is NaN: ``ValueError: Probabilities contain NaN``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ortmodels.engine.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    choose_token,
)
from ortmodels.runtime.chat import OnnxChatModel

from .conftest import CHAT_SAMPLE, SAMPLES_DIR

NONE = np.array([], dtype=np.int64)
TINY = [1e-38, 1e-300, 5e-324]  # 5e-324: the smallest float64, 0 in float32


def _logits(size: int = 1000, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=size) * 8).astype(np.float32)


@pytest.mark.parametrize("temperature", TINY)
def test_a_tiny_temperature_chooses_the_best_token(temperature: float) -> None:
    logits = _logits()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warning either
        chosen = {choose_token(logits, SamplingParams(temperature=temperature, top_k=40, top_p=0.9), NONE,
                               np.random.default_rng(seed)) for seed in range(10)}
    assert chosen == {int(np.argmax(logits))}


def test_a_tiny_temperature_shares_the_draw_among_tied_best_tokens() -> None:
    logits = np.array([3.0, 7.5, -1.0, 7.5, -np.inf], dtype=np.float32)
    draws = {choose_token(logits, SamplingParams(temperature=5e-324), NONE, np.random.default_rng(seed))
             for seed in range(40)}
    assert draws == {1, 3}


def test_a_huge_temperature_samples_every_allowed_token_but_never_a_banned_one() -> None:
    logits = np.array([1e30, -1e30, 0.0, -np.inf], dtype=np.float32)
    draws = {choose_token(logits, SamplingParams(temperature=1e308), NONE, np.random.default_rng(seed))
             for seed in range(60)}
    assert draws == {0, 1, 2}


@pytest.mark.parametrize("penalty", [1e-300, 5e-324])
def test_a_tiny_repetition_penalty_favours_the_seen_tokens_without_overflow(penalty: float) -> None:
    logits = np.array([2.0, 1.0, 5.0, -3.0, -np.inf], dtype=np.float32)
    seen = np.array([0, 1, 3, 4])
    out = apply_repetition_penalty(logits, seen, penalty)
    assert np.isfinite(out[:4]).all() and out[4] == -np.inf  # a banned token stays banned
    assert out[0] > out[2] and out[1] > out[2]  # seen positives now beat the unseen best
    for params in (SamplingParams(repetition_penalty=penalty),
                   SamplingParams(temperature=0.7, repetition_penalty=penalty, top_k=3, top_p=0.95)):
        chosen = {choose_token(logits, params, seen, np.random.default_rng(seed)) for seed in range(20)}
        assert chosen <= {0, 1}


def test_a_huge_repetition_penalty_keeps_seen_tokens_finite_and_choosable() -> None:
    logits = np.array([-3e38, -2e38, -np.inf], dtype=np.float32)  # every allowed token seen and negative
    seen = np.array([0, 1, 2])
    out = apply_repetition_penalty(logits, seen, 1e308)
    assert np.isfinite(out[:2]).all() and out[2] == -np.inf
    chosen = {choose_token(logits, SamplingParams(temperature=1.0, repetition_penalty=1e308), seen,
                           np.random.default_rng(seed)) for seed in range(20)}
    assert chosen <= {0, 1}


def test_ordinary_sampling_is_unchanged_in_distribution() -> None:
    """The shifted float64 softmax draws as the plain one would: frequencies match the probabilities."""
    logits = np.array([2.0, 1.0, 0.0, -1.0], dtype=np.float32)
    expected = np.exp(logits / 0.8) / np.exp(logits / 0.8).sum()
    rng = np.random.default_rng(0)
    counts = np.bincount([choose_token(logits, SamplingParams(temperature=0.8), NONE, rng) for _ in range(4000)],
                         minlength=4)
    assert np.allclose(counts / 4000, expected, atol=0.03)


# -- on the real sample ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat() -> OnnxChatModel:
    return OnnxChatModel(model_path=SAMPLES_DIR / CHAT_SAMPLE, dtype="int8", device="cpu", max_tokens=8).load()


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1e-38, 5e-324])
def test_a_tiny_temperature_answers_as_greedy_does(chat: OnnxChatModel, temperature: float) -> None:
    greedy = chat.invoke("Name a colour.", temperature=0)
    tiny = chat.invoke("Name a colour.", temperature=temperature, seed=3)
    assert tiny.content == greedy.content and tiny.response_metadata["finish_reason"] in ("stop", "length")


@pytest.mark.slow
def test_a_tiny_repetition_penalty_while_sampling_answers(chat: OnnxChatModel) -> None:
    reply = chat.invoke("Name a colour.", temperature=0.7, repetition_penalty=1e-300, seed=3)
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    assert reply.usage_metadata["output_tokens"] >= 1
