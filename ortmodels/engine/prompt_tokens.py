"""Chat prompts in which only the chat template makes control tokens.

A chat prompt is the template's own markup around text that comes from the caller: every
message, name, earlier tool call, tool result, tool description and schema. Tokenizing the
rendered prompt with special tokens parsed (as transformers' ``apply_chat_template`` does)
lets that text forge a turn: a user message holding ``<|im_end|>\\n<|im_start|>system\\n...``
becomes a system turn. So, for any template:

1. `PromptTokenizer.escape`: before rendering, each special token's text in the caller's
   strings (dict keys too) becomes an escape ``\\ue002<index>\\ue003``; a literal ``\\ue002``
   is escaped as well, so every escape is the caller's text exactly;
2. the template renders; every special token's text left in the prompt is its own markup;
3. `PromptTokenizer.encode_chat`: the prompt is tokenized as before (special tokens parsed).
   Without escapes in it those are the ids, the same ids as ever. Else each stretch between
   two of the template's special tokens that holds an escape is tokenized again as plain
   text, its escapes restored: the tokens the caller's text has as text.

A stretch is re-tokenized whole, not only its escapes, because the tokenizer cuts a prompt at
its special tokens and tokenizes the stretches between them one by one: the stretch is the
unit whose tokens would be the same had the caller's text held no special token's text.

Limits: an escape cut or rewritten by the template (sliced, url-encoded) stays plain text,
so it is never a control token; a template that transforms message text (``upper``) sees the
escape, not the token's text, in the rare text that holds one. Strings are escaped one by one:
a template that glues two caller strings with nothing between them could join two halves of
a special token (no known template does; ChatML and Llama's put markup around every field).
Only tokens marked ``special`` are escaped: other added tokens (Qwen's ``<tool_call>``) are
vocabulary, read in text as transformers reads them. On a tokenizer whose pre-tokenizer marks
only the start of the whole input (SentencePiece's ``prepend_scheme: first``), a re-tokenized
stretch gets that mark as if it began the input.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ChatInputError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Private-use characters that open and close an escape: ``\ue002<index>\ue003``.
ESCAPE_OPEN, ESCAPE_CLOSE = "\ue002", "\ue003"
_RESTORE = re.compile(ESCAPE_OPEN + "([0-9]{1,6})" + ESCAPE_CLOSE)

_T = TypeVar("_T")


class PromptTokenizer:
    """A chat model's three ways to tokenize: chat prompts (only the template's markup makes
    special tokens), text as text, and a raw completion prompt (the caller's whole prompt).

    Thread-safe: the tokenizer is shared and never changed; the plain-text copy is built once.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        added = tokenizer.get_added_tokens_decoder()
        specials = {token.content: token_id for token_id, token in added.items() if token.special and token.content}
        self._special_ids = frozenset(specials.values())
        #: What each escape index stands for: 0 is the escape character itself.
        self._table = [ESCAPE_OPEN, *sorted(specials, key=lambda t: (-len(t), t))]
        self._index = {text: i for i, text in enumerate(self._table)}
        # Longest first: at each position the longest special token wins, as in the tokenizer.
        self._pattern = re.compile("|".join(re.escape(text) for text in self._table))
        self._plain: Tokenizer | None = None
        self._lock = threading.Lock()

    # -- what the caller wrote -----------------------------------------------------------------

    def escape(self, value: _T) -> _T:
        """``value`` (strings, and dicts, lists and tuples of them, keys included) with every
        special token's text escaped; other values are kept as they are."""
        try:
            return self._escape(value)
        except RecursionError:
            raise ChatInputError(
                "The messages or tools are nested too deeply to render; flatten the structure."
            ) from None

    def _escape(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._pattern.sub(self._escape_match, value)
        if isinstance(value, dict):
            escaped = {}
            for key, item in value.items():
                escaped[self._escape(key)] = self._escape(item)
            return escaped
        if isinstance(value, (list, tuple)):
            items = []
            for item in value:
                items.append(self._escape(item))
            return items if isinstance(value, list) else tuple(items)
        return value

    def _escape_match(self, match: re.Match[str]) -> str:
        return f"{ESCAPE_OPEN}{self._index[match.group()]}{ESCAPE_CLOSE}"

    def _restore(self, text: str) -> str:
        def original(match: re.Match[str]) -> str:
            index = int(match.group(1))
            return self._table[index] if index < len(self._table) else match.group()

        return _RESTORE.sub(original, text)

    # -- the three encodings -------------------------------------------------------------------

    def encode_chat(self, rendered: str) -> list[int]:
        """Token ids of a prompt rendered from `escape`-d input: special tokens only where the
        template wrote them, the caller's text as text."""
        encoding = self._tokenizer.encode(rendered, add_special_tokens=False)
        if ESCAPE_OPEN not in rendered:
            return encoding.ids  # nothing the caller wrote looked like a special token
        ids: list[int] = []
        run: list[int] = []  # the ids of the stretch since the last special token
        start = 0
        for token, (begin, end) in zip(encoding.ids, encoding.offsets):
            if token in self._special_ids:  # the template's: escaped text holds no special token
                ids += self._stretch(rendered[start:begin], run)
                ids.append(token)
                run, start = [], end
            else:
                run.append(token)
        ids += self._stretch(rendered[start:], run)
        return ids

    def _stretch(self, text: str, ids: list[int]) -> list[int]:
        """The ids of the text between two template special tokens (``ids`` if it holds no escape)."""
        if ESCAPE_OPEN not in text:
            return ids
        plain = self._plain_tokenizer().encode(self._restore(text), add_special_tokens=False).ids
        if self._special_ids.intersection(plain):
            raise ChatInputError(
                "This model's tokenizer spells a special token from plain text found in the messages "
                f"({text[:60]!r}...); remove the special token's text from the messages."
            )
        return plain

    def encode_text(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of ``text`` as text: a special token's text is plain text; no BOS is added
        unless ``add_special`` asks for what the tokenizer's post-processor adds (the model's BOS)."""
        return self._plain_tokenizer().encode(text, add_special_tokens=add_special).ids

    def encode_raw(self, prompt: str) -> list[int]:
        """Token ids of a whole prompt the caller wrote (``/v1/completions``): special tokens
        parsed, and the tokenizer's BOS where the model wants one."""
        return self._tokenizer.encode(prompt, add_special_tokens=True).ids

    def _plain_tokenizer(self) -> Tokenizer:
        """A copy of the tokenizer that reads special tokens' text as text, made on first use (a
        flag toggled on the shared tokenizer would race with other threads' encodes)."""
        with self._lock:
            if self._plain is None:
                from tokenizers import Tokenizer

                plain = Tokenizer.from_str(self._tokenizer.to_str())
                plain.encode_special_tokens = True
                self._plain = plain
            return self._plain
