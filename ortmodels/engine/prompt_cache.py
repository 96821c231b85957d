"""The KV cache of earlier prompts, kept so a later prompt with the same start skips it.

A chat's next turn repeats the whole conversation so far; its prompt shares a long prefix
(system prompt, earlier turns) with the last turn's. Prefilling only the new tokens on top
of a cached prefill gives exactly the logits of one full prefill (max diff 0.0 in fp32 and
int4), so no other graph is needed. A cached sequence longer than the shared prefix is cut
to it (the cache is sliced along the sequence axis), and at least `MIN_PREFILL` prompt
tokens are always left to prefill: a one-token prefill takes the one-row kernels, whose
logits differ from a full prefill's (0.47 in int4, 0.69 in int8, 3e-5 in fp32 on the
sample, enough to change an int4 answer), while two or more tokens give exactly its logits.

Only caches made by prefill are kept, not the positions a request's decode steps added:
one-row decode steps compute keys/values that differ from a prefill's (on the sample, up
to 2e-5 in fp32 and 0.7 in int4, whose one-row MatMulNBits takes another kernel), and
reusing those changed int4 greedy tokens in a 5-turn chat. So a turn re-prefills the
previous answer, and the cached prefix gives the very tokens no cache gives.

Entries are bounded in bytes and dropped least recently used first; 0 bytes turns it off.
Only the engine's scheduler thread uses it, so it has no lock.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Prompt tokens always prefilled, cache or not: a multi-row prefill reproduces a full one exactly.
MIN_PREFILL = 2


@dataclass
class _Entry:
    ids: np.ndarray  # int64, the tokens whose keys/values ``past`` holds
    past: list[np.ndarray]  # [1, kv, len(ids), head] per cache input

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.past) + self.ids.nbytes


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading ids two arrays share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PromptCache:
    """Prefilled prompts' caches by their token ids, LRU within ``max_bytes``."""

    def __init__(self, max_bytes: int = 0) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigurationError(
                f"prompt cache size must be a whole number of bytes >= 0 (0 = off), not {max_bytes!r}."
            )
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._nbytes = 0  # kept as entries come and go: other threads read it (memory figures)
        self._next = 0
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held; safe to read from any thread (a number, not a walk over the entries)."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt_ids: list[int]) -> tuple[int, list[np.ndarray] | None]:
        """(n, cache of the first n prompt tokens) for the longest usable cached prefix, else (0, None)."""
        if not self._entries:
            return 0, None
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        best_key, best = None, 0
        for key, entry in self._entries.items():
            shared = min(common_prefix(entry.ids, prompt), len(prompt) - MIN_PREFILL)
            if shared > best:
                best_key, best = key, shared
        if best_key is None:
            self.misses += 1
            return 0, None
        self.hits += 1
        self._entries.move_to_end(best_key)
        entry = self._entries[best_key]
        return best, [np.ascontiguousarray(a[:, :, :best]) for a in entry.past]

    def store(self, ids: list[int], past: list[np.ndarray]) -> None:
        """Keep ``past``, the prefill-made cache of ``ids`` (arrays nobody writes to afterwards)."""
        if not self.max_bytes or not ids:
            return
        entry = _Entry(np.asarray(ids, dtype=np.int64), past)
        if entry.nbytes > self.max_bytes:
            logger.debug("Not caching a %d-token sequence: %d bytes > the cache's %d", len(ids), entry.nbytes,
                         self.max_bytes)
            return
        for key, old in list(self._entries.items()):
            shared = common_prefix(old.ids, entry.ids)
            if shared == len(entry.ids):  # already covered by a longer entry
                self._entries.move_to_end(key)
                return
            if shared == len(old.ids):  # the new entry covers the old one
                del self._entries[key]
                self._nbytes -= old.nbytes
        self._entries[self._next] = entry
        self._next += 1
        self._nbytes += entry.nbytes
        while self._nbytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._nbytes -= dropped.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0
