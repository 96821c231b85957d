"""The responses ``/v1/responses`` keeps, so a later request can continue one
(``previous_response_id``) and a client can read or delete it by id.

In memory, per server process (an Ingress of its own on Ray), bounded by count
(``MODEL_RESPONSES_STORE``): the least recently used one is dropped first. Each entry holds the
response as it was answered and its conversation as the chat service's message dicts (the
instructions left out: OpenAI applies only the new request's).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

#: The store's size when no setting gives one (`Settings.model_responses_store`'s default).
DEFAULT_CAPACITY = 256


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]
    """The response object as the client got it."""
    messages: list[dict[str, Any]]
    """The conversation up to and including this response's output, without instructions."""


class ResponseStore:
    """A bounded LRU of `StoredResponse` by id (used from the event loop only)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, stored: StoredResponse) -> None:
        if self.capacity <= 0:
            return
        self._items[stored.body["id"]] = stored
        self._items.move_to_end(stored.body["id"])
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, response_id: str, param: str | None = None) -> StoredResponse:
        """The stored response, or a 404 that says why a response may be missing."""
        stored = self._items.get(response_id)
        if stored is None:
            raise ApiError(404, f"No response with id {response_id!r:.80} is stored here: it was made with "
                           "store: false, deleted, made by another server process, or dropped as this server keeps "
                           f"only the {self.capacity} most recently used (MODEL_RESPONSES_STORE).",
                           param=param, code="previous_response_not_found" if param else "not_found")
        self._items.move_to_end(response_id)
        return stored

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        del self._items[response_id]
