"""DRY sampling: the penalty as llama.cpp defines it (its own test values, hand-computed ones, and
a literal reference), its options and bounds, and its effect on the real sample's loops."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Sequence

import jsonschema
import numpy as np
import pytest
from tokenizers import Tokenizer

from ortmodels.engine import Request, SamplingParams
from ortmodels.engine.dry import DEFAULT_BREAKERS, BreakerCache, DryParams, DryPenalty, SequenceBreakers
from ortmodels.engine.sampling import choose_token
from ortmodels.errors import ChatInputError
from ortmodels.runtime.chat import OnnxChatModel
from ortmodels.runtime.options import ChatOptions

from .conftest import CHAT_SAMPLE, SAMPLES_DIR


def _penalties(tokens: Sequence[int], multiplier: float, base: float, allowed: int, last_n: int,
               breakers: Sequence[Sequence[int]] = (), vocab: int = 8) -> np.ndarray:
    params = DryParams(multiplier, base, allowed, last_n, SequenceBreakers.from_sequences(breakers, vocab))
    dry = DryPenalty(params)
    dry.sync(list(tokens), [])
    logits = np.zeros(vocab, dtype=np.float32)
    dry.apply(logits)
    return -logits


def _reference(tokens: Sequence[int], multiplier: float, base: float, allowed: int, last_n: int,
               breakers: Sequence[Sequence[int]] = (), vocab: int = 8) -> np.ndarray:
    """llama.cpp's definition step by step, quadratic and plain."""
    out = np.zeros(vocab)
    window = len(tokens) if last_n == -1 else min(len(tokens), last_n)
    if multiplier == 0 or last_n == 0 or window <= allowed:
        return out
    last = list(tokens[-window:])
    limit = window
    for distance in range(window):  # the last breaker: its head, then its whole tail, before the end
        head = last[window - 1 - distance]
        fits = [len(b) - 1 for b in breakers if b[0] == head and len(b) - 1 <= distance
                and last[window - distance:window - distance + len(b) - 1] == list(b[1:])]
        if fits:
            limit = distance - max(fits)
            break
    if limit < allowed:
        return out
    longest: dict[int, int] = {}
    for end in range(window - 1):  # a repeat of the context's last tokens ending at `end`
        length = 0
        while length <= end and last[end - length] == last[window - 1 - length]:
            length += 1
        length = min(length, limit)
        if length >= allowed:
            following = last[end + 1]
            longest[following] = max(longest.get(following, 0), length)
    cap = int(np.float32(88.7228391) / np.log(np.float32(base))) if base > 1.000001 else 0
    for token, length in longest.items():
        if [token] in [list(b) for b in breakers]:
            continue
        exponent = length - allowed if cap == 0 else min(length - allowed, cap)
        out[token] = np.float32(multiplier) * float(np.float32(base)) ** exponent
    return out


def _probs(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


@pytest.mark.parametrize(("probs", "tokens", "expected", "multiplier", "base", "allowed", "last_n", "breakers"), [
    ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
    ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, [[3]]),
    ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),
])
def test_llama_cpp_own_test_values(probs: list[float], tokens: list[int], expected: list[float], multiplier: float,
                                   base: float, allowed: int, last_n: int, breakers: list[list[int]]) -> None:
    """The cases of llama.cpp's tests/test-sampling.cpp (test_dry), probabilities after the penalty."""
    logits = np.log(np.array(probs, dtype=np.float32))
    logits -= _penalties(tokens, multiplier, base, allowed, last_n, breakers, len(probs)).astype(np.float32)
    np.testing.assert_allclose(_probs(logits), expected, atol=1e-5)


def test_hand_computed_penalties() -> None:
    context = [7, 0, 1, 2, 3, 0, 1, 2]  # "0 1 2" was followed by 3: choosing 3 repeats 3 tokens more
    assert _penalties(context, 0.8, 1.75, 2, -1)[3] == pytest.approx(0.8 * 1.75)
    assert np.count_nonzero(_penalties(context, 0.8, 1.75, 2, -1)) == 1
    assert _penalties(context, 0.8, 1.75, 3, -1)[3] == pytest.approx(0.8)  # length 3, allowed 3: base ** 0
    assert not _penalties(context, 0.8, 1.75, 4, -1).any()  # shorter than allowed
    assert not _penalties(context, 0.8, 1.75, 2, 5).any()  # the last 5 tokens "2 3 0 1 2": "2" then "3"
    assert _penalties(context, 0.8, 1.75, 2, 6)[3] == pytest.approx(0.8)  # "1 2 3 0 1 2": "1 2" then "3"
    # a breaker token ("1") ends the repeat: only "2" is left after it, shorter than allowed
    assert not _penalties(context, 0.8, 1.75, 2, -1, [[1]]).any()
    # a two-token breaker "0 1": after it, "2" repeats with length 1
    assert _penalties(context, 0.8, 1.75, 1, -1, [[0, 1]])[3] == pytest.approx(0.8)
    # a breaker's head alone, without its tail, breaks nothing
    assert _penalties(context, 0.8, 1.75, 2, -1, [[0, 5]])[3] == pytest.approx(0.8 * 1.75)
    # the token that would continue the repeat is itself a breaker: never penalized
    assert not _penalties(context, 0.8, 1.75, 2, -1, [[3]]).any()
    # a long repeat: the exponent is clamped so the penalty stays finite (llama.cpp's 88.72 / ln base)
    loop = [1, 2] * 200
    assert _penalties(loop, 1.0, 1.75, 2, -1)[1] == pytest.approx(1.75 ** int(88.7228391 / math.log(1.75)), rel=1e-6)


def test_agrees_with_the_reference_incrementally_on_random_contexts() -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        tokens = [int(t) for t in rng.integers(0, 4, int(rng.integers(1, 50)))]
        breakers = [[int(t) for t in rng.integers(0, 6, int(rng.integers(1, 4)))] for _ in range(rng.integers(0, 3))]
        setting = (float(rng.choice([0.8, 2.0])), float(rng.choice([1.0, 1.75])), int(rng.integers(0, 4)),
                   int(rng.choice([-1, 0, 5, 20])))
        expected = _reference(tokens, *setting, breakers)
        np.testing.assert_allclose(_penalties(tokens, *setting, breakers), expected, rtol=1e-6)
        split = int(rng.integers(1, len(tokens) + 1))  # as a request sees it: the prompt, then one token at a time
        params = DryParams(*setting, SequenceBreakers.from_sequences(breakers, 8))
        dry = DryPenalty(params)
        for end in range(split, len(tokens) + 1):
            dry.sync(tokens[:split], tokens[split:end])
        logits = np.zeros(8, dtype=np.float32)
        if params.enabled:
            dry.apply(logits)
        np.testing.assert_allclose(-logits, expected, rtol=1e-6)


def test_a_penalized_logit_stays_finite_and_a_banned_one_banned() -> None:
    dry = DryPenalty(DryParams(1e30, 1e30, 0, -1))
    dry.sync([1, 2, 1, 2, 1], [])
    logits = np.array([-np.inf, -np.inf, 5.0, -np.inf], dtype=np.float32)  # a grammar allows only token 2
    dry.apply(logits)
    assert np.isfinite(logits[2]) and logits[2] < -1e37 and logits[1] == -np.inf
    # a grammar that allows only the penalized token still gets it
    assert choose_token(logits, SamplingParams(), np.zeros(0, dtype=np.int64), np.random.default_rng(0)) == 2


@pytest.mark.parametrize(("multiplier", "base"), [(1.7976931348623157e308, 1e300), (1e30, 1.0), (0.8, 1e300)])
def test_extreme_settings_give_finite_logits_without_warnings(multiplier: float, base: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dry = DryPenalty(DryParams(multiplier, base, 0, -1))
        dry.sync([1, 2, 3] * 20, [])
        logits = np.zeros(4, dtype=np.float32)
        dry.apply(logits)
    assert np.isfinite(logits).all() and (logits[1:] < 0).all()


def test_off_costs_nothing_and_changes_nothing() -> None:
    assert Request([1, 2], SamplingParams(dry=DryParams(0.0)))._dry is None
    assert Request([1, 2], SamplingParams(dry=DryParams(0.8, penalty_last_n=0)))._dry is None
    logits = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    assert Request([0, 1, 2, 0, 1], SamplingParams()).choose(logits.copy()) == 2
    request = Request([0, 1, 2, 0, 1], SamplingParams(dry=DryParams(5.0)))
    row = logits.copy()
    assert request.choose(row) == 1  # "0 1" was followed by 2 before: 2 loses 5
    np.testing.assert_array_equal(row, logits)  # the row (and its logprobs) keep the model's logits


@pytest.mark.parametrize(("option", "value", "words"), [
    ("dry_multiplier", -0.1, "greater than or equal to 0"),
    ("dry_multiplier", math.inf, "finite"),
    ("dry_base", 0.5, "greater than or equal to 1"),
    ("dry_allowed_length", -1, "greater than or equal to 0"),
    ("dry_penalty_last_n", -2, "greater than or equal to -1"),
    ("dry_sequence_breakers", [], "at least 1"),
    ("dry_sequence_breakers", ["\n", ""], "dry_sequence_breakers[1] has 0 characters"),
    ("dry_sequence_breakers", ["x" * 41], "1 to 40"),
    ("dry_sequence_breakers", ["\n"] * 33, "at most 32"),
])
def test_out_of_bounds_options_are_refused_by_name(option: str, value: object, words: str) -> None:
    with pytest.raises(ChatInputError, match=option) as caught:
        ChatOptions.checked(**{option: value})
    assert words in str(caught.value)


# -- the real sample ------------------------------------------------------------------------------

JOKE = {"type": "object", "properties": {"setup": {"type": "string"}, "punchline": {"type": "string"}},
        "required": ["setup", "punchline"]}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(SAMPLES_DIR / CHAT_SAMPLE / "tokenizer.json"))


@pytest.mark.slow
def test_breakers_are_matched_against_token_text_as_llama_cpp_does(tokenizer: Tokenizer) -> None:
    cache = BreakerCache(tokenizer)
    default = cache.get(DEFAULT_BREAKERS)
    assert cache.get(list(DEFAULT_BREAKERS)) is default  # scanned once per list
    for text in ("\n", '":', "**", ":"):  # every token containing a breaker is one on its own
        (token,) = tokenizer.encode(text, add_special_tokens=False).ids
        assert default.single[token], text
    (cat,) = tokenizer.encode(" cat", add_special_tokens=False).ids
    assert not default.single[cat] and cat not in default.tails
    # " the end": a token that ends with its first characters (" the") is a head, " end" its tail
    words = cache.get([" the end"])
    (the,) = tokenizer.encode(" the", add_special_tokens=False).ids
    assert tuple(tokenizer.encode(" end", add_special_tokens=False).ids) in words.tails[the]
    assert all(tokenizer.decode([t]).find(" the end") >= 0 for t in np.flatnonzero(words.single))


def _repeated_4grams(ids: Sequence[int]) -> float:
    """The share of the answer's 4-grams of tokens seen earlier in it: 0 never repeats, near 1 loops."""
    grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


@pytest.fixture(scope="module")
def service() -> Iterator[object]:
    model = OnnxChatModel(model_path=str(SAMPLES_DIR / CHAT_SAMPLE), dtype="int8", device="cpu").load()
    yield model.loaded
    model.unload()


@pytest.mark.slow
def test_dry_breaks_the_samples_loop_inside_a_json_string(service: object, tokenizer: Tokenizer) -> None:
    """Greedy, the int8 sample loops inside the setup string until max_tokens; with DRY it repeats far less."""
    shares, answers = {}, {}
    for setting, extra in (("off", {}), ("dry", {"dry_multiplier": 0.8})):
        options = ChatOptions(max_tokens=100, temperature=0, **extra,
                              response_format={"type": "json_schema", "json_schema": {"name": "joke", "schema": JOKE}})
        text = "".join(getattr(e, "text", "") for e in service.stream(  # type: ignore[attr-defined]
            service.prepare([{"role": "user", "content": "Tell me a joke about cats."}], options)))  # type: ignore[attr-defined]
        answers[setting] = text
        shares[setting] = _repeated_4grams(tokenizer.encode(text, add_special_tokens=False).ids)
    assert shares["off"] > 0.5, answers["off"]  # the loop this test is about
    assert shares["dry"] < shares["off"] / 2, answers
    jsonschema.validate(json.loads(answers["dry"]), JOKE)  # and the grammar still holds


# -- the server ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from .test_serve import _start, _stop

    running = _start(tmp_path_factory.mktemp("serve-dry"), "--models", CHAT_SAMPLE)
    yield running
    _stop(running)


@pytest.mark.slow
def test_the_server_takes_llama_cpp_dry_fields(server: object) -> None:
    import openai

    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)  # type: ignore[attr-defined]
    reply = client.chat.completions.create(
        model=CHAT_SAMPLE, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0,
        extra_body={"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
                    "dry_sequence_breakers": ["\n", ":", '"', "*"]})
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 8
    completion = client.completions.create(model=CHAT_SAMPLE, prompt="One, two,", max_tokens=4,
                                           extra_body={"dry_multiplier": 1})
    assert completion.choices[0].text


@pytest.mark.slow
def test_extreme_dry_under_a_grammar_still_answers_the_schema(server: object) -> None:
    from .test_serve import _post

    body = {"model": CHAT_SAMPLE, "messages": [{"role": "user", "content": "Tell me a joke about cats."}],
            "max_tokens": 60, "temperature": 0, "dry_multiplier": 1.7976931348623157e308, "dry_base": 1e300,
            "dry_allowed_length": 0, "dry_sequence_breakers": ["{"],
            "response_format": {"type": "json_schema", "json_schema": {"name": "joke", "schema": JOKE}}}
    reply = _post(server, "/chat/completions", body)  # type: ignore[arg-type]
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        jsonschema.validate(json.loads(choice["message"]["content"]), JOKE)


@pytest.mark.slow
@pytest.mark.parametrize(("field", "value"), [
    ("dry_multiplier", -1), ("dry_base", 0.9), ("dry_allowed_length", -1), ("dry_penalty_last_n", -5),
    ("dry_sequence_breakers", []), ("dry_sequence_breakers", [""]), ("dry_sequence_breakers", "\n"),
])
def test_the_server_refuses_out_of_bound_dry_fields_with_400(server: object, field: str, value: object) -> None:
    from .test_serve import _error, _post

    body = {"model": CHAT_SAMPLE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, field: value}
    error = _error(_post(server, "/chat/completions", body), 400)  # type: ignore[arg-type]
    assert error["type"] == "invalid_request_error" and field in (error["param"] or "") + error["message"]
