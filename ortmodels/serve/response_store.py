"""The responses ``/v1/responses`` keeps, so a later request can continue one
(``previous_response_id``) and a client can read or delete it by id.

In memory, per server process (an Ingress of its own on Ray), bounded by count
(``MODEL_RESPONSES_STORE``) and by bytes (``MODEL_RESPONSES_STORE_BYTES``: each entry holds its
whole conversation, so a long chain of turns grows with the square of its length): the least
recently used one is dropped first. Each entry holds the response as it was answered and its
conversation as the chat service's message dicts (the instructions left out: OpenAI applies
only the new request's). An unknown ``previous_response_id`` is OpenAI's 400
(``previous_response_not_found``); an unknown id read or deleted by path is a 404.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

logger = logging.getLogger(__name__)

#: The store's size when no setting gives one (`Settings.model_responses_store`'s default).
DEFAULT_CAPACITY = 256

#: The store's bytes when no setting gives them (`Settings.model_responses_store_bytes`' default).
DEFAULT_BYTES = 64 << 20


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]
    """The response object as the client got it."""
    messages: list[dict[str, Any]]
    """The conversation up to and including this response's output, without instructions."""
    nbytes: int = field(init=False)
    """What it holds, counted as its UTF-8 JSON (the text and the structure around it)."""

    def __post_init__(self) -> None:
        text = json.dumps([self.body, self.messages], ensure_ascii=False, separators=(",", ":"), default=str)
        object.__setattr__(self, "nbytes", len(text.encode("utf-8", "surrogatepass")))


class ResponseStore:
    """A bounded LRU of `StoredResponse` by id, by count and bytes (used from the event loop only)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def enabled(self) -> bool:
        """Whether anything is kept (``MODEL_RESPONSES_STORE`` or ``_BYTES`` 0 keeps nothing)."""
        return self.capacity > 0 and self.max_bytes > 0

    def put(self, stored: StoredResponse) -> bool:
        """Keep ``stored`` (dropping the least recently used to make room); False when it is not
        kept, so the response can say so: the store is off, or it alone is over the byte bound."""
        if not self.enabled:
            return False
        if stored.nbytes > self.max_bytes:
            logger.info("Not keeping response %s: its %d bytes are more than MODEL_RESPONSES_STORE_BYTES (%d)",
                        stored.body["id"], stored.nbytes, self.max_bytes)
            return False
        self._drop(stored.body["id"])
        self._items[stored.body["id"]] = stored
        self._nbytes += stored.nbytes
        while len(self._items) > self.capacity or self._nbytes > self.max_bytes:
            self._drop(next(iter(self._items)))
        return True

    def _drop(self, response_id: str) -> None:
        old = self._items.pop(response_id, None)
        if old is not None:
            self._nbytes -= old.nbytes

    def _why_missing(self) -> str:
        return ("it was made with store: false, deleted, made by another server process, or dropped as this server "
                f"keeps only the most recently used (MODEL_RESPONSES_STORE: {self.capacity} responses, "
                f"MODEL_RESPONSES_STORE_BYTES: {self.max_bytes} bytes)")

    def get(self, response_id: str) -> StoredResponse:
        """The stored response, or a 404 that says why a response may be missing."""
        stored = self._items.get(response_id)
        if stored is None:
            raise ApiError(404, f"No response with id {response_id!r:.80} is stored here: {self._why_missing()}.",
                           code="not_found")
        self._items.move_to_end(response_id)
        return stored

    def previous(self, response_id: str) -> StoredResponse:
        """The response a request continues (``previous_response_id``), or OpenAI's 400 for one not found."""
        try:
            return self.get(response_id)
        except ApiError:
            raise ApiError(400, f"Previous response with id {response_id!r:.80} not found: {self._why_missing()}.",
                           param="previous_response_id", code="previous_response_not_found") from None

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        self._drop(response_id)
