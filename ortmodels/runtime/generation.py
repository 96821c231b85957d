"""Token choice and text assembly for a decode loop: sampling, stop strings, safe streaming.

Pure numpy and strings: no session here, so each piece is testable on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen; ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL-style penalty as transformers applies it: divide positive, multiply negative logits."""
    if penalty == 1.0 or seen.size == 0:
        return logits
    logits = logits.copy()
    scores = logits[seen]
    logits[seen] = np.where(scores > 0, scores / penalty, scores * penalty)
    return logits


def choose_token(
    logits: np.ndarray, params: SamplingParams, seen: np.ndarray, rng: np.random.Generator
) -> int:
    """The next token id from one row of logits."""
    logits = apply_repetition_penalty(logits.astype(np.float32, copy=False), seen, params.repetition_penalty)
    if params.greedy:
        return int(np.argmax(logits))
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.size:
        kth = np.partition(logits, -params.top_k)[-params.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(probs.size, p=probs))


@dataclass
class TextAssembler:
    """Turns generated token ids into text pieces that are safe to show.

    A piece is released only when it ends on a whole UTF-8 character and cannot be the
    start of a stop string; a stop string found anywhere in the text ends generation
    and is never released, even when it spans several tokens.
    """

    decode: Callable[[list[int]], str]
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    released: str = ""
    stopped: bool = False

    def add(self, token_id: int) -> str:
        """Add one token; returns the newly releasable text (maybe empty)."""
        self.ids.append(token_id)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
            return ""
        cut = self._stop_index(text)
        if cut is not None:
            self.stopped = True
            return self._release(text[:cut])
        return self._release(text[: len(text) - self._held_back(text)])

    def flush(self) -> str:
        """At the end of generation: everything not yet released, up to any stop string."""
        if self.stopped:
            return ""
        text = self.decode(self.ids)
        cut = self._stop_index(text)
        if cut is not None:
            self.stopped = True
            text = text[:cut]
        return self._release(text)

    def _release(self, text: str) -> str:
        if len(text) <= len(self.released) or not text.startswith(self.released):
            return ""
        piece = text[len(self.released) :]
        self.released = text
        return piece

    def _stop_index(self, text: str) -> int | None:
        hits = [i for s in self.stop if (i := text.find(s, max(0, len(self.released) - len(s)))) >= 0]
        return min(hits) if hits else None

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest
