"""Sliding-window layers hold only their window (engine/kv_cache.py, decoder.py, prompt_cache.py).

Gemma 2 (a sliding layer and a global one, soft caps) and Gemma 3 text (two of each, two rotary
bases) with a window of 8, checked against PyTorch several windows past it: greedy through the
engine's every KV layout, rows of different lengths joining and leaving one batch, prompts
prefilled in chunks, speculative verification passes, the prompt cache (an entry whose sliding
caches no longer hold what a shorter prompt needs is not taken), and the bytes the engine
counts. The decoders cut their sliding caches after 4 extra positions here (256 by default),
so every path cuts many times; a cut leaves the logits equal bit for bit, in fp32 and int4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ortmodels.engine.prompt_cache import CacheIdentity, PromptCache

#: Positions a sliding cache may hold past the window before it is cut, in these tests (and the
#: quantum its start is aligned to).
SLACK = 4
#: Tokens these tests generate: with the prompts, six to nine windows of 8.
NEW = 48


# -- the prompt cache's rule, on arrays whose values are their positions ------------------------


def _past(length: int, held: int) -> list[np.ndarray]:
    """A global layer holding every position and a sliding one holding the last ``held``."""
    positions = np.arange(length, dtype=np.float32)
    full = np.broadcast_to(positions[None, None, :, None], (1, 2, length, 4)).copy()
    return [full, full[:, :, length - held :].copy() + 1000]


def test_an_entry_serves_a_prefix_only_while_its_window_holds_that_prefix_s_last_tokens() -> None:
    cache = PromptCache(1 << 20, sliding=[False, True], keep=7)
    cache.store(list(range(30)), _past(30, held=7))  # holds positions 23..29 in the sliding layer
    n, past = cache.lookup([*range(30), 99, 98])  # the whole entry, then two new tokens
    assert n == 30 and past is not None
    np.testing.assert_array_equal(past[0][0, 0, :, 0], np.arange(30))
    np.testing.assert_array_equal(past[1][0, 0, :, 0], np.arange(23, 30) + 1000)
    # A prompt sharing 20 tokens would need positions 13..19 there: not held, so not taken.
    assert cache.lookup([*range(20), 77, 76, 75]) == (0, None)
    # Its own prefill is then stored beside the longer entry (not "covered" by it) and serves it.
    cache.store(list(range(20)), _past(20, held=9))
    n, past = cache.lookup([*range(20), 77, 76, 75])
    assert n == 20 and past is not None
    np.testing.assert_array_equal(past[1][0, 0, :, 0], np.arange(11, 20) + 1000)  # all it holds of them
    assert len(cache) == 2
    # A longer entry whose window covers a shorter one's end replaces it, as without windows.
    cache.store([*range(20), 5, 6], _past(22, held=9))
    assert len(cache) == 2 and cache.lookup([*range(20), 77, 76])[0] == 20


def test_saved_entries_with_sliding_caches_are_read_back(tmp_path: Path) -> None:
    identity = CacheIdentity("tiny", "v1", "fp32", "float32", layers=2, kv_heads=2, head=4)
    cache = PromptCache(1 << 20, sliding=[False, True], keep=7)
    cache.store(list(range(30)), _past(30, held=9))
    cache.save(tmp_path, identity)
    again = PromptCache(1 << 20, sliding=[False, True], keep=7)
    assert again.restore(tmp_path, identity) == 1
    assert again.lookup([*range(30), 1, 2])[0] == 30
    # Read by an engine that takes every cache input as full-history: misshapen, so ignored.
    assert PromptCache(1 << 20).restore(tmp_path, identity) == 0


def test_a_saved_entry_whose_sliding_caches_disagree_is_ignored(tmp_path: Path) -> None:
    """Sliding caches are cut together: an entry whose sliding arrays hold different numbers of
    positions (a damaged or foreign file) would fail its request's prefill, so the file is not used."""
    identity = CacheIdentity("tiny", "v1", "fp32", "float32", layers=3, kv_heads=2, head=4)
    cache = PromptCache(1 << 20, sliding=[False, True, True], keep=7)
    full, window = _past(30, held=9)
    cache.store(list(range(30)), [full, window, window[:, :, 1:].copy()])
    cache.save(tmp_path, identity)
    assert PromptCache(1 << 20, sliding=[False, True, True], keep=7).restore(tmp_path, identity) == 0


# -- the tiny Gemmas against PyTorch ----------------------------------------------------------------

PROMPT = [1, 40, 70, 100, 7, 200, 13, 300, 250, 9, 42, 17, 99, 180, 6, 77]
#: Prompts of different lengths per family whose greedy continuations do not collapse into one
#: repeated token on the random weights (the first two are test_decoder_graph.py's).
PROMPTS = {"gemma2": [PROMPT[:6], PROMPT[3:], PROMPT], "gemma3_text": [PROMPT[:5], PROMPT[5:], PROMPT]}


@pytest.fixture(scope="module", params=sorted(PROMPTS))
def gemma(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """(family, checkpoint, fp32 graph, PyTorch's NEW greedy tokens after each prompt)."""
    from tests.test_decoder_graph import _built, _torch
    from tests.tiny_decoders import build_tiny_decoder

    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = build_tiny_decoder(folder / "ckpt", request.param)
    graph = _built(checkpoint, folder / "fp32")
    expected = [_torch(checkpoint, prompt, NEW)[1] for prompt in PROMPTS[request.param]]
    assert all(len(set(tokens)) > 4 for tokens in expected), expected
    return request.param, checkpoint, graph, expected


def _decoder(graph: Path):  # type: ignore[no-untyped-def]
    from tests.test_decoder_graph import _decoder as open_decoder

    decoder = open_decoder(graph)
    decoder.trim_slack = SLACK
    return decoder


@pytest.mark.slow
def test_the_graph_says_which_caches_slide(gemma) -> None:  # type: ignore[no-untyped-def]
    from tests.tiny_decoders import SLIDING_WINDOW

    family, _, graph, _ = gemma
    decoder = _decoder(graph)
    layers = {"gemma2": [True, False], "gemma3_text": [True, False, True, False]}[family]
    assert decoder.sliding == [s for s in layers for _ in ("key", "value")]
    assert decoder.keep == SLIDING_WINDOW - 1


@pytest.mark.slow
def test_one_sequence_holds_only_its_window_and_gives_pytorch_s_tokens(gemma) -> None:  # type: ignore[no-untyped-def]
    """DecoderState (the serial layout, the export's parity): cut every few tokens, past many windows."""
    from ortmodels.engine.decoder import DecoderState
    from ortmodels.engine.kv_cache import SerialCache

    _, _, graph, expected = gemma
    decoder = _decoder(graph)
    state, tokens, widest = DecoderState(), [], 0
    logits = decoder.forward(state, PROMPT)
    for _ in range(NEW):
        tokens.append(int(logits.argmax()))
        logits = decoder.forward(state, [tokens[-1]])
        widths = [v.shape()[2] for v in state.past or []]
        widest = max(widest, *(w for w, s in zip(widths, decoder.sliding) if s))
        assert all(w == state.length for w, s in zip(widths, decoder.sliding) if not s)
    assert tokens == expected[2]
    assert widest <= decoder.keep + SLACK < state.length // 5

    cache = SerialCache(decoder)  # the layout for graphs that cannot batch, on the same decoder
    _, past = decoder.prefill(PROMPT)
    cache.add("one", past, len(PROMPT))
    got = [int(np.argmax(decoder.prefill(PROMPT)[0]))]
    for _ in range(NEW - 1):
        got.append(int(cache.decode([got[-1]])[0].argmax()))
    assert got == expected[2]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["slots", "padded"])
def test_rows_of_different_lengths_batch_past_many_windows(gemma, layout: str) -> None:  # type: ignore[no-untyped-def]
    """Three prompts, prefilled in chunks of 4, leaving at different steps: PyTorch's tokens,
    and the batch's KV bytes stay within what the windows allow, well under full history."""
    from ortmodels.engine.engine import Engine
    from ortmodels.engine.kv_cache import SlotCache, bytes_per_token, layer_bytes
    from ortmodels.engine.request import Request

    family, _, graph, expected = gemma
    decoder = _decoder(graph)
    prompts = PROMPTS[family]
    engine = Engine(decoder, max_batch=4, kv_layout=layout, prefill_chunk=4)
    requests = [Request(p, max_tokens=NEW - 8 * i) for i, p in enumerate(prompts)]
    for request in requests:
        engine.add_request(request)
    peak = 0
    while engine.step():
        peak = max(peak, engine.gauges().kv_cache_bytes)
    assert [r.generated for r in requests] == [e[: NEW - 8 * i] for i, e in enumerate(expected)]
    assert engine.steps < 2 * NEW  # they did decode together

    longest = max(len(p) for p in prompts) + NEW
    full, window = layer_bytes(decoder)
    assert window and full + window == bytes_per_token(decoder)
    rounded = SlotCache.rounded(longest + 1) if layout == "slots" else longest + 1
    bound = len(prompts) * (rounded * full + (decoder.keep + SLACK + 1) * window)
    assert 0 < peak <= bound < len(prompts) * rounded * bytes_per_token(decoder), (peak, bound)


@pytest.mark.slow
def test_speculative_passes_over_a_cut_window(gemma) -> None:  # type: ignore[no-untyped-def]
    """A request decoding alone drafts and verifies over its slot; rewinds stay within the window."""
    from ortmodels.engine.engine import Engine
    from ortmodels.engine.request import Request

    _, _, graph, expected = gemma
    engine = Engine(_decoder(graph), max_batch=1, speculative=True)
    request = Request(PROMPT, max_tokens=NEW)
    engine.add_request(request)
    while engine.step():
        pass
    assert engine.verify_steps > 0
    # fp32 verification rows equal one-row steps up to rounding (engine.py): the same tokens here.
    assert request.generated == expected[2]


@pytest.mark.slow
def test_prompt_cache_takes_only_entries_that_hold_the_window(gemma) -> None:  # type: ignore[no-untyped-def]
    """A later turn (the whole earlier prompt, then more) reuses it; a prompt sharing only an
    early part of it cannot (its sliding caches were cut past there) and is prefilled anew;
    both give PyTorch's tokens."""
    from ortmodels.engine.engine import Engine
    from ortmodels.engine.request import Request
    from tests.test_decoder_graph import _torch

    _, checkpoint, graph, _ = gemma
    long_prompt = PROMPT + PROMPT[::-1]  # 32 tokens: the sliding caches are cut at prefill
    later_turn = long_prompt + [5, 60, 150]
    early_part = long_prompt[:12] + [33, 44, 55]
    engine = Engine(_decoder(graph), max_batch=2, prompt_cache_bytes=1 << 20)
    runs = []
    for prompt in (long_prompt, later_turn, early_part):
        request = Request(prompt, max_tokens=12)
        engine.add_request(request)
        while engine.step():
            pass
        runs.append(request)
    assert [r.cached_tokens for r in runs] == [0, len(long_prompt), 0]
    for request in runs:
        assert request.generated == _torch(checkpoint, request.prompt_ids, 12)[1]
    # Each prefill is an entry: the early part was not dropped as covered by the longer ones.
    assert len(engine.prompt_cache) == 2 and engine.prompt_cache.lookup(early_part + [1, 2])[0] == len(early_part)


@pytest.mark.slow
def test_the_kv_bound_counts_the_window_not_the_history(gemma) -> None:  # type: ignore[no-untyped-def]
    """A request whose full-history cache would pass ``kv_cache_bytes`` runs within it, since the
    sliding layers hold their window only; one that needs more is refused with the real figure."""
    from ortmodels.engine.engine import Engine
    from ortmodels.engine.kv_cache import SlotCache, bytes_per_token
    from ortmodels.engine.request import Request
    from ortmodels.errors import RequestTooLargeError

    _, _, graph, expected = gemma
    decoder = _decoder(graph)
    limit = len(PROMPT) + NEW
    probe = Engine(decoder, max_batch=1)
    need = probe.kv_bytes(limit)
    history = SlotCache.rounded(limit) * bytes_per_token(decoder)
    assert need < history
    engine = Engine(decoder, max_batch=1, kv_cache_bytes=need)
    request = Request(PROMPT, max_tokens=NEW)
    engine.add_request(request)
    while engine.step():
        assert engine.gauges().kv_cache_bytes <= need
    assert request.generated == expected[2]
    with pytest.raises(RequestTooLargeError, match=f"needs {probe.kv_bytes(limit + 300)} bytes"):
        Engine(decoder, max_batch=1, kv_cache_bytes=need).add_request(Request(PROMPT, max_tokens=NEW + 300))


@pytest.mark.slow
def test_the_figures_per_token_and_per_sequence_are_the_manifest_s_and_bound_every_layout(gemma) -> None:  # type: ignore[no-untyped-def]
    """What the export records for the graph (`graph_kv`) is what the engine counts: bytes per
    token in the global layers only, and a bound per sequence for the sliding ones, which every
    layout's reservation (the serial one's too) stays within past many windows."""
    from ortmodels.engine.decoder import TRIM_SLACK
    from ortmodels.engine.engine import Engine
    from ortmodels.engine.kv_cache import PaddedCache, SerialCache, SlotCache, bytes_per_token, layer_bytes
    from ortmodels.export.decoder.kv_precision import graph_kv

    _, _, graph, _ = gemma
    engine = Engine(_decoder(graph), max_batch=1)
    engine.decoder.trim_slack = TRIM_SLACK  # as exported and loaded
    full, window = layer_bytes(engine.decoder)
    assert 0 < full < bytes_per_token(engine.decoder)
    assert graph_kv(graph) == ("fp32", engine.kv_bytes_per_token, engine.kv_window_bytes) == (
        "fp32", full, window * (engine.decoder.keep + TRIM_SLACK + 1))
    for length in (1, 100, 10_000):
        for cache in (SerialCache(engine.decoder), PaddedCache(engine.decoder, 1)):
            assert cache.bytes_for(1, length) == length * full + min(length * window, engine.kv_window_bytes)
        assert SlotCache(engine.decoder, 1).bytes_for(1, length) <= (
            SlotCache.rounded(length) * full + engine.kv_window_bytes)


@pytest.mark.slow
def test_cuts_change_no_logit_bit_in_fp32_or_int4(gemma, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A cut cache starts at a multiple of the cut quantum, so attention sums the same values in
    the same groups as over the whole history: the logits are equal bit for bit, and an int4
    row batched with others (cut whenever any row fills its buffer) gives its solo tokens."""
    from ortmodels.engine.decoder import DecoderState
    from ortmodels.engine.engine import Engine
    from ortmodels.engine.request import Request
    from tests.test_decoder_graph import _built

    family, checkpoint, fp32, expected = gemma
    int4 = _built(checkpoint, tmp_path / "int4", "int4")
    ids = PROMPT + expected[2]
    for graph in (fp32, int4):
        logits = {}
        for slack in (16, 1024):  # cut every 16 positions, never
            decoder = _decoder(graph)
            decoder.trim_slack = slack
            state = DecoderState()
            rows = [decoder.forward(state, PROMPT)] + [decoder.forward(state, [t]) for t in expected[2]]
            logits[slack] = np.stack(rows)
            assert slack != 16 or state.window_length < len(ids) // 3
        assert np.array_equal(logits[16], logits[1024]), (graph.parent.name, np.abs(logits[16] - logits[1024]).max())

    decoder = _decoder(int4)
    solo = []
    for prompt in PROMPTS[family]:
        uncut = _decoder(int4)
        uncut.trim_slack = 1024  # this row is never cut
        alone = Engine(uncut, max_batch=1)
        request = Request(prompt, max_tokens=NEW)
        alone.add_request(request)
        while alone.step():
            pass
        solo.append(request.generated)
    batch = Engine(decoder, max_batch=4, prefill_chunk=4)
    requests = [Request(p, max_tokens=NEW) for p in PROMPTS[family]]
    for request in requests:
        batch.add_request(request)
    while batch.step():
        pass
    assert [r.generated for r in requests] == solo


@pytest.mark.slow
def test_verification_passes_keep_the_sliding_buffers_within_the_reservation(gemma) -> None:  # type: ignore[no-untyped-def]
    """A verification pass feeds a draft at once after the window; drafts are shortened where they
    would push the sliding buffers past `window_capacity`, so a speculating request stays within
    the bytes its reservation counts (the window, not window + draft), with the same tokens."""
    from ortmodels.engine.engine import Engine
    from ortmodels.engine.request import Request

    _, _, graph, expected = gemma
    decoder = _decoder(graph)
    need = Engine(decoder, max_batch=1).kv_bytes(len(PROMPT) + NEW)
    engine = Engine(decoder, max_batch=1, speculative=True, kv_cache_bytes=need)
    request = Request(PROMPT, max_tokens=NEW)
    engine.add_request(request)
    widest = 0
    while engine.step():
        assert engine.gauges().kv_cache_bytes <= need
        buffers = engine._cache._buffers  # type: ignore[attr-defined]
        widest = max([widest, *(b.shape[2] for b, s in zip(buffers, decoder.sliding) if s)])
    assert engine.verify_steps > 0
    assert 0 < widest <= engine._cache.window_capacity == decoder.keep + SLACK + 1  # type: ignore[attr-defined]
    assert request.generated == expected[2]
