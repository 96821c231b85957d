"""Constrained decoding: a grammar masks each request's logits before its token is chosen.

Grammars come from a JSON schema, a regex or a Lark grammar and are compiled by
llguidance (reads ``tokenizer.json`` itself, compiles a schema in about a millisecond,
computes a mask in tens of microseconds at a 49k vocabulary). Each request gets its own
matcher, so a batch mixes free and constrained rows. The mask is written into buffers
allocated once per request, and applied with ``np.copyto(..., where=...)``: no
vocabulary-sized array is allocated per token. The end token is allowed only where the
grammar is complete; tokens past the tokenizer's vocabulary (a graph padded to a round
size) are never allowed.

A `TriggeredGrammar` leaves the model free until it writes a trigger token (a tool-call
tag such as ``<tool_call>``), then constrains what follows: llama.cpp's "lazy grammar".
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import GrammarError, MissingDependencyError
from .tokenizer import repaired_tokenizer_json

logger = logging.getLogger(__name__)

GrammarKind = Literal["json_schema", "json_object", "regex", "lark"]
_ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}
#: Whitespace between JSON tokens: none, one space, or a newline and an indent of at most 20,
#: as llama.cpp's JSON grammars allow. Unbounded whitespace lets a small model fill an
#: answer with blank lines until max_tokens instead of writing the next key.
JSON_OPTIONS: dict[str, Any] = {"whitespace_pattern": r"[ ]?|\n[ \t]{0,20}"}


@dataclass(frozen=True)
class Grammar:
    """What a constrained answer must match: ``kind`` and its source (a schema dict or text)."""

    kind: GrammarKind
    source: Any = None
    label: str = ""
    """What an error calls it (``parameters of tool 'f'``); by default its kind's grammar."""

    def names(self) -> tuple[str, str]:
        """(what an error says cannot be used, what it tells the caller to fix)."""
        return (self.label, self.label) if self.label else (f"{self.kind} grammar", self.kind)

    def to_llguidance(self) -> str:
        llg = _llguidance()
        if self.kind == "json_schema":
            return llg.LLMatcher.grammar_from_json_schema(self.source, defaults=JSON_OPTIONS)
        if self.kind == "json_object":
            return llg.LLMatcher.grammar_from_json_schema(_ANY_JSON_OBJECT, defaults=JSON_OPTIONS)
        if self.kind == "regex":
            return llg.LLMatcher.grammar_from_regex(self.source)
        return llg.LLMatcher.grammar_from_lark(self.source)


def close_objects(schema: Any) -> Any:
    """A copy of a JSON schema whose objects with listed ``properties`` allow no others, unless
    they say so (``additionalProperties``), as OpenAI's strict mode reads a schema.

    JSON Schema allows extra properties by default, and a small model given that freedom
    invents keys (``"gender"``, ``"family": {...}``) until ``max_tokens`` cuts it off.
    """
    return _close(schema, 0)


#: Deeper schemas are refused: no real schema nests this far, and recursion must stay bounded.
MAX_SCHEMA_DEPTH = 64


def _close(schema: Any, depth: int) -> Any:
    if depth > MAX_SCHEMA_DEPTH:
        raise GrammarError(f"The JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels; flatten it.")
    if isinstance(schema, list):
        return [_close(item, depth + 1) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _close(value, depth + 1) for key, value in schema.items()}
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise MissingDependencyError(
            "Constrained decoding needs llguidance: pip install 'llguidance>=1.9'."
        ) from exc
    return llguidance


class GrammarCompiler:
    """Compiles grammars for one tokenizer and vocabulary; thread-safe, built on first use."""

    def __init__(self, tokenizer_path: Path, vocab_size: int, eos_token_ids: list[int],
                 encode_text: Callable[[str], list[int]] | None = None) -> None:
        self.tokenizer_path = tokenizer_path
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self._encode_text = encode_text
        """Text to token ids with a special token's text as text (`PromptTokenizer.encode_text`);
        by default a copy of the tokenizer read with ``encode_special_tokens``."""
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _llg_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._build_tokenizer()
            return self._tokenizer

    def _build_tokenizer(self) -> Any:
        llg = _llguidance()
        data = json.loads(self.tokenizer_path.read_text(encoding="utf-8"))
        repaired = repaired_tokenizer_json(data)
        path, temporary = str(self.tokenizer_path), None
        if repaired is not None:  # a GGUF-converted decoder llguidance misreads: give it the plain one
            logger.info("Reading %s with a plain ByteLevel decoder for grammars", self.tokenizer_path)
            handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8")
            with handle:
                json.dump(repaired, handle)
            path = temporary = handle.name
        try:
            read = llg.LLTokenizer(path, n_vocab=self.vocab_size, eos_token=self.eos_token_ids or None)
        finally:
            if temporary is not None:
                os.unlink(temporary)
        return llg.LLTokenizer(_TextTokenizer(read, self._text_encoder(), self.eos_token_ids),
                               n_vocab=self.vocab_size, eos_token=self.eos_token_ids or None)

    def _text_encoder(self) -> Callable[[str], list[int]]:
        if self._encode_text is not None:
            return self._encode_text
        from tokenizers import Tokenizer

        from .prompt_tokens import PromptTokenizer

        return PromptTokenizer(Tokenizer.from_file(str(self.tokenizer_path))).encode_text

    def matcher(self, grammar: Grammar) -> Any:
        """A fresh matcher for ``grammar``, or a `GrammarError` naming what the compiler refused."""
        llg = _llguidance()
        what, fix = grammar.names()
        try:
            text = grammar.to_llguidance()
        except (ValueError, TypeError) as exc:
            raise GrammarError(f"The {what} is not valid: {_one_line(str(exc))}") from None
        matcher = llg.LLMatcher(self._llg_tokenizer(), text, log_level=0)
        if matcher.is_error():
            raise GrammarError(
                f"The {what} cannot be used for constrained decoding: "
                f"{_one_line(matcher.get_error())}. Remove or simplify that part of the {fix}."
            )
        first = matcher.compute_bitmask()  # a grammar no text can match fails here, not at the first token
        if matcher.is_error():
            logger.debug("The %s admits no output: %s", what, matcher.get_error())
            raise GrammarError(
                f"The {what} admits no output: no text can match it. "
                f"Fix the {fix} so that some text matches it."
            )
        if not _allows_more_than(first, self.eos_token_ids):  # only the end: the answer is always empty
            raise GrammarError(f"The {what} admits only the empty answer. Fix the {fix} so that some text matches it.")
        return matcher

    def check(self, grammar: Grammar) -> None:
        """Compile once to refuse a bad grammar before any token is generated."""
        self.matcher(grammar)

    def processor(self, grammar: Grammar, trigger_token: int | None = None) -> GrammarProcessor:
        """The per-request logits processor; with ``trigger_token`` the grammar starts after it."""
        return GrammarProcessor(self, grammar, trigger_token)


def _allows_more_than(bitmask: bytes, tokens: list[int]) -> bool:
    """Whether a token mask (one bit per token, little-endian) allows any token but ``tokens``."""
    rest = np.frombuffer(bitmask, dtype=np.uint8).copy()
    for token in tokens:
        if token >> 3 < rest.size:
            rest[token >> 3] &= ~np.uint8(1 << (token & 7))
    return bool(rest.any())


class _TextTokenizer:
    """llguidance's tokenizer as a `TokenizerWrapper`: the same tokens (their bytes, which are
    special), but text tokenized with a special token's text as text.

    llguidance tokenizes the text a grammar forces (a literal, an enum value, a tool's name) to
    choose its tokens; read from ``tokenizer.json`` it would use the tokenizer's own encode, which
    turns ``<|im_end|>`` in that text into the control token, so ``{"enum": ["<|im_end|>"]}``
    forced the end of the answer. A special token stays reachable where a grammar names it as one
    (Lark's ``<tool_call>``)."""

    def __init__(self, read: Any, encode_text: Callable[[str], list[int]], eos_token_ids: list[int]) -> None:
        size = read.vocab_size
        self.tokens = [read.decode_bytes([token]) for token in range(size)]
        self.special_token_ids = [token for token in range(size) if read.is_special_token(token)]
        self.eos_token_id = eos_token_ids[0] if eos_token_ids else read.eos_token
        self.bos_token_id = None
        self.is_tokenizer_wrapper = True
        self._encode_text = encode_text

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._encode_text(text)


class GrammarProcessor:
    """One request's grammar state: `mask` before each choice, `accept` after it."""

    def __init__(self, compiler: GrammarCompiler, grammar: Grammar, trigger_token: int | None = None) -> None:
        self.compiler, self.grammar = compiler, grammar
        self.trigger_token = trigger_token
        if trigger_token is not None:
            compiler.check(grammar)  # refused now, not on the scheduler thread when the trigger comes
        self._matcher: Any = None if trigger_token is not None else compiler.matcher(grammar)
        words = (compiler.vocab_size + 31) // 32
        self._words = np.zeros(words, dtype=np.int32)
        self._shifts = np.arange(32, dtype=np.int32)
        self._bits = np.empty((words, 32), dtype=np.int32)
        self._banned = np.empty(words * 32, dtype=bool)
        self.triggered = trigger_token is None

    @property
    def active(self) -> bool:
        """Whether the grammar constrains the next token (a triggered one waits for its trigger)."""
        return self._matcher is not None

    @property
    def complete(self) -> bool:
        """The grammar's text is whole (it would accept the end here, or has stopped)."""
        return self._matcher is not None and (self._matcher.is_accepting() or self._matcher.is_stopped())

    def mask(self, logits: np.ndarray) -> None:
        """Set every token the grammar does not allow next to -inf, in place."""
        if self._matcher is None:
            return
        matcher = self._matcher
        matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        if matcher.is_error():
            raise _failed(matcher, self.grammar)
        np.right_shift(self._words[:, None], self._shifts[None, :], out=self._bits)
        np.bitwise_and(self._bits, 1, out=self._bits)
        np.equal(self._bits.reshape(-1), 0, out=self._banned)
        width = min(logits.shape[-1], self._banned.size)
        np.copyto(logits[:width], -np.inf, where=self._banned[:width])
        if logits.shape[-1] > width:
            logits[width:] = -np.inf

    def accept(self, token_id: int) -> None:
        if self._matcher is None:
            if token_id == self.trigger_token:
                self._matcher = self.compiler.matcher(self.grammar)
                self.triggered = True
            return
        if not self._matcher.consume_token(token_id) and not self._matcher.is_stopped():
            raise _failed(self._matcher, self.grammar)


def _first_line(text: str) -> str:
    """The first line of llguidance's error: the rest is a state dump, for the log only."""
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def _failed(matcher: Any, grammar: Grammar) -> GrammarError:
    """The one-line error for a matcher that failed mid-answer; its state dump goes to the log."""
    logger.debug("Constrained decoding failed: %s", matcher.get_error())
    return GrammarError(
        f"Constrained decoding failed: the {grammar.kind} grammar allows no text after what was "
        f"generated so far ({_first_line(matcher.get_error())}). Fix the {grammar.kind} so that every "
        "text it starts can be completed."
    )


def _one_line(text: str) -> str:
    """llguidance's compile error on one line: its lines joined, the source excerpt and the
    caret under it left out (an HTTP client shows one line)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    kept = [line for line in lines if line and not _EXCERPT.match(line)]
    return " ".join(kept) or "unknown error"


#: A line of llguidance's error that quotes the grammar (``1 | start: /(yes/``) or points into it (``^``).
_EXCERPT = re.compile(r"^(\d+ \|.*|\^+)$")


def lark_from_gbnf(text: str) -> str:
    """A llama.cpp GBNF grammar (``root ::= "yes" | "no"``) as the Lark grammar llguidance
    compiles (its own converter: one grammar engine); a Lark grammar is returned as it is."""
    _llguidance()  # a broken install: the error that names the package
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        return str(any_to_lark(text))
    except Exception as exc:  # noqa: BLE001 - the converter raises its own and plain errors alike
        raise GrammarError(
            f"The GBNF grammar is not valid: {_one_line(str(exc))}. Fix it (llama.cpp's grammars/README.md "
            "has the syntax), or give it as Lark."
        ) from None
