"""Prompt-lookup drafts for speculative decoding: guess the next tokens by copying.

An answer that quotes its context (a RAG answer, an edited text, code being rewritten)
repeats long runs of tokens the sequence already holds. `PromptLookup` keeps, for each
n-gram size, where each n-gram of the prompt and of the generated text last ended; when
the sequence's last n tokens occurred before, the tokens that followed them then are the
draft (transformers' ``prompt_lookup_num_tokens``, llama.cpp's ``ngram-simple``): the
longest n-gram wins, its most recent occurrence is used. No draft is made without a
match, so ordinary text pays only for the matches that turn out wrong.

The engine checks a draft of k tokens in one forward pass of k + 1 tokens and keeps the
longest prefix the model agrees with plus the model's own next token (engine.py). Whether
to draft and how much follows a cost model: a pass of k draft tokens costs about
``PASS_BASE + PASS_PER_TOKEN * k`` one-token steps (measured on the 2-core CPU with the
135M sample: 2 tokens 1.2-1.3x, 9 tokens 2-2.4x), and yields 1 + p + ... + p^k tokens when
each draft token is accepted with probability p. p is estimated per n-gram size from how
this request's drafts fared (a long match is a better hint than a short one); the draft
length with the best tokens per cost is used, and none when no length beats a plain step
by `GAIN`. Skipped matches let the estimate drift back to its prior, so a request whose
text turns to copying tries again.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigurationError

#: Defaults: n-grams of 2 to 4 tokens (a single repeated token is too weak a hint), drafts
#: of at most 8 tokens.
MIN_NGRAM, MAX_NGRAM, MAX_DRAFT = 2, 4, 8
#: A verification pass of k draft tokens costs about PASS_BASE + PASS_PER_TOKEN * k one-token steps.
PASS_BASE, PASS_PER_TOKEN = 1.2, 0.15
#: Draft only when the expected tokens per step-cost beat a plain step by this factor.
GAIN = 1.05
_DECAY = 0.9  # each skipped match shrinks the evidence, so the estimate drifts back to its prior


def best_length(p: float, most: int) -> int:
    """The draft length (1..most) with the most expected tokens per cost, or 0 if none pays."""
    best, best_value = 0, GAIN
    expected, power = 1.0, 1.0
    for k in range(1, most + 1):
        power *= p
        expected += power
        value = expected / (PASS_BASE + PASS_PER_TOKEN * k)
        if value > best_value:
            best, best_value = k, value
    return best


class PromptLookup:
    """One request's n-gram index over its prompt and generated tokens, and its draft length."""

    def __init__(self, prompt_ids: Sequence[int], *, min_ngram: int = MIN_NGRAM, max_ngram: int = MAX_NGRAM,
                 max_draft: int = MAX_DRAFT) -> None:
        if not 1 <= min_ngram <= max_ngram or max_draft < 1:
            raise ConfigurationError(
                f"Prompt lookup needs 1 <= min_ngram <= max_ngram and max_draft >= 1, not "
                f"min_ngram={min_ngram}, max_ngram={max_ngram}, max_draft={max_draft}."
            )
        self.sizes = range(max_ngram, min_ngram - 1, -1)
        self.max_draft = max_draft
        self.tokens: list[int] = [int(t) for t in prompt_ids]
        self._prompt_length = len(self.tokens)
        self._ends: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.sizes}
        self._indexed = 1  # continuation starts indexed so far: every position in [1, _indexed)
        self._evidence = {n: [0.0, 0.0] for n in self.sizes}  # per n-gram size: accepted, rejected tokens
        self._last_size = max_ngram
        self.drafted = 0  # statistics: draft tokens proposed and accepted
        self.accepted = 0

    def acceptance(self, size: int) -> float:
        """Estimated chance that a draft token after a match of ``size`` tokens is accepted."""
        accepted, rejected = self._evidence[size]
        return (accepted + 1) / (accepted + rejected + 2)

    def sync(self, generated: Sequence[int]) -> None:
        """Take the request's generated tokens that this index has not seen yet."""
        have = len(self.tokens) - self._prompt_length
        if len(generated) > have:
            self.tokens.extend(int(t) for t in generated[have:])

    def propose(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the longest
        matching suffix n-gram, as many as pay by the cost model; [] when none do or nothing matches."""
        if limit <= 0:
            return []
        self._index()
        tokens = self.tokens
        for n in self.sizes:
            if len(tokens) <= n:
                continue
            start = self._ends[n].get(tuple(tokens[-n:]))
            if start is None:
                continue
            count = best_length(self.acceptance(n), min(limit, self.max_draft, len(tokens) - start))
            if count == 0:
                evidence = self._evidence[n]
                evidence[0] *= _DECAY
                evidence[1] *= _DECAY
                return []
            self._last_size = n
            return tokens[start : start + count]
        return []

    def feedback(self, drafted: int, accepted: int) -> None:
        """How the last draft fared: its tokens count as evidence for its n-gram size."""
        self.drafted += drafted
        self.accepted += accepted
        evidence = self._evidence[self._last_size]
        evidence[0] += accepted
        evidence[1] += 1 if accepted < drafted else 0

    def _index(self) -> None:
        """Record the n-grams that end before the last token (their continuation is known)."""
        tokens, last = self.tokens, len(self.tokens)
        for start in range(self._indexed, last):
            for n, ends in self._ends.items():
                if start >= n:
                    ends[tuple(tokens[start - n : start])] = start
        self._indexed = max(self._indexed, last)
