"""Ray's prefix-aware routing policy, without Ray: the prefix index and the choice it feeds
(`ortmodels.serve.ray.prefix`), and the router's request counts (`ortmodels.serve.ray.load`).
The router on a real cluster is tested in `test_serve_ray.py`."""

from __future__ import annotations

from ortmodels.serve.ray.load import RequestCounts
from ortmodels.serve.ray.prefix import (
    BLOCK_CHARS,
    PrefixIndex,
    block_hashes,
    choose,
    prompt_text,
)

SYSTEM = {"role": "system", "content": "You answer questions about rivers. " * 20}


def _chat(*turns: str) -> str:
    messages = [SYSTEM] + [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    text = prompt_text("achat_events", ["model", messages, None])
    assert text is not None
    return text


def test_a_conversations_later_turns_extend_its_earlier_prompt_text() -> None:
    first, later = _chat("Which is longest?"), _chat("Which is longest?", "The Nile.", "And in Europe?")
    assert later.startswith(first)
    assert prompt_text("atext_events", ["model", "Once upon a time", None]) == "Once upon a time"
    assert prompt_text("aembed_counted", ["model", ["a text"], None]) is None  # not a prompt: by load
    assert block_hashes("x" * (2 * BLOCK_CHARS + 5)) == block_hashes("x" * 2 * BLOCK_CHARS)  # whole blocks only


def test_the_replica_sent_the_longest_start_is_chosen() -> None:
    index = PrefixIndex()
    ada, bruno = _chat("I am Ada. Which is longest?"), _chat("I am Bruno. Which is deepest?")
    index.insert(ada, "A")
    index.insert(bruno, "B")
    ada_next = _chat("I am Ada. Which is longest?", "The Nile.", "And in Europe?")
    matches = index.matches(ada_next, ["A", "B"])
    assert matches["A"] == len(ada) // BLOCK_CHARS * BLOCK_CHARS and matches["B"] < matches["A"]
    assert choose(matches, {"A": 3, "B": 0}, imbalance=8) == "A"  # busier, but within the imbalance
    assert choose(matches, {"A": 9, "B": 0}, imbalance=8) is None  # busy: routed by load instead


def test_replicas_holding_the_same_start_are_told_apart_by_load() -> None:
    index = PrefixIndex()
    index.insert(_chat("First question?"), "A")
    index.insert(_chat("Second question?"), "B")
    matches = index.matches(_chat("A third, new question?"), ["A", "B"])
    assert matches["A"] == matches["B"] > 0  # both hold the system prompt
    assert choose(matches, {"A": 4, "B": 1}, imbalance=8) == "B"
    assert choose(matches, {"A": 0, "B": 1}, imbalance=8) == "A"


def test_a_prompt_that_shares_nothing_is_routed_by_load() -> None:
    index = PrefixIndex()
    index.insert(_chat("Anything"), "A")
    nothing = index.matches("A completely different prompt. " * 10, ["A", "B"])
    assert nothing == {"A": 0, "B": 0}
    assert choose(nothing, {"A": 0, "B": 5}, imbalance=8) is None
    assert index.matches("short", ["A"]) == {"A": 0}  # shorter than a block: nothing to match


def test_a_gone_replica_is_forgotten_and_the_index_is_bounded() -> None:
    index = PrefixIndex(max_blocks=6)
    text = _chat("Which is longest?")
    index.insert(text, "A")
    assert len(index) == 6  # the oldest blocks dropped: the deepest, so a chain keeps its start
    assert index.matches(text, ["A"])["A"] == 6 * BLOCK_CHARS
    index.remove("A")
    assert len(index) == 0 and index.matches(text, ["A"]) == {"A": 0}


def test_a_new_conversation_sharing_only_the_system_prompt_goes_by_load() -> None:
    """The first turn of a conversation matches the system prompt where another conversation went
    on: that is not its own, so it does not pull it to that replica; its second turn is its own."""
    index = PrefixIndex()
    index.insert(_chat("I am Ada. Which is longest?"), "A")
    bruno = _chat("I am Bruno. Which is deepest?")
    matches = index.matches(bruno, ["A", "B"])
    assert matches["A"] > 0 and index.shared_only(bruno, matches["A"])
    index.insert(bruno, "B")
    bruno_next = _chat("I am Bruno. Which is deepest?", "Lake Baikal.", "And in Europe?")
    best = index.matches(bruno_next, ["A", "B"])
    assert best["B"] > best["A"] and not index.shared_only(bruno_next, best["B"])


def test_a_shared_system_prompt_keeps_a_bounded_record_of_what_followed_it() -> None:
    """Every conversation continues the shared system prompt differently; the index keeps two
    continuations of a block at most (enough to tell "shared" from "its own"), so an ingress
    serving many conversations does not grow without bound, and the verdict stays the same."""
    index = PrefixIndex()
    for n in range(200):
        index.insert(_chat(f"Question number {n} about a river?"), "A" if n % 2 else "B")
    assert max(len(v) for v in index._next.values()) <= 2
    fresh = _chat("A question nobody asked before?")
    matched = max(index.matches(fresh, ["A", "B"]).values())
    assert matched > 0 and index.shared_only(fresh, matched)  # the system prompt only: by load


def test_a_burst_of_choices_counts_each_before_anything_is_sent() -> None:
    """Serve asks for many choices before it sends any request: each choice counts at once, so
    16 first turns chosen by load in a burst split 8 and 8, not as coins fall."""
    counts = RequestCounts()
    for _ in range(16):
        replica = min(("A", "B"), key=counts.load)
        counts.reserve(replica)
    assert counts.load("A") == counts.load("B") == 8
    for replica in "AB" * 8:  # sent: reservations become ongoing requests, the load unchanged
        counts.sent(replica)
        assert counts.load(replica) == 8
    for _ in range(3):
        counts.completed("A")
    assert (counts.load("A"), counts.load("B")) == (5, 8)
    counts.forget("B")
    assert counts.load("B") == 0


def test_a_reservation_nothing_was_sent_for_lapses() -> None:
    """A chosen replica that refused the request (it went elsewhere) or a request cancelled before
    its send leaves a reservation that stops counting after its time."""
    now = [100.0]
    counts = RequestCounts(reservation_s=10.0, clock=lambda: now[0])
    counts.reserve("A")
    counts.sent("B")  # the request went to B after all
    assert (counts.load("A"), counts.load("B")) == (1, 1)
    now[0] += 10.5
    assert (counts.load("A"), counts.load("B")) == (0, 1)
    counts.completed("B")
    counts.completed("B")  # never below nothing
    assert counts.load("B") == 0
