"""Generated token ids → text pieces that are safe to show, at a constant cost per token.

Decoding every id again for each new token costs O(n) per token; here each token decodes
a short window instead: the ids since the last point where the text ended on a whole
character. The new text is what the window decodes to beyond what its first part already
gave, so tokenizers that drop a leading space from the first token of a decode (SentencePiece)
still come out exactly as one decode of all ids would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_REPLACEMENT = "\ufffd"  # what a decoder makes of half a UTF-8 character
#: A UTF-8 character has at most 4 bytes, so at most 3 trailing byte tokens hold half of one.
_MAX_PARTIAL_TOKENS = 3


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
    stopped: bool = False
    stopped_by: str | None = None
    """The stop string that ended generation (the first in ``stop`` of those found earliest)."""
    _parts: list[str] = field(default_factory=list, repr=False)
    _tail: str = field(default="", repr=False)  # the last released characters a stop string may reach back into
    _pending: str = field(default="", repr=False)  # decoded, whole characters, not released yet
    _start: int = field(default=0, repr=False)  # window start: a token boundary on a whole character
    _read: int = field(default=0, repr=False)  # ids before this are in _tail/_pending already

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, stop: tuple[str, ...] = ()) -> TextAssembler:
        """An assembler over a `tokenizers.Tokenizer`, special tokens left out of the text."""
        return cls(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), stop)

    @property
    def released(self) -> str:
        """All text released so far."""
        return "".join(self._parts)

    def add(self, token_id: int) -> str:
        """Add one token; returns the newly releasable text (maybe empty)."""
        self.ids.append(token_id)
        new = self._decode_window(final=False)
        if new is None:  # half a UTF-8 character: wait for the rest
            return ""
        self._pending += new
        return self._settle(final=False)

    def flush(self) -> str:
        """At the end of generation: everything not yet released, up to any stop string."""
        if self.stopped:
            return ""
        self._pending += self._decode_window(final=True) or ""
        return self._settle(final=True)

    def _decode_window(self, final: bool) -> str | None:
        window = self.ids[self._start :]
        text = self.decode(window)
        if text.endswith(_REPLACEMENT):
            if not final:
                return None
            text = self._whole_characters(window, text)
        known = self.decode(self.ids[self._start : self._read]) if self._read > self._start else ""
        self._start, self._read = self._read, len(self.ids)
        return text.removeprefix(known)

    def _whole_characters(self, window: list[int], text: str) -> str:
        """At the end (``max_tokens`` reached inside a character): the text without the last
        tokens' half character, which is no text; as it is where a token of its own is one."""
        for drop in range(1, min(_MAX_PARTIAL_TOKENS, len(window)) + 1):
            shorter = self.decode(window[:-drop])
            if not shorter.endswith(_REPLACEMENT):
                return shorter
        return text

    def _settle(self, final: bool) -> str:
        """Release what is safe from ``_pending``; look back into ``_tail`` for stop strings."""
        window = self._tail + self._pending
        hit = self._stop_hit(window, len(self._tail))
        if hit is not None:
            cut, self.stopped_by = hit
            self.stopped = True
            return self._release(max(0, cut - len(self._tail)))
        held = 0 if final else self._held_back(window)
        return self._release(max(0, len(self._pending) - held))

    def _release(self, count: int) -> str:
        piece, self._pending = self._pending[:count], self._pending[count:]
        if piece:
            self._parts.append(piece)
            reach = max((len(s) for s in self.stop), default=0)
            self._tail = (self._tail + piece)[-reach:] if reach else ""
        return piece

    def _stop_hit(self, window: str, released: int) -> tuple[int, str] | None:
        """Where the earliest stop string in ``window`` starts, and which one it is."""
        hits = [(i, s) for s in self.stop if (i := window.find(s, max(0, released - len(s)))) >= 0]
        return min(hits, key=lambda hit: hit[0]) if hits else None

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest
