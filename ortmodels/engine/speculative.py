"""Prompt-lookup drafts for speculative decoding: guess the next tokens by copying.

An answer that quotes its context (a RAG answer, an edited text, code being rewritten)
repeats long runs of tokens the sequence already holds. `PromptLookup` keeps, for each
n-gram size, where each n-gram of the prompt and of the generated text last ended; when
the sequence's last n tokens occurred before, the tokens that followed them then are the
draft (transformers' ``prompt_lookup_num_tokens``, llama.cpp's ``ngram-simple``): the
longest n-gram wins, its most recent occurrence is used. No draft is made without a
match, so ordinary text pays only for the matches that turn out wrong.

The engine checks a draft of k tokens in one forward pass of k + 1 tokens and keeps the
longest prefix the model agrees with plus the model's own next token (engine.py). How
long the next draft may be follows how the last ones fared: a fully accepted draft doubles
it (up to ``max_draft``), a partly accepted one shrinks it to what was accepted plus one,
and a draft rejected at its first token halves it and pauses drafting for 1, 2, 4 ... 32
steps, so text with nothing to copy soon stops paying for verification.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigurationError

#: Defaults: n-grams of 2 to 4 tokens (a single repeated token is too weak a hint), drafts
#: of at most 8 tokens (on a 2-core CPU a 9-token pass of the 135M sample costs ~2x a step).
MIN_NGRAM, MAX_NGRAM, MAX_DRAFT = 2, 4, 8
_MAX_PAUSE = 32


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
        self.draft_length = max(1, max_draft // 2)
        self.tokens: list[int] = [int(t) for t in prompt_ids]
        self._prompt_length = len(self.tokens)
        self._ends: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.sizes}
        self._indexed = 1  # continuation starts indexed so far: every position in [1, _indexed)
        self._pause = 0
        self._misses = 0
        self.drafted = 0  # statistics: draft tokens proposed and accepted
        self.accepted = 0

    def sync(self, generated: Sequence[int]) -> None:
        """Take the request's generated tokens that this index has not seen yet."""
        have = len(self.tokens) - self._prompt_length
        if len(generated) > have:
            self.tokens.extend(int(t) for t in generated[have:])

    def propose(self, limit: int) -> list[int]:
        """Up to ``min(limit, draft length)`` tokens that followed the latest earlier occurrence of
        the longest matching suffix n-gram; [] when nothing matches or drafting is paused."""
        if self._pause > 0:
            self._pause -= 1
            return []
        count = min(limit, self.draft_length)
        if count <= 0:
            return []
        self._index()
        tokens = self.tokens
        for n in self.sizes:
            if len(tokens) <= n:
                continue
            start = self._ends[n].get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start : start + count]
        return []

    def feedback(self, drafted: int, accepted: int) -> None:
        """How the last draft fared: adapt its length and pause after a flat rejection."""
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.draft_length = min(self.max_draft, 2 * self.draft_length)
            self._misses = 0
        elif accepted > 0:
            self.draft_length = max(1, accepted + 1)
            self._misses = 0
        else:
            self.draft_length = max(1, self.draft_length // 2)
            self._pause = min(_MAX_PAUSE, 1 << self._misses)
            self._misses += 1

    def _index(self) -> None:
        """Record the n-grams that end before the last token (their continuation is known)."""
        tokens, last = self.tokens, len(self.tokens)
        for start in range(self._indexed, last):
            for n, ends in self._ends.items():
                if start >= n:
                    ends[tuple(tokens[start - n : start])] = start
        self._indexed = max(self._indexed, last)
