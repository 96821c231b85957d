"""DRY ("don't repeat yourself"): a penalty on the token that would extend a repeat, as llama.cpp defines it.

If the last tokens of the context also appear earlier, followed there by token ``t``, then
choosing ``t`` now would repeat that earlier text once more. With ``n`` the length of the
longest such repeat, ``t``'s logit loses ``multiplier * base ** (n - allowed_length)`` when
``n >= allowed_length`` (llama.cpp's ``llama_sampler_dry``, from koboldcpp). Sequence breakers
(strings such as ``"\\n"``, ``":"``, ``'"'``, ``"*"``) end a repeat: the length is counted only
after the last breaker in the context, and a token that is a breaker on its own is never
penalized. Breakers are strings matched against token text the way llama.cpp does it: every
token whose text contains one is a breaker; a token whose text ends with a breaker's first
characters starts one, followed by the tokenization of the rest (at most 20 tokens).

Deviations, all at the edges: token text is each token decoded alone (so half a UTF-8 character
is U+FFFD and matches no non-ASCII breaker; llama.cpp compares bytes), and the rest of a
breaker is tokenized without special tokens being parsed out of it only as far as the
tokenizer allows.

Per request and incremental: `DryPenalty` keeps, for every earlier position, the length of the
common suffix between the context up to there and the whole context, and updates it with one
vectorised comparison per new token (the longest repeat never needs a rescan); the first call
computes it from the prompt in as many vector steps as the longest repeat is long.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: llama.cpp's default sequence breakers (``--dry-sequence-breaker``).
DEFAULT_BREAKERS: tuple[str, ...] = ("\n", ":", '"', "*")
#: llama.cpp cuts a breaker to 40 characters and its tokenized rest to 20 tokens.
MAX_BREAKER_CHARS = 40
MAX_TAIL_TOKENS = 20
#: ln(float32 max): the exponent is clamped so ``base ** exponent`` stays finite (llama.cpp's FLOAT_MAX_LOG).
_FLOAT_MAX_LOG = np.float32(88.7228391)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SequenceBreakers:
    """Breakers as token sequences: a head token and the tails that must follow it.

    ``single`` marks tokens that are a breaker on their own (a head with an empty tail);
    ``tails`` maps a head to its non-empty tails. Ids past ``single``'s size are no heads.
    """

    single: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    tails: dict[int, tuple[tuple[int, ...], ...]] = field(default_factory=dict)

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[int]], vocab_size: int = 0) -> SequenceBreakers:
        """Breakers given as token id sequences (llama.cpp's test entry point)."""
        single: set[int] = set()
        tails: dict[int, list[tuple[int, ...]]] = {}
        for sequence in sequences:
            if not sequence:
                continue
            head, tail = int(sequence[0]), tuple(int(t) for t in sequence[1:MAX_TAIL_TOKENS + 1])
            if not tail:
                single.add(head)
            elif tail not in tails.setdefault(head, []):
                tails[head].append(tail)
        size = max([vocab_size, *(i + 1 for i in single), *(i + 1 for i in tails)])
        mask = np.zeros(size, dtype=bool)
        mask[list(single)] = True
        return cls(mask, {head: tuple(found) for head, found in tails.items()})

    @classmethod
    def from_texts(cls, breakers: Iterable[str], token_texts: Sequence[str],
                   encode: Callable[[str], list[int]]) -> SequenceBreakers:
        """Breaker strings matched against each token's text, as llama.cpp processes them."""
        sequences: list[tuple[int, ...]] = []
        for breaker in breakers:
            breaker = breaker[:MAX_BREAKER_CHARS]
            if not breaker:
                continue
            first = breaker[0]
            for token_id, word in enumerate(token_texts):
                if first not in word:
                    continue
                if breaker in word:
                    sequences.append((token_id,))
                    continue
                position = word.find(first)
                while position != -1:  # the word ends with the breaker's first characters: the rest follows
                    rest = word[position:]
                    if breaker.startswith(rest):
                        sequences.append((token_id, *encode(breaker[len(rest):])[:MAX_TAIL_TOKENS]))
                    position = word.find(first, position + 1)
        return cls.from_sequences(sequences, len(token_texts))

    def is_single(self, token_ids: np.ndarray) -> np.ndarray:
        inside = token_ids < self.single.size
        out = np.zeros(token_ids.shape, dtype=bool)
        out[inside] = self.single[token_ids[inside]]
        return out


NO_BREAKERS = SequenceBreakers()


@dataclass(frozen=True)
class DryParams:
    """DRY's settings, llama.cpp's names without the ``dry_`` prefix; off unless ``multiplier > 0``.

    ``penalty_last_n``: how many of the last tokens (prompt included) are searched for repeats;
    -1 the whole context, 0 off.
    """

    multiplier: float = 0.0
    base: float = 1.75
    allowed_length: int = 2
    penalty_last_n: int = -1
    breakers: SequenceBreakers = NO_BREAKERS

    @property
    def enabled(self) -> bool:
        return self.multiplier != 0.0 and self.base >= 1.0 and self.penalty_last_n != 0


class DryPenalty:
    """One request's DRY state: its tokens and, per earlier position, the repeat that ends there."""

    def __init__(self, params: DryParams) -> None:
        self.params = params
        with np.errstate(over="ignore"):  # beyond float32's range: inf, as llama.cpp's float holds it
            self._multiplier = float(np.float32(params.multiplier))
            base = np.float32(params.base)
        self._base = float(base)
        self._max_exponent = int(_FLOAT_MAX_LOG / np.log(base)) if base > np.float32(1.000001) else 0
        self._tokens = np.zeros(64, dtype=np.int64)
        self._count = 0
        # _match[j]: length of the common suffix of tokens[:j + 1] and tokens[:count], j < count - 1
        self._match = np.zeros(0, dtype=np.int64)

    def sync(self, prompt: Sequence[int], generated: Sequence[int]) -> None:
        """Take in the tokens added since the last call (the context only ever grows)."""
        total = len(prompt) + len(generated)
        if total <= self._count:
            return
        fresh = self._count == 0
        new = list(prompt[self._count:]) + list(generated[max(0, self._count - len(prompt)):])
        if self._tokens.size < total:
            grown = np.zeros(max(total, 2 * self._tokens.size), dtype=np.int64)
            grown[:self._count] = self._tokens[:self._count]
            self._tokens = grown
        self._tokens[self._count:total] = new
        if fresh:
            self._count = total
            self._match = self._from_scratch()
            return
        for _ in new:
            self._count += 1
            self._match = self._extended()

    def _from_scratch(self) -> np.ndarray:
        """Match lengths for the current end, in as many vector steps as the longest repeat."""
        end = self._count - 1
        tokens = self._tokens[:self._count]
        match = np.zeros(end, dtype=np.int64)
        alive = np.flatnonzero(tokens[:end] == tokens[end])
        length = 1
        while alive.size:
            match[alive] = length
            alive = alive[alive >= length]
            alive = alive[tokens[alive - length] == tokens[end - length]]
            length += 1
        return match

    def _extended(self) -> np.ndarray:
        """Match lengths after one more token: a repeat ending at j extends the one that ended at j - 1."""
        end = self._count - 1
        tokens = self._tokens[:self._count]
        shifted = np.empty(end, dtype=np.int64)
        shifted[0] = 0
        shifted[1:] = self._match
        return np.where(tokens[:end] == tokens[end], shifted + 1, 0)

    def penalties(self) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, amounts to subtract from their logits) for the context as synced."""
        params = self.params
        none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
        count = self._count
        window = count if params.penalty_last_n < 0 else min(count, params.penalty_last_n)
        if window <= params.allowed_length:
            return none
        start = count - window
        tokens = self._tokens[start:count]
        limit = self._repeat_limit(tokens)
        if limit < params.allowed_length:
            return none
        # the repeat ending at window position i: within the window, and after the last breaker
        repeat = np.minimum(np.minimum(self._match[start:count - 1], np.arange(1, window)), limit)
        chosen = repeat >= params.allowed_length
        if not chosen.any():
            return none
        ids, lengths = tokens[1:][chosen], repeat[chosen]
        keep = ~params.breakers.is_single(ids)
        ids, lengths = ids[keep], lengths[keep]
        if not ids.size:
            return none
        order = np.lexsort((lengths, ids))  # by id, then length: the last of each id is its longest
        ids, lengths = ids[order], lengths[order]
        last = np.append(ids[1:] != ids[:-1], True)
        ids, lengths = ids[last], lengths[last]
        exponent = lengths - params.allowed_length
        if self._max_exponent > 0:
            exponent = np.minimum(exponent, self._max_exponent)
        with np.errstate(over="ignore"):  # an infinite penalty: `apply` holds the logit at float32's lowest
            return ids, self._multiplier * np.power(self._base, exponent.astype(np.float64))

    def _repeat_limit(self, tokens: np.ndarray) -> int:
        """How many tokens follow the last breaker in the window (all of them if there is none)."""
        breakers = self.params.breakers
        window = tokens.size
        heads = breakers.is_single(tokens)
        if breakers.tails:
            heads |= np.isin(tokens, np.fromiter(breakers.tails, dtype=np.int64))
        for position in np.flatnonzero(heads)[::-1]:
            after = window - 1 - int(position)
            head = int(tokens[position])
            longest = 0 if head < breakers.single.size and breakers.single[head] else -1
            for tail in breakers.tails.get(head, ()):
                if longest < len(tail) <= after and tuple(tokens[position + 1:position + 1 + len(tail)]) == tail:
                    longest = len(tail)
            if longest >= 0:
                return after - longest
        return window

    def apply(self, logits: np.ndarray) -> None:
        """Subtract the penalties from a float32 row in place; a finite logit stays finite (a grammar
        that allows only penalized tokens still chooses among them)."""
        ids, amounts = self.penalties()
        if not ids.size:
            return
        inside = ids < logits.size
        ids, amounts = ids[inside], amounts[inside]
        scores = logits[ids].astype(np.float64)
        logits[ids] = np.where(np.isfinite(scores), np.clip(scores - amounts, -_FLOAT32_MAX, _FLOAT32_MAX), scores)


class BreakerCache:
    """Sequence breakers per breaker list for one tokenizer: the vocabulary is scanned once per list.

    Token texts are decoded on first use (tens of milliseconds at a 49k vocabulary); the last
    few lists are kept, so the default list costs nothing after the first request that asks.
    """

    def __init__(self, tokenizer: Any, keep: int = 16) -> None:
        self._tokenizer = tokenizer
        self._keep = keep
        self._texts: list[str] | None = None
        self._built: OrderedDict[tuple[str, ...], SequenceBreakers] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, breakers: Sequence[str]) -> SequenceBreakers:
        key = tuple(breakers)
        with self._lock:
            found = self._built.get(key)
            if found is not None:
                self._built.move_to_end(key)
                return found
            if self._texts is None:
                size = self._tokenizer.get_vocab_size(with_added_tokens=True)
                self._texts = self._tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
            built = SequenceBreakers.from_texts(
                key, self._texts, lambda text: self._tokenizer.encode(text, add_special_tokens=False).ids)
            self._built[key] = built
            while len(self._built) > self._keep:
                self._built.popitem(last=False)
            return built
