"""Prompt-lookup speculative decoding: the drafter alone, the KV rewind, and the engine on the
real sample (fp32: the very tokens of non-speculative decoding; int4: see its test)."""

from __future__ import annotations

import numpy as np
import pytest

from ortmodels.engine import Engine, Request, SamplingParams
from ortmodels.engine.kv_cache import SlotCache
from ortmodels.engine.sampling import BannedTokens
from ortmodels.engine.speculative import PromptLookup, best_length
from ortmodels.errors import ConfigurationError
from tests.engine_samples import EOS, QUESTIONS, chat_prompt, decoder, tokenizer

TEXT = ("The Amazon rainforest covers much of the Amazon basin of South America. This basin encompasses seven "
        "million square kilometres, of which five and a half million square kilometres are covered by the "
        "rainforest. The majority of the forest is contained within Brazil, with 60% of the rainforest, followed "
        "by Peru with 13%, and Colombia with 10%.")
COPY_QUESTIONS = (
    "Fix the typos in this text and return the whole corrected text: "
    + TEXT.replace("rainforest", "rainforst").replace("square", "sqare"),
    f"Context: {TEXT}\n\nQuestion: How large is the Amazon basin? Quote the context.",
    f"Repeat this text exactly: {TEXT}",
)
NEW = 48


def _run(dtype: str, prompt: list[int], speculative: bool, **options: object) -> tuple[Request, Engine]:
    engine = Engine(decoder(dtype), tokenizer(), speculative=speculative)
    request = Request(prompt, eos_token_ids=EOS, **{"max_tokens": NEW, **options})  # type: ignore[arg-type]
    engine.add_request(request)
    while engine.step():
        pass
    return request, engine


def _text(request: Request) -> str:
    return "".join(e.text for e in request.events() if hasattr(e, "text"))


# -- the drafter ------------------------------------------------------------------------------


def test_lookup_drafts_what_followed_the_longest_latest_match() -> None:
    lookup = PromptLookup([5, 6, 7, 8, 9, 1, 6, 7, 3, 4], max_draft=4)
    lookup._evidence = {n: [50.0, 0.0] for n in lookup.sizes}  # drafts that always held: the longest pays
    lookup.sync([5, 6, 7])  # ... 5 6 7: the 3-gram "5 6 7" matched at the start beats "6 7" at 6..7
    assert lookup.propose(10) == [8, 9, 1, 6]
    assert lookup.propose(2) == [8, 9]  # never more than the room left


def test_lookup_drafts_only_what_pays_and_tries_again_later() -> None:
    assert [best_length(p, 8) for p in (0.2, 0.5, 0.7, 0.95)] == [0, 2, 4, 8]
    lookup = PromptLookup([1, 2, 3, 4])
    assert lookup.propose(8) == []  # the suffix "3 4" occurred nowhere before
    lookup.sync([1, 2])
    assert lookup.propose(8) == [3, 4]  # the prior (p = 0.5) pays for two tokens
    lookup.feedback(drafted=2, accepted=0)
    skipped = 0
    while not lookup.propose(8):  # a flat rejection: this n-gram size is not worth a pass ...
        skipped += 1
    assert 5 < skipped < 30  # ... until the evidence has faded
    lookup.feedback(drafted=2, accepted=2)
    assert lookup.acceptance(2) > 0.5
    with pytest.raises(ConfigurationError):
        PromptLookup([1], min_ngram=3, max_ngram=2)


def test_request_speculative_is_a_bool_or_none() -> None:
    assert Request([1, 2], speculative=None).speculative is None
    with pytest.raises(ConfigurationError, match="speculative"):
        Request([1, 2], speculative="yes")  # type: ignore[arg-type]


# -- the KV row -----------------------------------------------------------------------------


def test_rewound_row_continues_as_a_fresh_prefill_and_holds_no_stale_values() -> None:
    dec = decoder("fp32")
    prompt = chat_prompt(QUESTIONS[0])
    _, past = dec.prefill(prompt)
    cache = SlotCache(dec, 2)
    cache.add("a", past, len(prompt))
    kept, rejected = [100, 200], [300, 400, 500]
    logits = cache.extend("a", kept + rejected)
    assert logits.shape[0] == 5
    cache.rewind("a", len(prompt) + len(kept))
    width = cache._buffers[0].shape[2]
    assert all(not buffer[0, :, len(prompt) + len(kept):width].any() for buffer in cache._buffers)
    step = cache.decode([600])[0]
    expected, _ = dec.prefill(prompt + kept + [600])
    np.testing.assert_allclose(step, expected, atol=2e-4)


# -- the engine, fp32: the very tokens ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("question", [*COPY_QUESTIONS, QUESTIONS[1], QUESTIONS[2], QUESTIONS[5]])
def test_fp32_speculative_greedy_gives_the_same_tokens(question: str) -> None:
    prompt = chat_prompt(question)
    plain, _ = _run("fp32", prompt, speculative=False)
    fast, engine = _run("fp32", prompt, speculative=True)
    assert fast.generated == plain.generated
    assert fast.finish_reason == plain.finish_reason
    if question in (COPY_QUESTIONS[0], COPY_QUESTIONS[2]):  # answers that copy (the context question's does not)
        assert engine.accepted_tokens > 0  # drafts were checked and kept, not just skipped
        assert engine.steps < NEW


@pytest.mark.slow
def test_fp32_stop_strings_max_tokens_logprobs_and_processors_are_kept() -> None:
    prompt = chat_prompt(COPY_QUESTIONS[2])
    for options in ({"max_tokens": 7}, {"max_tokens": 13}, {"stop": ["square"]}, {"logprobs": 3},
                    {"processor": BannedTokens((tokenizer().encode(" basin", add_special_tokens=False).ids[0],))}):
        plain, _ = _run("fp32", prompt, speculative=False, **options)
        fast, engine = _run("fp32", prompt, speculative=True, **options)
        assert fast.generated == plain.generated, options
        assert (fast.finish_reason, _text(fast)) == (plain.finish_reason, _text(plain)), options
        assert engine.verify_steps > 0, options
    plain, _ = _run("fp32", prompt, speculative=False, logprobs=3)
    fast, _ = _run("fp32", prompt, speculative=True, logprobs=3)
    ours = [lp for e in fast.events() for lp in getattr(e, "logprobs", ())]
    theirs = [lp for e in plain.events() for lp in getattr(e, "logprobs", ())]
    assert [lp.token_id for lp in ours] == [lp.token_id for lp in theirs]
    np.testing.assert_allclose([lp.logprob for lp in ours], [lp.logprob for lp in theirs], atol=1e-3)


@pytest.mark.slow
def test_fp32_seeded_sampling_draws_the_same_tokens() -> None:
    """Each token is still drawn from the model's own distribution, with one draw per token
    (a draft token is kept when the draw picks it), so a seed gives the same tokens."""
    params = SamplingParams(temperature=0.7, top_p=0.9, seed=7)
    prompt = chat_prompt(COPY_QUESTIONS[0])
    plain, _ = _run("fp32", prompt, speculative=False, params=params)
    fast, engine = _run("fp32", prompt, speculative=True, params=params)
    assert fast.generated == plain.generated
    assert engine.accepted_tokens > 0


@pytest.mark.slow
def test_fp32_batch_mates_turn_speculation_off_and_on_again() -> None:
    """A request speculates alone, decodes batched while another runs, then speculates again."""
    long_prompt, short_prompt = chat_prompt(COPY_QUESTIONS[2]), chat_prompt(QUESTIONS[4])
    expected_long, _ = _run("fp32", long_prompt, speculative=False, max_tokens=64)
    expected_short, _ = _run("fp32", short_prompt, speculative=False, max_tokens=6)
    engine = Engine(decoder("fp32"), tokenizer(), speculative=True)
    first = Request(long_prompt, max_tokens=64, eos_token_ids=EOS)
    engine.add_request(first)
    for _ in range(3):
        engine.step()
    alone = engine.verify_steps
    assert alone > 0
    second = Request(short_prompt, max_tokens=6, eos_token_ids=EOS)
    engine.add_request(second)
    engine.step()
    while len(engine.active) == 2:
        before = engine.verify_steps
        engine.step()
        assert engine.verify_steps == before  # nobody speculates in a batch of two
    while engine.step():
        pass
    assert engine.verify_steps > alone
    assert first.generated == expected_long.generated
    assert second.generated == expected_short.generated


@pytest.mark.slow
def test_fp32_prompt_cache_and_speculation_together() -> None:
    engine = Engine(decoder("fp32"), tokenizer(), speculative=True, prompt_cache_bytes=64 << 20)
    turns = [chat_prompt(COPY_QUESTIONS[2]), chat_prompt(COPY_QUESTIONS[2]) + chat_prompt("Again, please.")]
    for prompt in turns:
        request = Request(prompt, max_tokens=NEW, eos_token_ids=EOS)
        engine.add_request(request)
        while engine.step():
            pass
        plain, _ = _run("fp32", prompt, speculative=False)
        assert request.generated == plain.generated
    assert engine.prompt_cache.hits == 1 and engine.accepted_tokens > 0


# -- int4: what holds there -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("question", [*COPY_QUESTIONS, QUESTIONS[1]])
def test_int4_speculation_departs_only_at_near_ties(question: str) -> None:
    """int4's verification pass runs the multi-row kernels (its logits are a full prefill's,
    exactly), whose logits differ from a one-row step's by up to ~0.8 on the sample. So the
    tokens equal non-speculative greedy's up to the first near tie, and this proves that:
    where the two first differ, non-speculative decoding rated the token speculation chose
    within 1.0 (log-probability) of its own choice. It does not prove equality after that."""
    prompt = chat_prompt(question)
    plain, _ = _run("int4", prompt, speculative=False, logprobs=5)
    fast, _ = _run("int4", prompt, speculative=True)
    differ = [i for i, (a, b) in enumerate(zip(plain.generated, fast.generated)) if a != b]
    if not differ:
        return
    at = differ[0]
    logprobs = [lp for e in plain.events() for lp in getattr(e, "logprobs", ())]
    alternatives = dict(logprobs[at].top)
    assert fast.generated[at] in alternatives, (at, logprobs[at])
    assert logprobs[at].logprob - alternatives[fast.generated[at]] < 1.0, (at, logprobs[at])
