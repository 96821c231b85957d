"""Which replica holds a prompt's start: the prefix index behind Ray's prefix-aware routing.

Each replica keeps its own prompt cache (`ortmodels.engine.prompt_cache`), so a chat's next
turn prefills only its new tokens if it reaches the replica that answered the last one. The
router (`ortmodels.serve.ray.routing`) remembers, per replica, the prompts it sent there as
chains of block hashes (a block is `BLOCK_CHARS` characters; a block's hash covers every
block before it, as vLLM's and SGLang's caches key theirs), and `choose` picks the replica
with the longest match. A match that is only what the prompt shares with other prompts (a
system prompt another conversation went on from) does not count: such a prompt, the first
turn of a conversation, goes by load, so conversations spread over the replicas from their
first turn; replicas that match alike are told apart by load, and so are the replicas a
busy preferred one falls back to. Ray-free, so the policy is tested without a cluster.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

R = TypeVar("R", bound=Hashable)

#: Characters per block: matches are counted in whole blocks (a short prompt matches nothing).
BLOCK_CHARS = 128
#: Blocks remembered over all replicas (about 25 MB of prompt text at 128 characters a block).
MAX_BLOCKS = 200_000


def prompt_text(method: str, args: Sequence[Any]) -> str | None:
    """The text a replica's prompt cache keys a request by, from a `RemoteModel` call's arguments
    (``model_id, messages, options`` for ``achat_events``; ``model_id, prompt, options`` for
    ``atext_events``); ``None`` for any other call. Each message is written as sorted JSON, so a
    conversation's earlier turns are a prefix of its later ones, as their token prompts are."""
    if method == "achat_events" and len(args) > 1 and isinstance(args[1], list):
        return "".join(json.dumps(m, sort_keys=True, default=str) for m in args[1])
    if method == "atext_events" and len(args) > 1 and isinstance(args[1], str):
        return args[1]
    return None


def block_hashes(text: str, block: int = BLOCK_CHARS) -> list[int]:
    """One hash per whole block of ``text``, each covering the blocks before it."""
    hashes, previous = [], 0
    for start in range(0, len(text) - block + 1, block):
        previous = hash((previous, text[start:start + block]))
        hashes.append(previous)
    return hashes


class PrefixIndex:
    """Per replica, the block chains of the prompts routed to it; least recently used blocks
    forgotten beyond ``max_blocks``. One event loop uses it (the router's), so it has no lock."""

    def __init__(self, block: int = BLOCK_CHARS, max_blocks: int = MAX_BLOCKS) -> None:
        self.block, self.max_blocks = block, max_blocks
        self._holders: OrderedDict[int, set[Hashable]] = OrderedDict()
        self._next: dict[int, set[int]] = {}  # block → up to two blocks prompts continued it with

    def __len__(self) -> int:
        return len(self._holders)

    def matches(self, text: str, replicas: Iterable[R]) -> dict[R, int]:
        """Characters of ``text``'s start each of ``replicas`` was sent (in whole blocks)."""
        found = {r: 0 for r in replicas}
        hashes = block_hashes(text, self.block)
        alive = set(found)
        for depth, key in enumerate(hashes, start=1):
            holders = self._holders.get(key)
            if not holders:
                break
            alive &= holders
            if not alive:
                break
            for replica in alive:
                found[replica] = depth * self.block
        return found

    def insert(self, text: str, replica: Hashable) -> None:
        """``replica`` now holds ``text``'s blocks (its prompt cache will, once it answers). The
        first blocks are touched last, so the least recently used ends of chains go first."""
        hashes = block_hashes(text, self.block)
        for depth in range(len(hashes) - 1, -1, -1):
            key = hashes[depth]
            holders = self._holders.get(key)
            if holders is None:
                holders = self._holders[key] = set()
            else:
                self._holders.move_to_end(key)
            holders.add(replica)
            if depth + 1 < len(hashes):
                continued = self._next.setdefault(key, set())
                if len(continued) < 2:  # two are enough to know another prompt went on differently
                    continued.add(hashes[depth + 1])
        while len(self._holders) > self.max_blocks:
            key, _ = self._holders.popitem(last=False)
            self._next.pop(key, None)

    def shared_only(self, text: str, chars: int) -> bool:
        """Whether ``text``'s first ``chars`` characters (a match) are only what it shares with
        other prompts, which went on differently (a system prompt before another conversation),
        rather than a prompt of its own it extends (its conversation's last turn)."""
        hashes = block_hashes(text, self.block)
        depth = chars // self.block
        if depth == 0 or depth > len(hashes):
            return False
        ours = hashes[depth] if depth < len(hashes) else None
        return bool(self._next.get(hashes[depth - 1], set()) - {ours})

    def remove(self, replica: Hashable) -> None:
        """Forget a replica that is gone (its cache went with it)."""
        for key in [k for k, holders in self._holders.items() if replica in holders]:
            holders = self._holders[key]
            holders.discard(replica)
            if not holders:
                del self._holders[key]
                self._next.pop(key, None)


def choose(matches: Mapping[R, int], queues: Mapping[R, int], imbalance: int) -> R | None:
    """The replica to send a prompt to for its cache, or ``None``: route by load.

    The longest match wins; replicas matching alike are told apart by their queue. A preferred
    replica whose queue is more than ``imbalance`` longer than the shortest one's is passed over
    (busy), and so is every match when none is longer than a block's worth of nothing.
    """
    best = max(matches.values(), default=0)
    if best <= 0:
        return None
    least = min((queues.get(r, 0) for r in matches), default=0)
    holders = [r for r, chars in matches.items() if chars == best and queues.get(r, 0) - least <= imbalance]
    if not holders:
        return None
    random.shuffle(holders)  # equal queues: either, as power of two choices would
    return min(holders, key=lambda r: queues.get(r, 0))
