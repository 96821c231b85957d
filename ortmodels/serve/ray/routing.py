"""`PrefixRouter`: Ray Serve's request router for chat deployments, by prompt prefix, then load.

Serve's default router (power of two choices) looks at queue lengths only, so a conversation's
next turn reaches a replica whose prompt cache may not hold its earlier turns, and prefills them
all again. This router, running in each handle's process (the ingress), sends a chat or text
prompt to the replica that was sent the longest start of it (`prefix.PrefixIndex`), unless that
replica's queue is more than ``imbalance`` requests longer than the shortest one's; otherwise,
and for prompts that share nothing of their own with what a replica was sent (a conversation's
first turn, whose system prompt other conversations share), it routes as power of two choices does. Each ingress
replica keeps its own index: with more than one, a conversation reaches its replica when it
passes the same ingress replica (``--ingress-replicas 1``, the default, always does).

Serve passes ``request_router_kwargs`` (`build_app` sets ``imbalance`` from ``RAY_ROUTING_IMBALANCE``)
to `initialize_state`.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from ray.serve.request_router import (
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from .prefix import PrefixIndex, choose, prompt_text

logger = logging.getLogger(__name__)

#: Where Serve finds the class (``request_router_class``), imported in the ingress's process.
ROUTER_PATH = "ortmodels.serve.ray.routing:PrefixRouter"
#: A preferred replica may have this many more requests queued than the least busy one.
DEFAULT_IMBALANCE = 8


class PrefixRouter(RequestRouter):
    """A chat's turns to the replica holding its prefix; load-based (power of two) otherwise."""

    def initialize_state(self, imbalance: int = DEFAULT_IMBALANCE, **_: Any) -> None:
        if isinstance(imbalance, bool) or not isinstance(imbalance, int) or imbalance < 0:
            raise ValueError(f"imbalance must be a whole number >= 0, not {imbalance!r}.")
        self._imbalance = imbalance
        self._index = PrefixIndex()
        logger.info("Prefix-aware routing for %s (imbalance %d)", self._deployment_id, imbalance)

    async def _queues(self, replicas: list[RunningReplica]) -> dict[ReplicaID, int]:
        """Queue lengths as the router last heard them (updated on each send and each answer);
        a replica not heard from lately (a long stream sends no news) is asked, as Serve's
        own routers ask it; one that does not answer in time counts as idle."""
        cache = self.replica_queue_len_cache
        queues = {r.replica_id: cache.get(r.replica_id) for r in replicas}
        stale = [r for r in replicas if queues[r.replica_id] is None]
        if stale:
            for replica, length in await self._probe_queue_lens(stale, 0):
                queues[replica.replica_id] = length
        return {key: length or 0 for key, length in queues.items()}

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        two = random.sample(candidate_replicas, min(2, len(candidate_replicas)))  # power of two choices
        if pending_request is None:
            return [two]
        text = prompt_text(pending_request.metadata.call_method, pending_request.args)
        if not text:
            return [two]
        by_id = {r.replica_id: r for r in candidate_replicas}
        matches = self._index.matches(text, by_id)
        best = max(matches.values())
        if not best or self._index.shared_only(text, best):  # nothing of its own on any replica
            return [two]
        queues = await self._queues(candidate_replicas)
        chosen = choose(matches, queues, self._imbalance)
        if chosen is None:
            logger.debug("By load, the replica holding the prompt is busy: matched characters %s, queues %s",
                         {k.unique_id: v for k, v in matches.items()}, {k.unique_id: v for k, v in queues.items()})
            return [two]
        # The preferred replica first; if it refuses (its queue is full), the least busy of all.
        return [[by_id[chosen]], list(candidate_replicas)]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        text = prompt_text(pending_request.metadata.call_method, pending_request.args)
        if text:
            self._index.insert(text, replica_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._index.remove(replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        gone = set(self._replica_id_set) - {r.replica_id for r in replicas}
        super().update_replicas(replicas)
        for replica_id in gone:
            self._index.remove(replica_id)
