"""`PrefixRouter`: Ray Serve's request router for chat deployments, by prompt prefix, then load.

Serve's default router (power of two choices) looks at queue lengths only, so a conversation's
next turn reaches a replica whose prompt cache may not hold its earlier turns, and prefills them
all again. This router, running in each handle's process (the ingress), sends a chat or text
prompt to the replica that was sent the longest start of it (`prefix.PrefixIndex`), unless that
replica has more than ``imbalance`` requests more than the least busy one; otherwise,
and for prompts that share nothing of their own with what a replica was sent (a conversation's
first turn, whose system prompt other conversations share), it routes as power of two choices
does. Requests are counted by the router itself (`load.RequestCounts`), from the moment it
chooses a replica until the request completes, not read from Serve's cached queue lengths, which
a replica's reply (its count when it accepted a request) can set back during a burst of first
turns, nor only from the send, which Serve makes after choosing for the whole burst. Each ingress
replica keeps its own index: with more than one, a conversation reaches its replica when it
passes the same ingress replica (``--ingress-replicas 1``, the default, always does), and each
counts only the requests it sent.

Serve passes ``request_router_kwargs`` (`build_app` sets ``imbalance`` from ``MODEL_RAY_ROUTING_IMBALANCE``)
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

from ...config import DEFAULT_RAY_ROUTING_IMBALANCE
from .load import RequestCounts
from .prefix import PrefixIndex, choose, prompt_text

logger = logging.getLogger(__name__)

#: Where Serve finds the class (``request_router_class``), imported in the ingress's process.
ROUTER_PATH = "ortmodels.serve.ray.routing:PrefixRouter"


class PrefixRouter(RequestRouter):
    """A chat's turns to the replica holding its prefix; load-based (power of two) otherwise."""

    def initialize_state(self, imbalance: int = DEFAULT_RAY_ROUTING_IMBALANCE, **_: Any) -> None:
        if isinstance(imbalance, bool) or not isinstance(imbalance, int) or imbalance < 0:
            raise ValueError(f"imbalance must be a whole number >= 0, not {imbalance!r}.")
        self._imbalance = imbalance
        self._index = PrefixIndex()
        self._counts = RequestCounts()
        """Requests this router chose each replica for (reserved, then ongoing) and that have not completed."""
        logger.info("Prefix-aware routing for %s (imbalance %d)", self._deployment_id, imbalance)

    def _by_load(self, candidates: list[RunningReplica]) -> list[list[RunningReplica]]:
        """Power of two choices on this router's own count of each replica's requests (exact for
        what it chose; Serve's cached queue lengths lag behind a burst), then any replica."""
        two = random.sample(candidates, min(2, len(candidates)))
        return [[min(two, key=lambda r: self._counts.load(r.replica_id))], list(candidates)]

    def _reserved(self, ranks: list[list[RunningReplica]]) -> list[list[RunningReplica]]:
        """``ranks``, its first choice counted at once: Serve chooses for a whole burst before it sends."""
        self._counts.reserve(ranks[0][0].replica_id)
        return ranks

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is None:  # nothing to send: nothing reserved
            return self._by_load(candidate_replicas)
        text = prompt_text(pending_request.metadata.call_method, pending_request.args)
        if not text:
            return self._reserved(self._by_load(candidate_replicas))
        by_id = {r.replica_id: r for r in candidate_replicas}
        matches = self._index.matches(text, by_id)
        best = max(matches.values())
        if not best or self._index.shared_only(text, best):  # nothing of its own on any replica
            return self._reserved(self._by_load(candidate_replicas))
        queues = {key: self._counts.load(key) for key in by_id}
        chosen = choose(matches, queues, self._imbalance)
        if chosen is None:
            logger.debug("By load, the replica holding the prompt is busy: matched characters %s, requests %s",
                         {k.unique_id: v for k, v in matches.items()}, {k.unique_id: v for k, v in queues.items()})
            return self._reserved(self._by_load(candidate_replicas))
        # The preferred replica first; if it refuses (its queue is full), the least busy of all.
        return self._reserved([[by_id[chosen]], list(candidate_replicas)])

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)
        self._counts.sent(replica_id)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        super().on_request_completed(replica_id, internal_request_id)
        self._counts.completed(replica_id)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        text = prompt_text(pending_request.metadata.call_method, pending_request.args)
        if text:
            self._index.insert(text, replica_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._index.remove(replica_id)
        self._counts.forget(replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        gone = set(self._replica_id_set) - {r.replica_id for r in replicas}
        super().update_replicas(replicas)
        for replica_id in gone:
            self._index.remove(replica_id)
            self._counts.forget(replica_id)
