"""Reasoning models' ``<think>…</think>``: the reasoning told apart from the answer, token by token.

Reasoning models (Qwen3, DeepSeek-R1 distills, SmolLM3) write their reasoning between two
tags before the answer; some templates open the tag in the prompt itself (DeepSeek-R1's
``<｜Assistant｜><think>\\n``, Qwen3 thinking-only checkpoints), so the output starts inside it.
Two small pieces, one per side of the decode loop:

- `ReasoningSplitter` reads the generated text as it streams and splits it into reasoning
  and answer, with a tag cut across text deltas held back until it is whole. A ``<think>``
  is read as the start of reasoning only at the very start of the output (whitespace
  aside): a tag the answer mentions later is answer text. An empty block the template
  wrote into the prompt (Qwen3 with ``enable_thinking=False``) is never output, so never
  reported (vllm#19839: with thinking off, the answer landed in ``reasoning_content``).
- `ReasoningGate`, a logits processor, keeps a grammar (structured output, a forced tool
  call) off the reasoning: free text up to the closing tag token, then the grammar; and
  cuts the reasoning at a budget by forcing the closing tag token. It needs both tags to be
  single tokens (`think_tokens`), as Qwen3's and DeepSeek-R1's are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .sampling import LogitsProcessor

ReasoningFormat = Literal["think-tags", "none"]

#: Each reasoning format's opening and closing tags.
TAGS: dict[str, tuple[str, str]] = {"think-tags": ("<think>", "</think>")}


def detect_reasoning(template: str) -> ReasoningFormat:
    """The reasoning format a chat template (its source) speaks: ``think-tags`` when it mentions
    ``<think>`` or ``</think>`` (it writes them, or cuts them out of earlier turns), else ``none``."""
    open_tag, close_tag = TAGS["think-tags"]
    return "think-tags" if open_tag in template or close_tag in template else "none"


@dataclass(frozen=True)
class ThinkTokens:
    """The ids of a reasoning format's two tags, each a single token of the vocabulary."""

    open_id: int
    close_id: int


def think_tokens(tokenizer: Any, reasoning_format: str) -> ThinkTokens | None:
    """The tags' token ids, or ``None`` when the format has no tags or either is not one token
    (then a grammar starts at the first token and no reasoning budget can be enforced)."""
    tags = TAGS.get(reasoning_format)
    if tags is None:
        return None
    ids = [tokenizer.token_to_id(tag) for tag in tags]
    if any(i is None for i in ids):
        return None
    return ThinkTokens(int(ids[0]), int(ids[1]))


def opens_reasoning(prompt: str, reasoning_format: str) -> bool:
    """Whether a rendered prompt ends inside an open reasoning block (its last tag opens one),
    so the output starts as reasoning."""
    tags = TAGS.get(reasoning_format)
    return tags is not None and prompt.rstrip().endswith(tags[0])


_State = Literal["open", "start", "reasoning", "after", "answer"]


class ReasoningSplitter:
    """One answer's text split into reasoning and answer as it streams (`feed`, then `flush`).

    Whitespace around the reasoning and between the closing tag and the answer is dropped, as
    the templates write it back (``<think>\\n…\\n</think>\\n\\n``). Text without the tags is all
    answer, unless the prompt opened the block (``inside``): then it is reasoning up to the
    closing tag, all of it if the output ends first (``max_tokens``).
    """

    def __init__(self, reasoning_format: str, *, inside: bool = False) -> None:
        self.open_tag, self.close_tag = TAGS[reasoning_format]
        self.state: _State = "reasoning" if inside else "start"
        self.opened = inside
        """The block was open at some point (the prompt's or the output's opening tag)."""
        self._held = ""
        self._lead = True  # the reasoning's leading whitespace is still to drop

    @property
    def in_reasoning(self) -> bool:
        return self.state == "reasoning"

    @property
    def closed(self) -> bool:
        """The block was opened and its closing tag has been read."""
        return self.opened and self.state != "reasoning"

    def feed(self, text: str) -> tuple[str, str]:
        """New text → (new reasoning, new answer); part of it may be held until a tag is whole."""
        self._held += text
        return self._drain(final=False)

    def flush(self) -> tuple[str, str]:
        """The output ended: everything held, as what it was read as."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> tuple[str, str]:
        reasoning, answer = "", ""
        while True:
            held = self._held
            if self.state == "start":
                stripped = held.lstrip()
                if stripped.startswith(self.open_tag):
                    self._held, self.state, self.opened = stripped[len(self.open_tag):], "reasoning", True
                    continue
                if not final and self.open_tag.startswith(stripped):
                    break  # blank so far, or the tag's first characters: wait for more
                self.state = "answer"
                continue
            if self.state == "reasoning":
                if self._lead:
                    held = self._held = held.lstrip()
                    if not held:
                        break
                    self._lead = False
                end = held.find(self.close_tag)
                if end >= 0:
                    reasoning += held[:end].rstrip()
                    self._held, self.state = held[end + len(self.close_tag):], "after"
                    continue
                safe = held if final else held[:len(held) - _partial(held, self.close_tag)]
                out = safe.rstrip()  # trailing blanks wait: they may end the reasoning
                reasoning += out
                self._held = "" if final else held[len(out):]
                break
            if self.state == "after":
                held = self._held = held.lstrip()
                if not held and not final:
                    break
                self.state = "answer"
                continue
            answer += held
            self._held = ""
            break
        return reasoning, answer


def _partial(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that begins ``tag`` (a tag cut across deltas)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ReasoningGate:
    """A request's logits processor while it may reason: reasoning first, then ``answer`` (a
    grammar's processor, or none), with the reasoning cut at ``budget`` tokens.

    Where the output starts: ``inside`` (the prompt opened the block) as reasoning;
    ``force_open`` (thinking asked for, the template left the opening to the model) with the
    opening tag, forced; ``may_open`` with the model's choice of opening the block or
    answering at once (the answer's grammar masks the first token, the opening tag let
    through); else as the answer. At ``budget`` reasoning tokens (0: none) the closing tag is
    the only token allowed. ``ban_open``: the opening tag is never chosen in the answer.

    The answer's grammar starts after the closing tag, and while reasoning under a grammar
    the end-of-sequence tokens are banned, so the answer comes. A grammar that writes its own
    block (``whole``: its source names the opening tag) holds every token instead, and the
    budget then forces the closing tag only where the grammar allows it.
    """

    def __init__(self, tokens: ThinkTokens, *, inside: bool, budget: int | None, force_open: bool = False,
                 may_open: bool = True, answer: LogitsProcessor | None = None, whole: bool = False,
                 end_ids: tuple[int, ...] = (), ban_open: bool = False) -> None:
        self.tokens, self.budget, self.answer = tokens, budget, answer
        self.whole = whole and answer is not None
        self.end_ids = list(end_ids)
        self.ban_open = ban_open
        self.state: _State = ("reasoning" if inside else "open" if force_open and not self.whole
                              else "start" if may_open else "answer")
        self.spent = 0
        """Reasoning tokens chosen so far (the tags not counted)."""

    @property
    def active(self) -> bool:
        """A grammar holds the text now (the request's stop strings no longer cut it)."""
        held = self.whole or self.state == "answer"
        return held and bool(getattr(self.answer, "active", False))

    def mask(self, logits: np.ndarray) -> None:
        open_id, close_id = self.tokens.open_id, self.tokens.close_id
        deferred = self.answer if not self.whole else None
        if self.whole and self.answer is not None:
            self.answer.mask(logits)
        if self.state == "open":
            _only(logits, open_id)
        elif self.state == "start":
            if deferred is not None:
                kept = logits[open_id]
                deferred.mask(logits)
                logits[open_id] = kept
        elif self.state == "reasoning":
            if self.budget is not None and self.spent >= self.budget and logits[close_id] > -np.inf:
                _only(logits, close_id)
            elif deferred is not None and self.end_ids:
                logits[self.end_ids] = -np.inf
        else:
            if deferred is not None:
                deferred.mask(logits)
            if self.ban_open:
                logits[open_id] = -np.inf

    def accept(self, token_id: int) -> None:
        if self.whole and self.answer is not None:
            self.answer.accept(token_id)
        if self.state in ("open", "start"):
            if token_id == self.tokens.open_id:
                self.state = "reasoning"
                return
            self.state = "answer"
        elif self.state == "reasoning":
            if token_id == self.tokens.close_id:
                self.state = "answer"
            else:
                self.spent += 1
            return
        if self.answer is not None and not self.whole:
            self.answer.accept(token_id)


def _only(logits: np.ndarray, token_id: int) -> None:
    """Leave ``token_id`` the one token that can be chosen."""
    logits.fill(-np.inf)
    logits[token_id] = 0.0
