"""How an export reports its steps; the CLI shows them, the library only logs them."""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class Progress(Protocol):
    def step(self, message: str) -> None:
        """A new step has started."""


class LogProgress:
    """The default: each step goes to the log."""

    def __init__(self, name: str) -> None:
        self.name = name

    def step(self, message: str) -> None:
        logger.info("%s: %s", self.name, message)
