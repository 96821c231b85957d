"""Requests each replica has been given, as the prefix router counts them: from the moment it
chooses a replica, not from the moment Ray sends the request.

Ray Serve asks a router to choose for many pending requests before it sends any of them (it
awaits between the choice and the send), so a count that grows only as requests are sent
(`RequestRouter.on_send_request`) lags a whole burst behind: in a traced round of 16
conversations starting at once, four first turns were chosen on the same counts (3 and 4), and
three more on 7 and 4. Such a burst splits as coins fall, and a conversation's later turns stay
where its first went: a replica given 11 of 16 cannot keep them all in a 256 MiB prompt cache
(about 11 entries of ~1,000 sample tokens in fp16), and evicts one. A choice is therefore counted at once as
*reserved*; the send turns the replica's oldest reservation into an ongoing request, and a
reservation nothing was sent for (the request was cancelled, or went to another replica when
the chosen one refused it) lapses after `RESERVATION_S`. Ray-free, tested without a cluster.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Hashable

#: Seconds a reservation counts without a send (a choice is normally sent within milliseconds).
RESERVATION_S = 10.0


class RequestCounts:
    """Per replica: requests chosen for it and not yet sent (reserved), and sent and not completed
    (ongoing). One event loop uses it (the router's), so it has no lock."""

    def __init__(self, reservation_s: float = RESERVATION_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.reservation_s, self._clock = reservation_s, clock
        self._ongoing: Counter[Hashable] = Counter()
        self._reserved: dict[Hashable, deque[float]] = {}

    def load(self, replica: Hashable) -> int:
        """Requests ``replica`` has been given: ongoing and reserved."""
        return self._ongoing[replica] + len(self._live(replica))

    def reserve(self, replica: Hashable) -> None:
        """The router chose ``replica`` for a request it has not sent yet."""
        self._live(replica).append(self._clock())

    def sent(self, replica: Hashable) -> None:
        """A request went to ``replica``: its oldest reservation, if any, is now ongoing."""
        reserved = self._live(replica)
        if reserved:
            reserved.popleft()
        self._ongoing[replica] += 1

    def completed(self, replica: Hashable) -> None:
        if self._ongoing[replica] > 0:
            self._ongoing[replica] -= 1

    def forget(self, replica: Hashable) -> None:
        """A replica that is gone."""
        self._ongoing.pop(replica, None)
        self._reserved.pop(replica, None)

    def _live(self, replica: Hashable) -> deque[float]:
        """``replica``'s reservations, those older than `reservation_s` dropped."""
        reserved = self._reserved.setdefault(replica, deque())
        oldest = self._clock() - self.reservation_s
        while reserved and reserved[0] < oldest:
            reserved.popleft()
        return reserved
